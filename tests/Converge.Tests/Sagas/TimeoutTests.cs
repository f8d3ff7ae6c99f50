using Converge.Sagas;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests.Sagas;

/// <summary>Step timeouts, fired by moving a manual clock past them: what each kind of step does when its reply never comes.</summary>
public sealed class TimeoutTests
{
    static readonly TimeSpan PastTimeout = OrderSteps.StepTimeout + TimeSpan.FromSeconds(1);

    /// <summary>Past the first re-send's backoff (at most SagaRetry.InitialDelay, default 1 s).</summary>
    static readonly TimeSpan PastBackoff = TimeSpan.FromSeconds(1);

    static async Task<(ConvergeTestHost Host, FakeTimeProvider Time)> StartAsync(Participants participants)
    {
        var time = new FakeTimeProvider();
        var host = await ShopSaga.StartAsync(participants, o => o.TimeProvider = time);
        return (host, time);
    }

    /// <summary>Waits until the command a step sent has been handled by its (silent) participant.</summary>
    static async Task WaitForSilentStepAsync(ConvergeTestHost host, string tx, string step, int nth = 1, string kind = SagaLogKinds.CommandSent)
    {
        await ShopSaga.WaitForLogAsync(host, tx, e => e.Kind == kind && e.Step == step, $"{kind} {step}");
        var command = await ShopSaga.CommandIdAsync(host, tx, step, nth, kind);
        await ShopSaga.WaitForFlowHandledAsync(host, tx, command);
    }

