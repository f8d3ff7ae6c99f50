using Converge.Faults;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests.Sagas;

/// <summary>Fault rules acting on running sagas: failing, delaying and dropping, and only where they match.</summary>
public sealed class FaultPlanTests
{
    static Action<Converge.Runtime.ConvergeOptions> Faults(params FaultRule[] rules) => o =>
    {
        o.Faults.Enabled = true;
        foreach (var rule in rules)
        {
            o.Faults.Rules.Add(rule);
        }
    };

    [Fact]
    public async Task A_fail_rule_fails_the_step_without_sending_its_command()
    {
        var participants = new Participants();
        await using var host = await ShopSaga.StartAsync(participants, Faults(new FaultRule { Step = "charge", Action = FaultAction.Fail, Error = "card declined" }));

        await host.Sagas.StartAsync("order", "tx-f1", new OrderData { Order = "f1", Amount = 2 });
        var instance = await host.WaitForSagaAsync("tx-f1");

        Assert.Equal(SagaState.Compensated, instance.State);
        Assert.Equal(("charge", "card declined"), (instance.FailedStep, instance.Failure));
        Assert.Equal(["reserve", "release"], participants.EffectsOf("f1"));
        Assert.Equal(
            ["started", "command-sent:reserve", "reply-received:reserve", "fault-injected:charge", "reply-received:charge", "step-failed:charge",
             "state-changed:charge", "compensation-sent:reserve", "reply-received:reserve", "state-changed"],
            await ShopSaga.KindsAsync(host, "tx-f1"));
        var log = await ShopSaga.LogAsync(host, "tx-f1");
        Assert.Equal("fail: card declined", log.Single(e => e.Kind == SagaLogKinds.FaultInjected).Detail);
        Assert.Equal("card declined", log.Single(e => e.Kind == SagaLogKinds.StepFailed).Detail);
        Assert.DoesNotContain(await host.Store.Queries().ReadFlowAsync("tx-f1", CancellationToken.None), i => i.MessageType == "test.charge@1");
    }

    [Fact]
    public async Task A_delay_rule_delivers_the_command_late_and_its_timeout_waits_for_it()
    {
        var time = new FakeTimeProvider();
        var participants = new Participants();
        await using var host = await ShopSaga.StartAsync(participants, o =>
        {
            o.TimeProvider = time;
            Faults(new FaultRule { Step = "ship", Action = FaultAction.Delay, Delay = TimeSpan.FromMinutes(1) })(o);
        });

        await host.Sagas.StartAsync("order", "tx-f2", new OrderData { Order = "f2", Amount = 2 });
        var log = await ShopSaga.WaitForLogAsync(host, "tx-f2", e => e.Kind == SagaLogKinds.CommandSent && e.Step == "ship", "the delayed ship command");
        var ship = await ShopSaga.CommandIdAsync(host, "tx-f2", "ship");
        var shipping = (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.Single(q => q.Queue == "shipping");
        var pending = (await host.Store.Queries().ReadFlowAsync("tx-f2", CancellationToken.None)).Single(i => i.MessageId == ship);
        ShopSaga.Advance(host, time, TimeSpan.FromSeconds(61));
        var instance = await host.WaitForSagaAsync("tx-f2");

        Assert.Equal("delay: 00:01:00", log.Single(e => e.Kind == SagaLogKinds.FaultInjected).Detail);
        Assert.Equal((0, 1L), (shipping.Ready, shipping.Scheduled));
        Assert.Equal(("queue:shipping", "pending"), (pending.Where, pending.Status));
        Assert.Equal(SagaState.Completed, instance.State);
        Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("f2"));
        Assert.DoesNotContain(await ShopSaga.LogAsync(host, "tx-f2"), e => e.Kind == SagaLogKinds.TimeoutFired);
    }

    [Fact]
    public async Task A_drop_reply_rule_loses_the_reply_so_the_step_times_out_and_is_sent_again()
    {
        var time = new FakeTimeProvider();
        var participants = new Participants();
        await using var host = await ShopSaga.StartAsync(participants, o =>
        {
            o.TimeProvider = time;
            Faults(new FaultRule { Step = "ship", Action = FaultAction.DropReply, Times = 1 })(o);
        });

        await host.Sagas.StartAsync("order", "tx-f3", new OrderData { Order = "f3", Amount = 2 });
        var log = await ShopSaga.WaitForLogAsync(host, "tx-f3", e => e.Kind == SagaLogKinds.FaultInjected, "the dropped reply");
        ShopSaga.Advance(host, time, OrderSteps.StepTimeout + TimeSpan.FromSeconds(1));
        await ShopSaga.WaitForLogAsync(host, "tx-f3", e => e.Kind == SagaLogKinds.TimeoutFired, "the ship timeout");
        ShopSaga.Advance(host, time, TimeSpan.FromSeconds(1)); // past the re-send's backoff
        var instance = await host.WaitForSagaAsync("tx-f3");

        var dropped = log.Single(e => e.Kind == SagaLogKinds.FaultInjected);
        Assert.Equal(("ship", "reply dropped", await ShopSaga.CommandIdAsync(host, "tx-f3", "ship")), (dropped.Step, dropped.Detail, dropped.MessageId!.Value));
        Assert.Equal(SagaState.Completed, instance.State);
        Assert.Equal(["reserve", "charge", "ship", "ship", "notify"], participants.EffectsOf("f3"));
        Assert.Equal(
            ["started", "command-sent:reserve", "reply-received:reserve", "command-sent:charge", "reply-received:charge",
             "command-sent:ship", "fault-injected:ship", "timeout-fired:ship", "step-failed:ship", "command-sent:ship", "reply-received:ship",
             "command-sent:notify", "reply-received:notify", "state-changed"],
            await ShopSaga.KindsAsync(host, "tx-f3"));
    }

    [Fact]
    public async Task A_canary_rule_affects_only_the_transactions_it_names()
    {
        var participants = new Participants();
        await using var host = await ShopSaga.StartAsync(participants, Faults(new FaultRule { TransactionId = "test-fail-ship-*", Step = "ship", Action = FaultAction.Fail }));
        string[] ids = ["test-fail-ship-1", "order-2", "test-fail-shipping-3", "test-fail-charge-4"];

        for (var i = 0; i < ids.Length; i++)
        {
            await host.Sagas.StartAsync("order", ids[i], new OrderData { Order = "canary-" + i, Amount = 2 });
        }

        var instances = new List<SagaInstance>();
        foreach (var id in ids)
        {
            instances.Add(await host.WaitForSagaAsync(id));
        }

        Assert.Equal(
            [SagaState.Compensated, SagaState.Completed, SagaState.Completed, SagaState.Completed],
            instances.Select(i => i.State));
        Assert.Equal(("ship", "injected fault"), (instances[0].FailedStep, instances[0].Failure));
        Assert.Equal(["reserve", "charge", "refund", "release"], participants.EffectsOf("canary-0"));
        Assert.Contains(await ShopSaga.LogAsync(host, ids[0]), e => e.Kind == SagaLogKinds.FaultInjected && e.Step == "ship");
        foreach (var (id, i) in ids.Skip(1).Select((id, i) => (id, i + 1)))
        {
            Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("canary-" + i));
            Assert.DoesNotContain(await ShopSaga.LogAsync(host, id), e => e.Kind == SagaLogKinds.FaultInjected);
        }
    }
}
