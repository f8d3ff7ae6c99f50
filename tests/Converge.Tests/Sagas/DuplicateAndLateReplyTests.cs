using Converge.Faults;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests.Sagas;

/// <summary>Replies that arrive twice, late, for a command never sent, or of the wrong type: logged, and nothing else changes.</summary>
public sealed class DuplicateAndLateReplyTests
{
    static async Task AssertUnchangedAsync(ConvergeTestHost host, SagaInstance before)
    {
        var after = await host.Sagas.GetAsync(before.TransactionId);
        Assert.NotNull(after);
        Assert.Equal(
            (before.State, before.StepIndex, before.Awaiting, before.StepAttempt, before.ConcurrencyVersion, before.Failure),
            (after.State, after.StepIndex, after.Awaiting, after.StepAttempt, after.ConcurrencyVersion, after.Failure));
        Assert.Equal(before.Data.ToArray(), after.Data.ToArray());
    }

    [Fact]
    public async Task A_duplicated_reply_is_logged_as_a_duplicate_and_applied_once()
    {
        var participants = new Participants();
        await using var host = await ShopSaga.StartAsync(participants, o =>
        {
            o.Faults.Enabled = true;
            o.Faults.Rules.Add(new FaultRule { Step = "charge", Action = FaultAction.DuplicateReply });
        });

        await host.Sagas.StartAsync("order", "tx-d1", new OrderData { Order = "d1", Amount = 3 });
        var instance = await host.WaitForSagaAsync("tx-d1");
        var log = await ShopSaga.WaitForLogAsync(host, "tx-d1", e => e.Kind == SagaLogKinds.ReplyIgnored, "the ignored copy");

        Assert.Equal(SagaState.Completed, instance.State);
        Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("d1"));
        var charge = await ShopSaga.CommandIdAsync(host, "tx-d1", "charge");
        var duplicated = log.Single(e => e.Kind == SagaLogKinds.FaultInjected);
        Assert.Equal("charge", duplicated.Step);
        var ignored = log.Single(e => e.Kind == SagaLogKinds.ReplyIgnored);
        Assert.Equal(duplicated.MessageId, ignored.MessageId);
        Assert.Equal($"duplicate: command {charge:N} was already answered", ignored.Detail);
        Assert.Single(log, e => e.Kind == SagaLogKinds.ReplyReceived && e.Step == "charge");
        Assert.Equal("pay-d1", host.Sagas.ReadData<OrderData>(instance).PaymentId);
        Assert.Equal(["completed"], await ShopSaga.OutcomesAsync(host, "tx-d1"));
    }

    [Fact]
    public async Task A_duplicated_compensation_refusal_is_logged_as_a_duplicate()
    {
        var participants = new Participants().Refuse("d2", "charge").Refuse("d2", "release", times: 1);
        await using var host = await ShopSaga.StartAsync(participants, o =>
        {
            o.Retry.InitialDelay = TimeSpan.FromMilliseconds(5);
            o.Faults.Enabled = true;
            o.Faults.Rules.Add(new FaultRule { Step = "reserve", Action = FaultAction.DuplicateReply });
        });

        await host.Sagas.StartAsync("order", "tx-d2", new OrderData { Order = "d2", Amount = 3 });
        await host.WaitForSagaAsync("tx-d2");
        await ShopSaga.WaitUntilAsync(async () => (await ShopSaga.LogAsync(host, "tx-d2")).Count(e => e.Kind == SagaLogKinds.ReplyIgnored) == 3, "the three copies to be ignored");
        var log = await ShopSaga.LogAsync(host, "tx-d2");

        Assert.Equal(["reserve", "release"], participants.EffectsOf("d2"));
        var ignored = log.Where(e => e.Kind == SagaLogKinds.ReplyIgnored).ToList();
        Assert.All(ignored, e => Assert.StartsWith("duplicate:", e.Detail, StringComparison.Ordinal));
        Assert.Single(log, e => e.Kind == SagaLogKinds.StepFailed && e.Detail!.StartsWith("compensation refused: release refused", StringComparison.Ordinal));
        Assert.Equal(2, log.Count(e => e.Kind == SagaLogKinds.CompensationSent));
        Assert.Equal(["compensated"], await ShopSaga.OutcomesAsync(host, "tx-d2"));
    }

    [Fact]
    public async Task A_redelivered_reply_with_the_same_message_id_changes_nothing_and_is_logged_as_a_duplicate()
    {
        // Saga queues keep no inbox: the saga itself recognises a reply it already applied.
        var participants = new Participants().Silence("d3", "reserve", times: 1);
        await using var host = await ShopSaga.StartAsync(participants);
        await host.Sagas.StartAsync("order", "tx-d3", new OrderData { Order = "d3", Amount = 3 });
        await ShopSaga.WaitForLogAsync(host, "tx-d3", e => e.Kind == SagaLogKinds.CommandSent, "the reserve command");
        var reserve = await ShopSaga.CommandIdAsync(host, "tx-d3", "reserve");
        await ShopSaga.WaitForFlowHandledAsync(host, "tx-d3", reserve);
        var reply = Guid.CreateVersion7();

        await ShopSaga.DeliverReplyAsync(host, "tx-d3", "reserve", reserve, new Reserved("d3"), reply);
        await ShopSaga.WaitForLogAsync(host, "tx-d3", e => e.MessageId == reply && e.Kind == SagaLogKinds.ReplyReceived, "the reply to be applied");
        await ShopSaga.DeliverReplyAsync(host, "tx-d3", "reserve", reserve, new Reserved("d3"), reply);
        await ShopSaga.WaitForLogAsync(host, "tx-d3", e => e.MessageId == reply && e.Kind == SagaLogKinds.ReplyIgnored, "the redelivery to be ignored");
        var instance = await host.WaitForSagaAsync("tx-d3");

        Assert.Equal(SagaState.Completed, instance.State);
        var log = await ShopSaga.LogAsync(host, "tx-d3");
        Assert.Single(log, e => e.MessageId == reply && e.Kind == SagaLogKinds.ReplyReceived);
        var ignored = Assert.Single(log, e => e.Kind == SagaLogKinds.ReplyIgnored);
        Assert.StartsWith("duplicate:", ignored.Detail, StringComparison.Ordinal);
        Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("d3"));
        Assert.Equal(0, (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).DeadLetters);
    }

    [Fact]
    public async Task A_late_reply_after_a_timeout_moved_on_is_logged_as_late_and_changes_nothing()
    {
        var time = new FakeTimeProvider();
        var participants = new Participants().Silence("d4", "ship", times: 2);
        await using var host = await ShopSaga.StartAsync(participants, o => o.TimeProvider = time);

        await host.Sagas.StartAsync("order", "tx-d4", new OrderData { Order = "d4", Amount = 3 });
        await ShopSaga.WaitForLogAsync(host, "tx-d4", e => e.Kind == SagaLogKinds.CommandSent && e.Step == "ship", "the first ship");
        var first = await ShopSaga.CommandIdAsync(host, "tx-d4", "ship");
        await ShopSaga.WaitForFlowHandledAsync(host, "tx-d4", first);
        ShopSaga.Advance(host, time, OrderSteps.StepTimeout + TimeSpan.FromSeconds(1));
        await ShopSaga.WaitForLogAsync(host, "tx-d4", e => e.Kind == SagaLogKinds.CommandSent && e.Detail == "attempt 2", "the second ship");
        ShopSaga.Advance(host, time, TimeSpan.FromSeconds(1)); // past the re-send's backoff
        var second = await ShopSaga.CommandIdAsync(host, "tx-d4", "ship", nth: 2);
        await ShopSaga.WaitForFlowHandledAsync(host, "tx-d4", second);
        var before = (await host.Sagas.GetAsync("tx-d4"))!;

        var late = await ShopSaga.DeliverReplyAsync(host, "tx-d4", "ship", first, new Shipped("d4", "late-tracking"));
        var log = await ShopSaga.WaitForLogAsync(host, "tx-d4", e => e.Kind == SagaLogKinds.ReplyIgnored, "the late reply");

        var ignored = log.Single(e => e.Kind == SagaLogKinds.ReplyIgnored);
        Assert.Equal(late, ignored.MessageId);
        Assert.Equal($"late: command {first:N} (step 'ship') is no longer awaited; the saga now awaits {second:N}", ignored.Detail);
        await AssertUnchangedAsync(host, before);
        Assert.Null(host.Sagas.ReadData<OrderData>(before).Tracking);

        ShopSaga.Advance(host, time, OrderSteps.StepTimeout + TimeSpan.FromSeconds(1));
        await ShopSaga.WaitForLogAsync(host, "tx-d4", e => e.Kind == SagaLogKinds.CommandSent && e.Detail == "attempt 3", "the third ship");
        ShopSaga.Advance(host, time, TimeSpan.FromSeconds(2));
        var instance = await host.WaitForSagaAsync("tx-d4");
        Assert.Equal(SagaState.Completed, instance.State);
        Assert.Equal("track-d4", host.Sagas.ReadData<OrderData>(instance).Tracking);
    }

    [Fact]
    public async Task A_late_reply_after_the_saga_ended_is_logged_as_late_and_changes_nothing()
    {
        var time = new FakeTimeProvider();
        var participants = new Participants().Silence("d5", "reserve", times: 1);
        await using var host = await ShopSaga.StartAsync(participants, o => o.TimeProvider = time);
        await host.Sagas.StartAsync("order", "tx-d5", new OrderData { Order = "d5", Amount = 3 });
        await ShopSaga.WaitForLogAsync(host, "tx-d5", e => e.Kind == SagaLogKinds.CommandSent, "the reserve command");
        var reserve = await ShopSaga.CommandIdAsync(host, "tx-d5", "reserve");
        await ShopSaga.WaitForFlowHandledAsync(host, "tx-d5", reserve);
        ShopSaga.Advance(host, time, OrderSteps.StepTimeout + TimeSpan.FromSeconds(1));
        var ended = await host.WaitForSagaAsync("tx-d5");

        await ShopSaga.DeliverReplyAsync(host, "tx-d5", "reserve", reserve, new Reserved("d5"));
        var log = await ShopSaga.WaitForLogAsync(host, "tx-d5", e => e.Kind == SagaLogKinds.ReplyIgnored, "the late reply");

        Assert.Equal(SagaState.Compensated, ended.State);
        Assert.Equal($"late: command {reserve:N} (step 'reserve') is no longer awaited; the saga has compensated", log.Single(e => e.Kind == SagaLogKinds.ReplyIgnored).Detail);
        await AssertUnchangedAsync(host, ended);
        Assert.Equal(["reserve", "release"], participants.EffectsOf("d5"));
        Assert.Equal(["compensated"], await ShopSaga.OutcomesAsync(host, "tx-d5"));
    }

    [Fact]
    public async Task A_reply_to_a_command_the_saga_never_sent_is_logged_as_unknown()
    {
        var participants = new Participants().Silence("d6", "charge", times: 1);
        await using var host = await ShopSaga.StartAsync(participants);
        await host.Sagas.StartAsync("order", "tx-d6", new OrderData { Order = "d6", Amount = 3 });
        await ShopSaga.WaitForLogAsync(host, "tx-d6", e => e.Kind == SagaLogKinds.CommandSent && e.Step == "charge", "the charge command");
        await ShopSaga.WaitForFlowHandledAsync(host, "tx-d6", await ShopSaga.CommandIdAsync(host, "tx-d6", "charge"));
        var before = (await host.Sagas.GetAsync("tx-d6"))!;
        var stranger = Guid.CreateVersion7();

        await ShopSaga.DeliverReplyAsync(host, "tx-d6", "charge", stranger, new Charged("d6", "pay-forged"));
        var log = await ShopSaga.WaitForLogAsync(host, "tx-d6", e => e.Kind == SagaLogKinds.ReplyIgnored, "the stray reply");

        Assert.Equal($"unknown: this saga never sent command {stranger:N}", log.Single(e => e.Kind == SagaLogKinds.ReplyIgnored).Detail);
        await AssertUnchangedAsync(host, before);
    }

    [Fact]
    public async Task A_reply_of_a_type_the_step_does_not_accept_is_logged_as_unexpected()
    {
        var participants = new Participants().Silence("d7", "charge", times: 1);
        await using var host = await ShopSaga.StartAsync(participants);
        await host.Sagas.StartAsync("order", "tx-d7", new OrderData { Order = "d7", Amount = 3 });
        await ShopSaga.WaitForLogAsync(host, "tx-d7", e => e.Kind == SagaLogKinds.CommandSent && e.Step == "charge", "the charge command");
        var charge = await ShopSaga.CommandIdAsync(host, "tx-d7", "charge");
        await ShopSaga.WaitForFlowHandledAsync(host, "tx-d7", charge);
        var before = (await host.Sagas.GetAsync("tx-d7"))!;
        var timeoutsBefore = await ScheduledOnSagaQueueAsync(host);
        Assert.Equal(1, timeoutsBefore);

        await ShopSaga.DeliverReplyAsync(host, "tx-d7", "charge", charge, new Shipped("d7", "wrong"));
        var log = await ShopSaga.WaitForLogAsync(host, "tx-d7", e => e.Kind == SagaLogKinds.ReplyIgnored, "the wrong reply");

        Assert.Equal("unexpected: step 'charge' does not accept test.shipped@1", log.Single(e => e.Kind == SagaLogKinds.ReplyIgnored).Detail);
        await AssertUnchangedAsync(host, before);

        // The charge step's timeout is still pending: should the right reply never come, it still fires.
        Assert.Equal(timeoutsBefore, await ScheduledOnSagaQueueAsync(host));

        await ShopSaga.DeliverReplyAsync(host, "tx-d7", "charge", charge, new Charged("d7", "pay-d7"));
        Assert.Equal(SagaState.Completed, (await host.WaitForSagaAsync("tx-d7")).State);
    }

    static async Task<long> ScheduledOnSagaQueueAsync(ConvergeTestHost host) =>
        (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.SingleOrDefault(q => q.Queue == ShopSaga.Queue)?.Scheduled ?? 0;

    [Fact]
    public async Task Messages_that_are_not_replies_of_a_known_instance_are_logged_or_dead_lettered_with_the_reason()
    {
        var participants = new Participants().Silence("d8", "charge", times: 1);
        await using var host = await ShopSaga.StartAsync(participants);
        await host.Sagas.StartAsync("order", "tx-d8", new OrderData { Order = "d8", Amount = 3 });
        await ShopSaga.WaitForLogAsync(host, "tx-d8", e => e.Kind == SagaLogKinds.CommandSent && e.Step == "charge", "the charge command");
        await ShopSaga.WaitForFlowHandledAsync(host, "tx-d8", await ShopSaga.CommandIdAsync(host, "tx-d8", "charge"));
        var before = (await host.Sagas.GetAsync("tx-d8"))!;

        // Sent, not replied: it names no command, so the saga cannot tell what it answers.
        await host.Bus.SendAsync(new Charged("d8", "pay-sent"), new SendOptions { Queue = ShopSaga.Queue, CorrelationId = "tx-d8" });
        // A reply for a transaction that has no saga, and one without any transaction id.
        await host.Bus.SendAsync(new Charged("d8", "pay-nobody"), new SendOptions { Queue = ShopSaga.Queue, CorrelationId = "tx-nobody" });
        await host.Bus.SendAsync(new Charged("d8", "pay-anonymous"), new SendOptions { Queue = ShopSaga.Queue });
        var log = await ShopSaga.WaitForLogAsync(host, "tx-d8", e => e.Kind == SagaLogKinds.ReplyIgnored, "the stray message");
        await ShopSaga.WaitUntilAsync(async () => (await host.Store.Queries().ListDeadLettersAsync(ShopSaga.Queue, 10, CancellationToken.None)).Count == 2, "two dead letters");
        var letters = await host.Store.Queries().ListDeadLettersAsync(ShopSaga.Queue, 10, CancellationToken.None);

        Assert.Equal("not a reply: it names no command it answers", log.Single(e => e.Kind == SagaLogKinds.ReplyIgnored).Detail);
        await AssertUnchangedAsync(host, before);
        Assert.All(letters, l => Assert.Equal((DeadLetterReasons.PermanentFailure, 1), (l.Reason, l.Attempts)));
        Assert.Contains(letters, l => l.Exception!.Contains("No saga instance has transaction id 'tx-nobody'", StringComparison.Ordinal));
        Assert.Contains(letters, l => l.Exception!.Contains("without a transaction id; replies must be sent with context.ReplyAsync", StringComparison.Ordinal));
    }
}
