using System.Text;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// The read-only queries (<see cref="IStoreQueries"/>), an optional contract, and every fact that reads its outcome
/// through them: the status (ready, scheduled, in flight, dead letters, inbox records, log position and lag), the dead
/// letters with their reasons, attempts and histories (and their retry and discard), and a business transaction's flow.
/// Most of these facts are deliveries through the core, checked with the queries: a store that offers the queries runs
/// them all. A store's test project derives one class with its <see cref="ConformanceStore"/>.
/// </summary>
public abstract class StoreQueriesConformanceTests : StoreConformanceBase
{
    /// <summary>Runs the suite on <paramref name="store"/>.</summary>
    /// <param name="store">The store under test; the suite disposes it.</param>
    protected StoreQueriesConformanceTests(ConformanceStore store)
        : base(store)
    {
    }

    /// <summary>The basic promise: a sent message is handled once, its effect committed, its queue entry gone.</summary>
    [Fact]
    public async Task Sent_message_is_handled_once_and_removed()
    {
        await using var host = await StartAsync();

        var history = await host.SendAndWaitAsync(new ConformanceCommand("a"));

        Assert.Equal(["sent", "completed"], history.Select(h => h.What));
        Assert.Equal(1, await CountEffectsAsync(host, "a"));
        await AssertQueuesEmptyAsync(host);
    }

    /// <summary>Duplicate delivery (the same message id twice) has one effect; the copy is acknowledged and skipped.</summary>
    [Fact]
    public async Task Duplicate_delivery_has_one_effect()
    {
        await using var host = await StartAsync();
        var id = Guid.NewGuid();

        await host.SendAndWaitAsync(new ConformanceCommand("dup"), new SendOptions { MessageId = id });
        var second = await host.SendAndWaitAsync(new ConformanceCommand("dup"), new SendOptions { MessageId = id });

        Assert.Contains(second, h => h.What == "duplicate");
        Assert.Equal(1, await CountEffectsAsync(host, "dup"));
        await AssertQueuesEmptyAsync(host);
    }

    /// <summary>A crash after the send committed and before any consumer ran loses nothing: the next process handles it.</summary>
    [Fact]
    public async Task Crash_between_commit_and_dispatch_loses_nothing()
    {
        await using (var sender = await StartAsync("shared", o => o.RunConsumers = false))
        {
            await sender.Bus.SendAsync(new ConformanceCommand("survivor"));
        }

        await using var consumer = await StartAsync("shared");
        await WaitForAsync(async () => await CountEffectsAsync(consumer, "survivor") == 1);
        await WaitForAsync(async () => (await StatusAsync(consumer)).Queues.All(q => q.Ready + q.InFlight == 0));
    }

    /// <summary>Once a lease passed to another consumer, the first one can no longer complete, retry or dead-letter the message.</summary>
    [Fact]
    public async Task Competing_consumers_never_both_complete_one_message()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(configure: o => { o.RunConsumers = false; o.TimeProvider = time; });
        await host.Bus.SendAsync(new ConformanceCommand("contended"));
        var slow = Assert.Single(await host.Store.ClaimAsync(Queue, 1, TimeSpan.FromSeconds(5), CancellationToken.None));
        time.Advance(TimeSpan.FromSeconds(6));
        var fast = Assert.Single(await host.Store.ClaimAsync(Queue, 1, TimeSpan.FromSeconds(5), CancellationToken.None));

        await using var transaction = await host.Store.BeginAsync(CancellationToken.None);
        var slowCompleted = await transaction.CompleteAsync(slow, CancellationToken.None);
        var slowRetried = await transaction.RetryLaterAsync(slow, time.GetUtcNow(), new AttemptRecord(1, time.GetUtcNow(), "x"), CancellationToken.None);
        var slowDeadLettered = await transaction.DeadLetterAsync(slow, DeadLetterReasons.PermanentFailure, null, null, CancellationToken.None);
        var fastCompleted = await transaction.CompleteAsync(fast, CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);

