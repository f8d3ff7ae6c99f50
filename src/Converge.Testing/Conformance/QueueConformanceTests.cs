using System.Text;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// The queue (<see cref="IQueueStore"/>, <see cref="IQueueTransaction"/>), part of the core every store must pass:
/// handling once through the runtime (duplicates, crashes, competing consumers and processes), failures, retries and
/// dead letters with their reasons, delays and cancelled schedules, leases that expire and renew, release, claims
/// inside a transaction, continued deliveries, claim policies (limits in flight, a shared rate limit, oldest first),
/// and ordering keys with the dead letters that hold them. The facts observe outcomes through the store's queries
/// (<see cref="IStoreQueries"/>: status and dead letters), which a store under test offers. A store's test project derives
/// one class with its <see cref="ConformanceStore"/>; xunit runs every inherited fact against it.
/// </summary>
public abstract partial class QueueConformanceTests : StoreConformanceBase
{
    /// <summary>Runs the suite on <paramref name="store"/>.</summary>
    /// <param name="store">The store under test; the suite disposes it.</param>
    protected QueueConformanceTests(ConformanceStore store)
        : base(store)
    {
    }

    /// <summary>
    /// Commit callbacks announce only what committed: one registered before a savepoint runs, one registered after a
    /// savepoint the transaction rolled back to does not, and none runs when the transaction rolls back. (A transport's
    /// acknowledgements ride on them: an outcome undone must not be acknowledged to the broker.)
    /// </summary>
    [Fact]
    public async Task Commit_callbacks_run_only_for_what_committed()
    {
        await using var host = await StartIdleAsync(new FakeTimeProvider());
        var ran = new List<string>();

        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            transaction.OnCommitted(() => ran.Add("before the savepoint"));
            await transaction.SavepointAsync(CancellationToken.None);
            transaction.OnCommitted(() => ran.Add("rolled back to the savepoint"));
            await transaction.RollbackToSavepointAsync(CancellationToken.None);
            await transaction.SavepointAsync(CancellationToken.None);
            transaction.OnCommitted(() => ran.Add("after a released savepoint"));
            await transaction.ReleaseSavepointAsync(CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        await using (var rolledBack = await host.Store.BeginAsync(CancellationToken.None))
        {
            rolledBack.OnCommitted(() => ran.Add("rolled back"));
        }

        Assert.Equal(["before the savepoint", "after a released savepoint"], ran);
    }

    /// <summary>A lease that expires makes the message visible again, with the attempt counted.</summary>
    [Fact]
    public async Task Expired_lease_is_redelivered()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(configure: o => { o.RunConsumers = false; o.TimeProvider = time; });
        await host.Bus.SendAsync(new ConformanceCommand("leased"));

        var first = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(30), CancellationToken.None);
        var whileLeased = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(30), CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(31));
        var afterExpiry = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(30), CancellationToken.None);

        Assert.Equal(1, Assert.Single(first).Attempt);
        Assert.Empty(whileLeased);
        var redelivered = Assert.Single(afterExpiry);
        Assert.Equal(first[0].Envelope.MessageId, redelivered.Envelope.MessageId);
        Assert.Equal(2, redelivered.Attempt);
    }

    /// <summary>Renewing a lease keeps the message from other consumers for another full lease.</summary>
    [Fact]
    public async Task Renewed_lease_keeps_the_message_invisible()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(configure: o => { o.RunConsumers = false; o.TimeProvider = time; });
        await host.Bus.SendAsync(new ConformanceCommand("long-running"));
        var claimed = await host.Store.ClaimAsync(Queue, 1, TimeSpan.FromSeconds(10), CancellationToken.None);

        time.Advance(TimeSpan.FromSeconds(8));
        var renewed = await host.Store.RenewLeasesAsync(claimed, TimeSpan.FromSeconds(10), CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(8));
        var stillLeased = await host.Store.ClaimAsync(Queue, 1, TimeSpan.FromSeconds(10), CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(3));
        var expired = await host.Store.ClaimAsync(Queue, 1, TimeSpan.FromSeconds(10), CancellationToken.None);

        Assert.Equal(1, renewed);
        Assert.Empty(stillLeased);
        Assert.Single(expired);
        Assert.Equal(0, await host.Store.RenewLeasesAsync(claimed, TimeSpan.FromSeconds(10), CancellationToken.None));
    }

    /// <summary>A message that fails twice and then succeeds has exactly one effect.</summary>
    [Fact]
    public async Task Retried_message_that_finally_succeeds_has_one_effect()
    {
        await using var host = await StartAsync();

        var history = await host.SendAndWaitAsync(new ConformanceCommand("third-time", "fail-2"));

        Assert.Equal(["sent", "retry-scheduled", "retry-scheduled", "completed"], history.Select(h => h.What));
        Assert.Equal(1, await CountEffectsAsync(host, "third-time"));
    }

    /// <summary>Higher priorities are claimed first; equal priorities in send order.</summary>
    [Fact]
    public async Task Higher_priority_is_claimed_first()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await host.Bus.SendAsync(new ConformanceCommand("low-1"));
        await host.Bus.SendAsync(new ConformanceCommand("high"), new SendOptions { Priority = 5 });
        await host.Bus.SendAsync(new ConformanceCommand("low-2"));

        var claimed = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(30), CancellationToken.None);

        Assert.Equal(["high", "low-1", "low-2"], claimed.Select(c => System.Text.Json.JsonDocument.Parse(c.Envelope.Body).RootElement.GetProperty("key").GetString()));
    }

    /// <summary>A graceful release hands a message back without counting the attempt.</summary>
    [Fact]
    public async Task Released_message_is_visible_again_with_its_attempt_uncounted()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await host.Bus.SendAsync(new ConformanceCommand("released"));
        var claimed = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None);

        await host.Store.ReleaseAsync(claimed, countAttempt: false, CancellationToken.None);
        var again = Assert.Single(await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None));

        Assert.Equal(1, again.Attempt);
    }

    /// <summary>Messages and events sent from a handler carry its correlation id and name it as their cause.</summary>
    [Fact]
    public async Task Messages_sent_by_a_handler_carry_correlation_and_causation()
    {
        await using var host = await StartAsync(configure: o =>
        {
            o.Messages.Register<Relay>("conformance.relay");
            o.Handle<Relay, RelayHandler>("relay");
        });

        var history = await host.SendAndWaitAsync(new Relay("r"), new SendOptions { CorrelationId = "order-42" });

        var root = history.First(h => h.Envelope.MessageType == "conformance.relay@1").Envelope;
        var command = history.First(h => h.What == "completed" && h.Where == Queue).Envelope;
        var appended = history.First(h => h.What == "appended").Envelope;
        Assert.Equal("order-42", command.CorrelationId);
        Assert.Equal(root.MessageId, command.CausationId);
        Assert.Equal("order-42", appended.CorrelationId);
        Assert.Contains(history, h => h.Where == "log:" + Group && h.What == "completed");
    }

    /// <summary>A claim inside a transaction takes hold when it commits and leaves nothing behind when it rolls back.</summary>
    [Fact]
    public async Task Claim_in_a_transaction_shares_its_fate()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        for (var i = 0; i < 5; i++)
        {
            await host.Bus.SendAsync(new ConformanceCommand("in-tx-" + i));
        }

        await using (var rolledBack = await host.Store.BeginAsync(CancellationToken.None))
        {
            Assert.Equal(2, (await rolledBack.ClaimAsync(Queue, 2, TimeSpan.FromMinutes(5), new ClaimPolicy { MaxInFlight = 4 }, CancellationToken.None)).Count);
        }

        IReadOnlyList<QueuedMessage> committed;
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            committed = await transaction.ClaimAsync(Queue, 3, TimeSpan.FromMinutes(5), ClaimPolicy.Default, CancellationToken.None);
            await transaction.CommitAsync();
        }

        var rest = await ClaimAsync(host.Store, 10, ClaimPolicy.Default);
        Assert.Equal(3, committed.Count);
        Assert.Equal(2, rest.Count);
        Assert.Empty(committed.Select(m => m.Envelope.MessageId).Intersect(rest.Select(m => m.Envelope.MessageId)));
        Assert.True(await InTransactionAsync(host.Store, t => t.CompleteAsync(committed[0], CancellationToken.None)));
    }

    /// <summary>
    /// A requeued message continues where its earlier deliveries left off: its next claim counts the attempts already
    /// made and carries their failures; it stays invisible until it is due.
    /// </summary>
    [Fact]
    public async Task Requeued_message_keeps_its_attempts_and_history_and_waits_until_due()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var envelope = RawEnvelope("conformance.command@1", "{\"key\":\"continued\"}"u8.ToArray());
        AttemptRecord[] history = [new(1, time.GetUtcNow().AddMinutes(-2), "TimeoutException: first"), new(2, time.GetUtcNow().AddMinutes(-1), "TimeoutException: second")];

        await InTransactionAsync(store, t => t.EnqueueAsync(new OutgoingMessage(Queue, envelope, time.GetUtcNow().AddMinutes(1), Priority: 2) { Attempts = 2, History = history }, CancellationToken.None));
        var early = await store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        var due = Assert.Single(await store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None));

        Assert.Empty(early);
        Assert.Equal((envelope.MessageId, 3, 2), (due.Envelope.MessageId, due.Attempt, due.Priority));
        Assert.Equal(history, due.History);
        Assert.Equal("{\"key\":\"continued\"}", Encoding.UTF8.GetString(due.Envelope.Body.Span));
    }

    /// <summary>A concurrency limit counts the live leases of the queue: claims stop at the limit and resume as leases end.</summary>
    [Fact]
    public async Task Claim_policy_keeps_leases_in_flight_within_the_limit()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        for (var i = 0; i < 10; i++)
        {
            await host.Bus.SendAsync(new ConformanceCommand("limited-" + i));
        }

        var policy = new ClaimPolicy { MaxInFlight = 3 };
        var first = await ClaimAsync(host.Store, 10, policy);
        var atLimit = await ClaimAsync(host.Store, 10, policy);
        await InTransactionAsync(host.Store, t => t.CompleteAsync(first[0], CancellationToken.None));
        var afterCompletion = await ClaimAsync(host.Store, 10, policy);
        time.Advance(TimeSpan.FromMinutes(6));
        var afterExpiry = await ClaimAsync(host.Store, 10, policy);
        var unlimited = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None);

        Assert.Equal(3, first.Count);
        Assert.Empty(atLimit);
        Assert.Single(afterCompletion);
        Assert.Equal(3, afterExpiry.Count);
        Assert.Equal(6, unlimited.Count);
    }

    /// <summary>
    /// A rate limit is a token bucket kept in the store: a full bucket allows a burst, then permits come back at the
    /// rate, never more than the burst; two processes on one store draw on the same bucket.
    /// </summary>
    [Fact]
    public async Task Claim_policy_rate_limit_is_a_token_bucket_shared_by_every_process()
    {
        var time = new FakeTimeProvider();
        await using var first = await StartIdleAsync(time, "shared");
        await using var second = await StartIdleAsync(time, "shared");
        for (var i = 0; i < 30; i++)
        {
            await first.Bus.SendAsync(new ConformanceCommand("rated-" + i));
        }

        var policy = new ClaimPolicy { RateLimit = new RateLimit(PermitsPerSecond: 10, Burst: 5) };
        var burst = await ClaimAsync(first.Store, 20, policy);
        var emptyBucket = await ClaimAsync(second.Store, 20, policy);
        time.Advance(TimeSpan.FromMilliseconds(300));
        var refilled = await ClaimAsync(second.Store, 20, policy);
        var drained = await ClaimAsync(first.Store, 20, policy);
        time.Advance(TimeSpan.FromSeconds(10));
        var capped = await ClaimAsync(first.Store, 20, policy);

        Assert.Equal(5, burst.Count);
        Assert.Empty(emptyBucket);
        Assert.Equal(3, refilled.Count);
        Assert.Empty(drained);
        Assert.Equal(5, capped.Count);
    }

    /// <summary>Claiming oldest first takes the longest-waiting message even when a newer one has a higher priority.</summary>
    [Fact]
    public async Task Claim_policy_oldest_first_ignores_priority()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        await host.Bus.SendAsync(new ConformanceCommand("old-low"));
        time.Advance(TimeSpan.FromSeconds(1));
        await host.Bus.SendAsync(new ConformanceCommand("new-high"), new SendOptions { Priority = 9 });
        await host.Bus.SendAsync(new ConformanceCommand("not-yet"), new SendOptions { Delay = TimeSpan.FromMinutes(1) });
        time.Advance(TimeSpan.FromSeconds(1));

        var oldest = await ClaimAsync(host.Store, 1, new ClaimPolicy { OldestFirst = true });
        var next = await ClaimAsync(host.Store, 5, new ClaimPolicy { OldestFirst = true });

        Assert.Equal("old-low", KeyOf(Assert.Single(oldest)));
        Assert.Equal("new-high", KeyOf(Assert.Single(next)));
    }

    static Task<IReadOnlyList<QueuedMessage>> ClaimAsync(IMessageStore store, int max, ClaimPolicy policy, string queue = Queue) =>
        store.ClaimAsync(queue, max, TimeSpan.FromMinutes(5), policy, CancellationToken.None).AsTask();

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

    /// <summary>
    /// A queue isolated on failure only (<see cref="BatchIsolation.OnFailure"/>) keeps every promise of the default: the
    /// good messages' effects commit once each, a copy of one is recognised by the batch's inbox records, and the
    /// failing message is dead-lettered with none of its writes.
    /// </summary>
    [Fact]
    public async Task Isolation_on_failure_keeps_each_effect_once_when_a_handler_in_the_batch_fails()
    {
        await using var host = await StartAsync(configure: o => o.Queue(Queue, q => q.Isolation = BatchIsolation.OnFailure));
        var copied = Guid.NewGuid();
        await host.SendAndWaitAsync(new ConformanceCommand("copy"), new SendOptions { MessageId = copied });
        for (var i = 0; i < 10; i++)
        {
            await host.Bus.SendAsync(new ConformanceCommand($"good-{i}"));
            if (i == 4)
            {
                await host.Bus.SendAsync(new ConformanceCommand("poison", "permanent"));
                await host.Bus.SendAsync(new ConformanceCommand("copy"), new SendOptions { MessageId = copied });
            }
        }

        IReadOnlyList<DeadLetter> letters = [];
        await Eventually.UntilAsync(
            async () => (letters = await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Count == 1
                && (await StatusAsync(host)).Queues.All(q => q.Ready + q.Scheduled + q.InFlight == 0),
            "the batch handled and its poison dead-lettered");
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal(1, await CountEffectsAsync(host, $"good-{i}"));
        }

        Assert.Equal(1, await CountEffectsAsync(host, "copy"));
        Assert.Equal(0, await CountEffectsAsync(host, "poison"));
        Assert.Equal((DeadLetterReasons.PermanentFailure, 1), (letters[0].Reason, letters[0].Attempts));
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
}
