using Converge.Faults;
using Converge.Sagas;
using Converge.Storage;

namespace Converge.Tests.Sagas;

/// <summary>A refusal at each step: what is compensated, in which order, and what the participants did.</summary>
public sealed class FailureTests
{
    [Fact]
    public async Task Refused_reserve_compensates_with_nothing_to_undo()
    {
        var participants = new Participants().Refuse("o1", "reserve");
        await using var host = await ShopSaga.StartAsync(participants);

        await host.Sagas.StartAsync("order", "tx-reserve", new OrderData { Order = "o1", Amount = 10 });
        var instance = await host.WaitForSagaAsync("tx-reserve");

        Assert.Equal(SagaState.Compensated, instance.State);
        Assert.Equal(("reserve", "reserve refused"), (instance.FailedStep, instance.Failure));
        Assert.Null(instance.Awaiting);
        Assert.Empty(participants.EffectsOf("o1"));
        Assert.Equal(
            ["started", "command-sent:reserve", "reply-received:reserve", "step-failed:reserve", "state-changed:reserve", "state-changed"],
            await ShopSaga.KindsAsync(host, "tx-reserve"));
        Assert.DoesNotContain(await ShopSaga.LogAsync(host, "tx-reserve"), e => e.Kind == SagaLogKinds.CompensationSent);
        Assert.Equal(["compensated"], await ShopSaga.OutcomesAsync(host, "tx-reserve"));
    }

    [Fact]
    public async Task A_compensation_refused_with_the_steps_own_failure_type_is_sent_again_until_confirmed()
    {
        var participants = new Participants { RefuseCompensationsWithStepFailureType = true }.Refuse("o9", "charge").Refuse("o9", "release", times: 2);
        await using var host = await ShopSaga.StartAsync(participants);

        await host.Sagas.StartAsync("order", "tx-own-refusal", new OrderData { Order = "o9", Amount = 10 });
        var instance = await host.WaitForSagaAsync("tx-own-refusal");

        Assert.Equal(SagaState.Compensated, instance.State);
        Assert.Equal(["reserve", "release"], participants.EffectsOf("o9"));
        var log = await ShopSaga.LogAsync(host, "tx-own-refusal");
        Assert.Equal(2, log.Count(e => e.Kind == SagaLogKinds.StepFailed && e.Detail!.StartsWith("compensation refused: release refused", StringComparison.Ordinal)));
        Assert.Equal(3, log.Count(e => e.Kind == SagaLogKinds.CompensationSent));
        Assert.DoesNotContain(log, e => e.Kind == SagaLogKinds.ReplyIgnored);
    }

    [Fact]
    public async Task Refused_charge_releases_the_reservation_only()
    {
        var participants = new Participants().Refuse("o2", "charge");
        await using var host = await ShopSaga.StartAsync(participants);

        await host.Sagas.StartAsync("order", "tx-charge", new OrderData { Order = "o2", Amount = 10 });
        var instance = await host.WaitForSagaAsync("tx-charge");

        Assert.Equal(SagaState.Compensated, instance.State);
        Assert.Equal(("charge", "charge refused"), (instance.FailedStep, instance.Failure));
        Assert.Equal(-1, instance.StepIndex);
        Assert.Equal(["reserve", "release"], participants.EffectsOf("o2"));
        Assert.Equal(
            ["started", "command-sent:reserve", "reply-received:reserve", "command-sent:charge", "reply-received:charge",
             "step-failed:charge", "state-changed:charge", "compensation-sent:reserve", "reply-received:reserve", "state-changed"],
            await ShopSaga.KindsAsync(host, "tx-charge"));
        Assert.Null(host.Sagas.ReadData<OrderData>(instance).PaymentId);
        Assert.Equal(["compensated"], await ShopSaga.OutcomesAsync(host, "tx-charge"));
    }