        Assert.False(slowCompleted);
        Assert.False(slowRetried);
        Assert.False(slowDeadLettered);
        Assert.True(fastCompleted);
        Assert.Equal(0, (await StatusAsync(host)).DeadLetters);
    }

    /// <summary>Competing consumers in two processes on one store handle every message exactly once.</summary>
    [Fact]
    public async Task Two_consumer_processes_handle_each_message_once()
    {
        await using var first = await StartAsync("shared", o => o.Queue(Queue, q => q.BatchSize = 7));
        await using var second = await StartAsync("shared", o => o.Queue(Queue, q => q.BatchSize = 5));
        if (Target is DatabaseConformanceStore database)
        {
            await using var connection = await database.OpenConnectionAsync(first.Store);
            await using var transaction = await connection.BeginTransactionAsync();
            for (var i = 0; i < 300; i++)
            {
                await first.Bus.SendAsync(new ConformanceCommand("k" + i), transaction);
            }

            await transaction.CommitAsync();
        }
        else
        {
            // No caller's transaction to send in: one of the store's own, so all 300 still become visible at once.
            var bus = (MessageBus)first.Bus;
            await InTransactionAsync(first.Store, async t =>
            {
                for (var i = 0; i < 300; i++)
                {
                    await bus.SendCoreAsync(t, new ConformanceCommand("k" + i), null, null, CancellationToken.None);
                }
            });
        }

        await WaitForAsync(async () => await CountEffectsAsync(first) >= 300 && (await StatusAsync(first)).Queues.All(q => q.Ready + q.InFlight == 0));
        Assert.Equal(300, await CountEffectsAsync(first));
        if (Target is not DatabaseConformanceStore sql)
        {
            Assert.Equal(300, Effects.CommittedKeys(first.Store).Distinct().Count());
            return;
        }

        await using var check = await sql.OpenConnectionAsync(first.Store);
        await using var distinct = check.CreateCommand();
        distinct.CommandText = "SELECT count(DISTINCT item_key) FROM conformance_effects";
        Assert.Equal(300L, Convert.ToInt64(await distinct.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary>A permanent failure dead-letters at once with its reason and exception; the handler's writes roll back.</summary>
    [Fact]
    public async Task Permanent_failure_is_dead_lettered_at_once_and_its_effects_rolled_back()
    {
        await using var host = await StartAsync();

        var history = await host.SendAndWaitAsync(new ConformanceCommand("poison", "permanent"));

        Assert.Equal("deadlettered", history[^1].What);
        var letter = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Equal(DeadLetterReasons.PermanentFailure, letter.Reason);
        Assert.Equal(1, letter.Attempts);
        Assert.Contains("refused for good", letter.Exception, StringComparison.Ordinal);
        Assert.Equal(0, await CountEffectsAsync(host, "poison"));
        await AssertQueuesEmptyAsync(host);
    }

    /// <summary>A transient failure is retried; after the maximum attempts it is dead-lettered with every attempt in its history.</summary>
    [Fact]
    public async Task Transient_failure_is_retried_then_dead_lettered_with_its_history()
    {
        await using var host = await StartAsync(configure: o => o.Retry.MaxAttempts = 3);

        var history = await host.SendAndWaitAsync(new ConformanceCommand("flaky", "transient"));

        Assert.Equal(2, history.Count(h => h.What == "retry-scheduled"));
        var letter = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Equal(DeadLetterReasons.MaxAttemptsExceeded, letter.Reason);
        Assert.Equal(3, letter.Attempts);
        Assert.Equal([1, 2, 3], letter.History.Select(a => a.Attempt));
        Assert.All(letter.History, a => Assert.Contains("TimeoutException", a.Error, StringComparison.Ordinal));
        Assert.Equal(0, await CountEffectsAsync(host, "flaky"));
    }

    /// <summary>A message of a type this process does not know is dead-lettered as unknown, not dropped.</summary>
    [Fact]
    public async Task Unknown_message_type_is_dead_lettered_with_its_reason()
    {
        await using var host = await StartAsync();
        await EnqueueRawAsync(host.Store, RawEnvelope("nobody.knows@1", "{}"u8.ToArray()));

        var letter = await WaitForDeadLetterAsync(host);

        Assert.Equal(DeadLetterReasons.UnknownType, letter.Reason);
        Assert.Equal("nobody.knows@1", letter.Envelope.MessageType);
    }

    /// <summary>A body that does not deserialize is dead-lettered with the parser's complaint.</summary>
    [Fact]
    public async Task Malformed_body_is_dead_lettered_with_its_reason()
    {
        await using var host = await StartAsync();
        await EnqueueRawAsync(host.Store, RawEnvelope("conformance.command@1", "{not json"u8.ToArray()));

        var letter = await WaitForDeadLetterAsync(host);

        Assert.Equal(DeadLetterReasons.DeserializationFailed, letter.Reason);
        Assert.Equal("{not json", Encoding.UTF8.GetString(letter.Envelope.Body.Span));
        Assert.NotNull(letter.Exception);
    }

    /// <summary>A message over the consumer's size limit is dead-lettered as too large, body intact.</summary>
    [Fact]
    public async Task Oversized_message_is_dead_lettered_with_its_reason()
    {
        await using var host = await StartAsync(configure: o => o.MaxMessageSize = 2048);
        var body = Encoding.UTF8.GetBytes("{\"key\":\"" + new string('x', 4096) + "\"}");
        await EnqueueRawAsync(host.Store, RawEnvelope("conformance.command@1", body));

        var letter = await WaitForDeadLetterAsync(host);

        Assert.Equal(DeadLetterReasons.TooLarge, letter.Reason);
        Assert.Equal(body.Length, letter.Envelope.Body.Length);
    }

    /// <summary>Sending a message over the limit fails at the sender, before anything is stored.</summary>
    [Fact]
    public async Task Oversized_send_is_refused_at_the_sender()
    {
        await using var host = await StartAsync(configure: o => { o.MaxMessageSize = 2048; o.RunConsumers = false; });

        await Assert.ThrowsAsync<MessageTooLargeException>(async () => await host.Bus.SendAsync(new ConformanceCommand(new string('x', 4096))));

        Assert.Empty((await StatusAsync(host)).Queues);
    }

    /// <summary>A dead letter can be retried (back on its queue, handled) or discarded.</summary>
    [Fact]
    public async Task Dead_letters_can_be_retried_and_discarded()
    {
        await using var host = await StartAsync();
        await EnqueueRawAsync(host.Store, RawEnvelope("conformance.command@1", "{\"key\":\"second-chance\"}"u8.ToArray()));
        await EnqueueRawAsync(host.Store, RawEnvelope("nobody.knows@1", "{}"u8.ToArray()));
        await WaitForAsync(async () => await CountEffectsAsync(host, "second-chance") == 1
            && (await host.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None)).Count == 1);
        var unknown = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None));

        Assert.True(await host.Store.DiscardDeadLetterAsync(unknown.Id, CancellationToken.None));
        Assert.False(await host.Store.DiscardDeadLetterAsync(unknown.Id, CancellationToken.None));
        Assert.Equal(0, (await StatusAsync(host)).DeadLetters);

        await host.SendAndWaitAsync(new ConformanceCommand("retry-me", "permanent"));
        var poison = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.True(await host.Store.RetryDeadLetterAsync(poison.Id, CancellationToken.None));
        await WaitForAsync(async () => (await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Count == 1
            && (await StatusAsync(host)).Queues.All(q => q.Ready + q.InFlight == 0));
        var again = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Equal(poison.Envelope.MessageId, again.Envelope.MessageId);
        Assert.Equal(1, again.Attempts);
    }

    /// <summary>A delayed message stays invisible until it is due.</summary>
    [Fact]
    public async Task Delayed_message_is_invisible_until_due()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(configure: o => { o.RunConsumers = false; o.TimeProvider = time; });
        await host.Bus.SendAsync(new ConformanceCommand("later"), new SendOptions { Delay = TimeSpan.FromMinutes(5) });

        var early = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(30), CancellationToken.None);
        var status = await StatusAsync(host);
        time.Advance(TimeSpan.FromMinutes(5));
        var due = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(30), CancellationToken.None);

        Assert.Empty(early);
        Assert.Equal(1, Assert.Single(status.Queues).Scheduled);
        Assert.Single(due);
    }

    /// <summary>A consumer group resumes at its checkpoint: events it handled are not handled again by a new process.</summary>
    [Fact]
    public async Task Consumer_group_resumes_at_its_checkpoint()
    {
        await using (var first = await StartAsync("shared"))
        {
            for (var i = 0; i < 3; i++)
            {
                await first.Bus.PublishAsync("stream-a", new ConformanceEvent("before-" + i));
            }

            await WaitForAsync(async () => (await first.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 3);
        }

        await using var sender = await StartAsync("shared", o => o.RunConsumers = false);
        await sender.Bus.PublishAsync("stream-a", new ConformanceEvent("after-0"));
        await sender.Bus.PublishAsync("stream-b", new ConformanceEvent("after-1"));

        await using var second = await StartAsync("shared");
        await WaitForAsync(async () => (await second.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 5);
        Assert.Equal(5, await CountEffectsAsync(second));
        var status = await StatusAsync(second);
        Assert.Equal(5, status.LogPosition);
        Assert.Equal(0, Assert.Single(status.ConsumerGroups).Lag);
    }

    /// <summary>A failing event stops its group (no event is skipped unless the group is told to park poison events).</summary>
    [Fact]
    public async Task Poison_event_stalls_its_group_unless_parking_is_enabled()
    {
        await using (var stalled = await StartAsync("stall", o => o.Retry.MaxAttempts = 2))
        {
            await stalled.Bus.PublishAsync("s", new ConformanceEvent("bad", "transient"));
            await stalled.Bus.PublishAsync("s", new ConformanceEvent("good"));
            await WaitForAsync(async () => (await stalled.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.FailedAttempts >= 2);
            var state = await stalled.Store.GetConsumerGroupAsync(Group, CancellationToken.None);
            Assert.Equal(0, state!.Position);
            Assert.Contains("TimeoutException", state.LastError, StringComparison.Ordinal);
            Assert.Equal(0, await CountEffectsAsync(stalled));
        }

        await using var parking = await StartAsync("park", o =>
        {
            o.Retry.MaxAttempts = 2;
            o.ConsumerGroup(Group, g => g.ParkPoisonEvents = true);
        });
        await parking.Bus.PublishAsync("s", new ConformanceEvent("bad", "transient"));
        await parking.Bus.PublishAsync("s", new ConformanceEvent("good"));
        await WaitForAsync(async () => (await parking.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 2);
        var parked = Assert.Single(await parking.Store.Queries().ListDeadLettersAsync("log:" + Group, 10, CancellationToken.None));
        Assert.Equal(DeadLetterReasons.PoisonEvent, parked.Reason);
        Assert.Equal(1, parked.LogPosition);
        Assert.Equal(1, await CountEffectsAsync(parking, "good"));
        Assert.Equal(0, await CountEffectsAsync(parking, "bad"));
    }

    /// <summary>Inbox records older than the retention are deleted; newer ones are kept.</summary>
    [Fact]
    public async Task Inbox_records_are_purged_after_retention()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(configure: o => { o.TimeProvider = time; o.RunConsumers = false; });
        await RecordInboxAsync(host.Store, Guid.NewGuid());
        time.Advance(TimeSpan.FromDays(8));
        var recent = Guid.NewGuid();
        await RecordInboxAsync(host.Store, recent);

        var purged = await host.Store.PurgeInboxAsync(time.GetUtcNow() - TimeSpan.FromDays(7), CancellationToken.None);

        Assert.Equal(1, purged);
        Assert.Equal(1, (await StatusAsync(host)).InboxRecords);
        Assert.False(await RecordInboxAsync(host.Store, recent));
    }

    /// <summary>A scheduled message is deleted by its queue, id and due time, once.</summary>
    [Fact]
    public async Task A_scheduled_message_is_cancelled_by_queue_id_and_due_time()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(configure: o => { o.RunConsumers = false; o.TimeProvider = time; });
        var dueAt = time.GetUtcNow() + TimeSpan.FromMinutes(5);
        var kept = RawEnvelope("conformance.timer", [1]);
        var cancelled = RawEnvelope("conformance.timer", [2]);
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            await transaction.EnqueueAsync(new OutgoingMessage(Queue, kept, dueAt), CancellationToken.None);
            await transaction.EnqueueAsync(new OutgoingMessage(Queue, cancelled, dueAt), CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        async Task<bool> CancelAsync(string queue, Guid id, DateTimeOffset at)
        {
            await using var transaction = await host.Store.BeginAsync(CancellationToken.None);
            var done = await transaction.CancelScheduledAsync(queue, id, at, CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
            return done;
        }

        Assert.False(await CancelAsync(Queue, cancelled.MessageId, dueAt + TimeSpan.FromTicks(1)));
        Assert.False(await CancelAsync("elsewhere", cancelled.MessageId, dueAt));
        Assert.True(await CancelAsync(Queue, cancelled.MessageId, dueAt));
        Assert.False(await CancelAsync(Queue, cancelled.MessageId, dueAt));
        Assert.Equal(1, (await StatusAsync(host)).Queues.Single(q => q.Queue == Queue).Scheduled);
    }

    /// <summary>
    /// The flow of a business transaction lists every message and event carrying its id: handled (from the inbox),
    /// still queued, dead-lettered, and appended to the log, with causation; nothing of other transactions.
    /// </summary>
    [Fact]
    public async Task Flow_shows_handled_pending_dead_lettered_and_logged_items_of_one_correlation_id()
    {
        await using var host = await StartAsync(configure: o =>
        {
            o.Messages.Register<Relay>("conformance.relay");
            o.Handle<Relay, RelayHandler>("relay");
        });
        const string Flow = "order-7";
        var handled = Guid.NewGuid();
        var deadLettered = Guid.NewGuid();
        var relay = Guid.NewGuid();

        await host.SendAndWaitAsync(new ConformanceCommand("flow-ok"), new SendOptions { MessageId = handled, CorrelationId = Flow });
        await host.SendAndWaitAsync(new ConformanceCommand("flow-bad", "permanent"), new SendOptions { MessageId = deadLettered, CorrelationId = Flow });
        var relayed = await host.SendAndWaitAsync(new Relay("flow"), new SendOptions { MessageId = relay, CorrelationId = Flow });
        var pending = await host.Bus.SendAsync(new ConformanceCommand("flow-later"), new SendOptions { CorrelationId = Flow, Delay = TimeSpan.FromHours(1) });
        var appended = await host.Bus.PublishAsync("flow-stream", new ConformanceEvent("flow-event"), new PublishOptions { CorrelationId = Flow });
        await host.SendAndWaitAsync(new ConformanceCommand("elsewhere"), new SendOptions { CorrelationId = "order-8" });

        var flow = await host.Store.Queries().ReadFlowAsync(Flow, CancellationToken.None);

        var relayedCommand = relayed.First(h => h.What == "completed" && h.Where == Queue).Envelope.MessageId;
        var relayedEvent = relayed.First(h => h.What == "appended").Envelope.MessageId;
        Assert.Equal(7, flow.Count);
        var byId = flow.ToDictionary(i => i.MessageId);
        Assert.Equal(("queue:" + Queue, "handled", "conformance.command@1"), (byId[handled].Where, byId[handled].Status, byId[handled].MessageType));
        Assert.NotNull(byId[handled].HandledAt);
        Assert.Equal(("dead-letters:" + Queue, "dead-lettered"), (byId[deadLettered].Where, byId[deadLettered].Status));
        Assert.Equal(("queue:relay", "handled"), (byId[relay].Where, byId[relay].Status));
        Assert.Equal(("queue:" + Queue, "handled", (Guid?)relay), (byId[relayedCommand].Where, byId[relayedCommand].Status, byId[relayedCommand].CausationId));
        Assert.Equal(("log:relay-flow", "appended", (Guid?)relay), (byId[relayedEvent].Where, byId[relayedEvent].Status, byId[relayedEvent].CausationId));
        Assert.Equal(("queue:" + Queue, "pending", null as DateTimeOffset?), (byId[pending].Where, byId[pending].Status, byId[pending].HandledAt));
        Assert.Equal(("log:flow-stream", "appended", "conformance.event@1"), (byId[appended.Envelope.MessageId].Where, byId[appended.Envelope.MessageId].Status, byId[appended.Envelope.MessageId].MessageType));
        Assert.Null(byId[handled].CausationId);
        Assert.Empty(await host.Store.Queries().ReadFlowAsync("order-unknown", CancellationToken.None));
    }

    /// <summary>
    /// A dead letter recorded for a message that was never a row of the queue reads back with everything it was given,
    /// and a retry puts it on its queue with a fresh attempt count.
    /// </summary>
    [Fact]
    public async Task Recorded_dead_letter_reads_back_and_can_be_retried()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var envelope = new Envelope
        {
            MessageId = Guid.NewGuid(),
            MessageType = "conformance.command@1",
            CorrelationId = "order-77",
            CausationId = Guid.NewGuid(),
            SentAt = time.GetUtcNow().AddMinutes(-5),
            AsOf = time.GetUtcNow().AddMinutes(-6),
            Headers = new Dictionary<string, string> { ["origin"] = "broker" },
            Body = "{\"key\":\"from-the-broker\"}"u8.ToArray(),
        };
        AttemptRecord[] history = [new(1, time.GetUtcNow().AddMinutes(-1), "TimeoutException: slow")];

        await InTransactionAsync(store, t => t.RecordDeadLetterAsync(new DeadLetterRecord(Queue, envelope, DeadLetterReasons.MaxAttemptsExceeded) { Exception = "delivered 20 times", Attempts = 20, History = history, Priority = 4 }, CancellationToken.None));
        var letter = Assert.Single(await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));

        Assert.Equal((Queue, DeadLetterReasons.MaxAttemptsExceeded, "delivered 20 times", 20, 4, time.GetUtcNow(), null as long?),
            (letter.Source, letter.Reason, letter.Exception, letter.Attempts, letter.Priority, letter.DeadLetteredAt, letter.LogPosition));
        Assert.Equal((envelope.MessageId, envelope.MessageType, envelope.CorrelationId, envelope.CausationId, envelope.SentAt, envelope.AsOf),
            (letter.Envelope.MessageId, letter.Envelope.MessageType, letter.Envelope.CorrelationId, letter.Envelope.CausationId, letter.Envelope.SentAt, letter.Envelope.AsOf));
        Assert.Equal(envelope.Headers, letter.Envelope.Headers);
        Assert.Equal(envelope.Body.ToArray(), letter.Envelope.Body.ToArray());
        Assert.Equal(history, letter.History);

        Assert.True(await store.RetryDeadLetterAsync(letter.Id, CancellationToken.None));
        var retried = Assert.Single(await store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None));
        Assert.Equal((envelope.MessageId, 1), (retried.Envelope.MessageId, retried.Attempt));
        Assert.Empty(await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
    }

    static async Task AssertQueuesEmptyAsync(ConvergeTestHost host)
    {
        var status = await StatusAsync(host);
        Assert.All(status.Queues, q => Assert.Equal((0L, 0L, 0L), (q.Ready, q.Scheduled, q.InFlight)));
    }

    static async Task EnqueueRawAsync(IMessageStore store, Envelope envelope)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        await transaction.EnqueueAsync(new OutgoingMessage(Queue, envelope), CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
    }

    static async Task<DeadLetter> WaitForDeadLetterAsync(ConvergeTestHost host)
    {
        await WaitForAsync(async () => (await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Count > 0);
        return (await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None))[0];
    }
}