    static async Task<long> ScheduledOnSagaQueueAsync(ConvergeTestHost host) =>
        (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.SingleOrDefault(q => q.Queue == ShopSaga.Queue)?.Scheduled ?? 0;

    [Fact]
    public async Task Silent_reserve_times_out_and_is_compensated_itself()
    {
        var participants = new Participants().Silence("t1", "reserve", times: 1);
        var (host, time) = await StartAsync(participants);
        await using var _ = host;

        await host.Sagas.StartAsync("order", "tx-t1", new OrderData { Order = "t1", Amount = 5 });
        await WaitForSilentStepAsync(host, "tx-t1", "reserve");
        var reserve = await ShopSaga.CommandIdAsync(host, "tx-t1", "reserve");
        ShopSaga.Advance(host, time, OrderSteps.StepTimeout - TimeSpan.FromSeconds(1));
        var before = await host.Sagas.GetAsync("tx-t1");
        var scheduledBefore = await ScheduledOnSagaQueueAsync(host);
        ShopSaga.Advance(host, time, TimeSpan.FromSeconds(2));
        var instance = await host.WaitForSagaAsync("tx-t1");

        Assert.Equal((SagaState.Running, 0, reserve), (before!.State, before.StepIndex, before.Awaiting));
        Assert.Equal(1, scheduledBefore);
        Assert.Equal(SagaState.Compensated, instance.State);
        Assert.Equal(("reserve", "timed out"), (instance.FailedStep, instance.Failure));
        Assert.Equal(["reserve", "release"], participants.EffectsOf("t1"));
        Assert.Equal(
            ["started", "command-sent:reserve", "timeout-fired:reserve", "step-failed:reserve", "state-changed:reserve",
             "compensation-sent:reserve", "reply-received:reserve", "state-changed"],
            await ShopSaga.KindsAsync(host, "tx-t1"));
        var fired = (await ShopSaga.LogAsync(host, "tx-t1")).Single(e => e.Kind == SagaLogKinds.TimeoutFired);
        Assert.Equal($"no reply to {reserve:N}", fired.Detail);
        Assert.Equal(SagaStepTimeout.TypeName + "@1", fired.MessageType);
    }

    [Fact]
    public async Task Silent_charge_times_out_and_both_charge_and_reserve_are_compensated()
    {
        var participants = new Participants().Silence("t2", "charge", times: 1);
        var (host, time) = await StartAsync(participants);
        await using var _ = host;

        await host.Sagas.StartAsync("order", "tx-t2", new OrderData { Order = "t2", Amount = 5 });
        await WaitForSilentStepAsync(host, "tx-t2", "charge");
        ShopSaga.Advance(host, time, PastTimeout);
        var instance = await host.WaitForSagaAsync("tx-t2");

        Assert.Equal(SagaState.Compensated, instance.State);
        Assert.Equal(("charge", "timed out"), (instance.FailedStep, instance.Failure));
        Assert.Equal(["reserve", "charge", "refund", "release"], participants.EffectsOf("t2"));
        Assert.Equal(
            ["started", "command-sent:reserve", "reply-received:reserve", "command-sent:charge",
             "timeout-fired:charge", "step-failed:charge", "state-changed:charge",
             "compensation-sent:charge", "reply-received:charge", "compensation-sent:reserve", "reply-received:reserve", "state-changed"],
            await ShopSaga.KindsAsync(host, "tx-t2"));
    }

    [Fact]
    public async Task Silent_pivot_times_out_and_is_sent_again_never_compensated()
    {
        var participants = new Participants().Silence("t3", "ship", times: 1);
        var (host, time) = await StartAsync(participants);
        await using var _ = host;

        await host.Sagas.StartAsync("order", "tx-t3", new OrderData { Order = "t3", Amount = 5 });
        await WaitForSilentStepAsync(host, "tx-t3", "ship");
        ShopSaga.Advance(host, time, PastTimeout);
        await ShopSaga.WaitForLogAsync(host, "tx-t3", e => e.Kind == SagaLogKinds.TimeoutFired, "the ship timeout");
        ShopSaga.Advance(host, time, PastBackoff);
        var instance = await host.WaitForSagaAsync("tx-t3");

        Assert.Equal(SagaState.Completed, instance.State);
        Assert.Equal(["reserve", "charge", "ship", "ship", "notify"], participants.EffectsOf("t3"));
        Assert.Equal(
            ["started", "command-sent:reserve", "reply-received:reserve", "command-sent:charge", "reply-received:charge",
             "command-sent:ship", "timeout-fired:ship", "step-failed:ship", "command-sent:ship", "reply-received:ship",
             "command-sent:notify", "reply-received:notify", "state-changed"],
            await ShopSaga.KindsAsync(host, "tx-t3"));
        var log = await ShopSaga.LogAsync(host, "tx-t3");
        Assert.Equal([null, "attempt 2"], log.Where(e => e.Kind == SagaLogKinds.CommandSent && e.Step == "ship").Select(e => e.Detail));
        Assert.Equal("track-t3", host.Sagas.ReadData<OrderData>(instance).Tracking);
    }

    [Fact]
    public async Task Silent_compensation_times_out_and_is_sent_again()
    {
        var participants = new Participants().Refuse("t4", "charge").Silence("t4", "release", times: 1);
        var (host, time) = await StartAsync(participants);
        await using var _ = host;

        await host.Sagas.StartAsync("order", "tx-t4", new OrderData { Order = "t4", Amount = 5 });
        await WaitForSilentStepAsync(host, "tx-t4", "reserve", kind: SagaLogKinds.CompensationSent);
        var compensating = await host.Sagas.GetAsync("tx-t4");
        ShopSaga.Advance(host, time, PastTimeout);
        await ShopSaga.WaitForLogAsync(host, "tx-t4", e => e.Kind == SagaLogKinds.TimeoutFired, "the release timeout");
        ShopSaga.Advance(host, time, PastBackoff);
        var instance = await host.WaitForSagaAsync("tx-t4");

        Assert.Equal(SagaState.Compensating, compensating!.State);
        Assert.Equal(SagaState.Compensated, instance.State);
        Assert.Equal(["reserve", "release", "release"], participants.EffectsOf("t4"));
        Assert.Equal(
            ["started", "command-sent:reserve", "reply-received:reserve", "command-sent:charge", "reply-received:charge",
             "step-failed:charge", "state-changed:charge", "compensation-sent:reserve",
             "timeout-fired:reserve", "compensation-sent:reserve", "reply-received:reserve", "state-changed"],
            await ShopSaga.KindsAsync(host, "tx-t4"));
        var log = await ShopSaga.LogAsync(host, "tx-t4");
        Assert.Equal([null, "attempt 2"], log.Where(e => e.Kind == SagaLogKinds.CompensationSent).Select(e => e.Detail));
    }

    [Fact]
    public async Task Silent_retriable_step_times_out_and_is_sent_again_after_its_retry_delay()
    {
        var participants = new Participants().Silence("t5", "notify", times: 1);
        var (host, time) = await StartAsync(participants);
        await using var _ = host;

        await host.Sagas.StartAsync("order", "tx-t5", new OrderData { Order = "t5", Amount = 5 });
        await WaitForSilentStepAsync(host, "tx-t5", "notify");
        ShopSaga.Advance(host, time, PastTimeout);
        await ShopSaga.WaitForLogAsync(host, "tx-t5", e => e.Kind == SagaLogKinds.CommandSent && e.Detail == "attempt 2", "the second notify");
        var waiting = await host.Sagas.GetAsync("tx-t5");
        ShopSaga.Advance(host, time, TimeSpan.FromMilliseconds(10));
        var instance = await host.WaitForSagaAsync("tx-t5");

        Assert.Equal(SagaState.Running, waiting!.State);
        Assert.Equal(SagaState.Completed, instance.State);
        Assert.Equal(["reserve", "charge", "ship", "notify", "notify"], participants.EffectsOf("t5"));
        Assert.DoesNotContain(await ShopSaga.LogAsync(host, "tx-t5"), e => e.Kind == SagaLogKinds.CompensationSent);
    }

    /// <summary>A reply deletes its step's timeout: a finished saga leaves no scheduled timeouts on its queue.</summary>
    [Fact]
    public async Task Timeouts_of_answered_steps_are_deleted_with_the_reply()
    {
        var participants = new Participants();
        var (host, time) = await StartAsync(participants);
        await using var _ = host;

        await host.Sagas.StartAsync("order", "tx-t6", new OrderData { Order = "t6", Amount = 5 });
        var completed = await host.WaitForSagaAsync("tx-t6");
        var scheduled = await ScheduledOnSagaQueueAsync(host);
        ShopSaga.Advance(host, time, PastTimeout);
        await ShopSaga.WaitUntilAsync(async () => (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.All(q => q.Ready + q.Scheduled + q.InFlight == 0), "the stale timeouts to be handled");
        var after = await host.Sagas.GetAsync("tx-t6");

        Assert.Equal(0, scheduled);
        Assert.Equal(completed.ConcurrencyVersion, after!.ConcurrencyVersion);
        Assert.DoesNotContain(await ShopSaga.LogAsync(host, "tx-t6"), e => e.Kind == SagaLogKinds.TimeoutFired);
    }
}