    [Fact]
    public async Task Refused_pivot_refunds_then_releases_in_reverse_order()
    {
        var participants = new Participants().Refuse("o3", "ship");
        await using var host = await ShopSaga.StartAsync(participants);

        await host.Sagas.StartAsync("order", "tx-ship", new OrderData { Order = "o3", Amount = 10 });
        var instance = await host.WaitForSagaAsync("tx-ship");

        Assert.Equal(SagaState.Compensated, instance.State);
        Assert.Equal(("ship", "ship refused"), (instance.FailedStep, instance.Failure));
        Assert.Equal(["reserve", "charge", "refund", "release"], participants.EffectsOf("o3"));
        Assert.Equal(
            ["started", "command-sent:reserve", "reply-received:reserve", "command-sent:charge", "reply-received:charge",
             "command-sent:ship", "reply-received:ship", "step-failed:ship", "state-changed:ship",
             "compensation-sent:charge", "reply-received:charge", "compensation-sent:reserve", "reply-received:reserve", "state-changed"],
            await ShopSaga.KindsAsync(host, "tx-ship"));
        var log = await ShopSaga.LogAsync(host, "tx-ship");
        Assert.Equal(["test.refund@1", "test.release@1"], log.Where(e => e.Kind == SagaLogKinds.CompensationSent).Select(e => e.MessageType));
        Assert.Equal("running -> compensating", log.Single(e => e.Kind == SagaLogKinds.StateChanged && e.Step == "ship").Detail);
        Assert.Equal("compensating -> compensated", log[^1].Detail);
        Assert.Equal(log.Select(e => e.Id).Order(), log.Select(e => e.Id));
        Assert.Equal("pay-o3", host.Sagas.ReadData<OrderData>(instance).PaymentId);
    }

    [Fact]
    public async Task Refused_notify_after_the_pivot_is_retried_until_it_succeeds_and_never_compensated()
    {
        var participants = new Participants().Refuse("o4", "notify", times: 3);
        await using var host = await ShopSaga.StartAsync(participants);

        await host.Sagas.StartAsync("order", "tx-notify", new OrderData { Order = "o4", Amount = 10 });
        var instance = await host.WaitForSagaAsync("tx-notify");

        Assert.Equal(SagaState.Completed, instance.State);
        Assert.Null(instance.Failure);
        Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("o4"));
        var log = await ShopSaga.LogAsync(host, "tx-notify");
        var notify = log.Where(e => e.Step == "notify").ToList();
        Assert.Equal(4, notify.Count(e => e.Kind == SagaLogKinds.CommandSent));
        Assert.Equal([null, "attempt 2", "attempt 3", "attempt 4"], notify.Where(e => e.Kind == SagaLogKinds.CommandSent).Select(e => e.Detail));
        Assert.Equal(3, notify.Count(e => e.Kind == SagaLogKinds.StepFailed));
        Assert.All(notify.Where(e => e.Kind == SagaLogKinds.StepFailed), e => Assert.Equal("notify refused", e.Detail));
        Assert.DoesNotContain(log, e => e.Kind == SagaLogKinds.CompensationSent);
        Assert.DoesNotContain(log, e => e.Detail?.Contains("compensating", StringComparison.Ordinal) == true);
        Assert.Equal("running -> completed", log[^1].Detail);
        Assert.Equal(["completed"], await ShopSaga.OutcomesAsync(host, "tx-notify"));
    }

    [Fact]
    public async Task Notify_failed_by_a_fault_rule_twice_is_sent_the_third_time()
    {
        var participants = new Participants();
        await using var host = await ShopSaga.StartAsync(participants, o =>
        {
            o.Faults.Enabled = true;
            o.Faults.Rules.Add(new FaultRule { Step = "notify", Action = FaultAction.Fail, Error = "mail server down", Times = 2 });
        });

        await host.Sagas.StartAsync("order", "tx-notify-fault", new OrderData { Order = "o5", Amount = 10 });
        var instance = await host.WaitForSagaAsync("tx-notify-fault");

        Assert.Equal(SagaState.Completed, instance.State);
        Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("o5"));
        var notify = (await ShopSaga.LogAsync(host, "tx-notify-fault")).Where(e => e.Step == "notify").ToList();
        Assert.Equal(
            ["fault-injected", "reply-received", "step-failed", "fault-injected", "reply-received", "step-failed", "command-sent", "reply-received"],
            notify.Select(e => e.Kind));
        Assert.All(notify.Where(e => e.Kind == SagaLogKinds.StepFailed), e => Assert.Equal("mail server down", e.Detail));
        Assert.Equal("attempt 3", notify.Single(e => e.Kind == SagaLogKinds.CommandSent).Detail);
    }
}
