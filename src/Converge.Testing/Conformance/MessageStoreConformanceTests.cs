using System.Data.Common;
using System.Text;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// The delivery guarantees every store must keep, stated once. A store's test project derives one class from
/// this, says how to point options at a fresh store (<see cref="UseStore"/>) and how to open a connection to its
/// database (<see cref="OpenConnectionAsync"/>); xunit runs every inherited test against it.
/// </summary>
public abstract class MessageStoreConformanceTests
{
    /// <summary>The queue the conformance handler listens on.</summary>
    protected const string Queue = "conformance";

    /// <summary>The consumer group of the log tests.</summary>
    protected const string Group = "conformance-projection";

    /// <summary>
    /// Points <paramref name="options"/> at the store named <paramref name="storeName"/>: the same name within
    /// one test means the same store (as two processes would share it); a new test gets new, empty stores.
    /// </summary>
    protected abstract void UseStore(ConvergeOptions options, string storeName);

    /// <summary>Opens a connection to the database of <paramref name="store"/> for the test's own SQL.</summary>
    protected abstract Task<DbConnection> OpenConnectionAsync(IMessageStore store);

    /// <summary>Starts a host on <paramref name="storeName"/> with the conformance handler and consumer group.</summary>
    protected async Task<ConvergeTestHost> StartAsync(string storeName = "main", Action<ConvergeOptions>? configure = null)
    {
        var host = await ConvergeTestHost.StartAsync(o =>
        {
            UseStore(o, storeName);
            o.Messages.Register<ConformanceCommand>("conformance.command");
            o.Messages.Register<ConformanceEvent>("conformance.event");
            o.Handle<ConformanceCommand, ConformanceCommandHandler>(Queue);
            o.Subscribe<ConformanceEvent, ConformanceEventHandler>(Group);
            o.Retry.InitialDelay = TimeSpan.Zero;
            o.Retry.MaxDelay = TimeSpan.Zero;
            configure?.Invoke(o);
        });
        await using var connection = await OpenConnectionAsync(host.Store);
        await using var create = connection.CreateCommand();
        create.CommandText = Effects.CreateTable;
        await create.ExecuteNonQueryAsync();
        return host;
    }

    /// <summary>Counts effect rows in the host's store.</summary>
    protected async Task<long> CountEffectsAsync(ConvergeTestHost host, string? key = null)
    {
        ArgumentNullException.ThrowIfNull(host);
        await using var connection = await OpenConnectionAsync(host.Store);
        return await Effects.CountAsync(connection, key);
    }

    static Task<StoreStatus> StatusAsync(ConvergeTestHost host) => host.Store.GetStatusAsync(CancellationToken.None).AsTask();

    static async Task AssertQueuesEmptyAsync(ConvergeTestHost host)
    {
        var status = await StatusAsync(host);
        Assert.All(status.Queues, q => Assert.Equal((0L, 0L, 0L), (q.Ready, q.Scheduled, q.InFlight)));
    }

    static Envelope RawEnvelope(string type, byte[] body) => new()
    {
        MessageId = Guid.NewGuid(),
        MessageType = type,
        SentAt = DateTimeOffset.UnixEpoch,
        Body = body,
    };

    static async Task EnqueueRawAsync(IMessageStore store, Envelope envelope)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        await transaction.EnqueueAsync(new OutgoingMessage(Queue, envelope), CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
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

    /// <summary>A message sent in the caller's transaction exists only if that transaction commits.</summary>
    [Fact]
    public async Task Outbox_send_commits_and_rolls_back_with_the_callers_transaction()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await using var connection = await OpenConnectionAsync(host.Store);

        await using (var rolledBack = await connection.BeginTransactionAsync())
        {
            await host.Bus.SendAsync(new ConformanceCommand("rolled-back"), rolledBack);
            await rolledBack.RollbackAsync();
        }

        await using (var committed = await connection.BeginTransactionAsync())
        {
            await host.Bus.SendAsync(new ConformanceCommand("committed"), committed);
            await committed.CommitAsync();
        }

        var status = await StatusAsync(host);
        Assert.Equal(1, Assert.Single(status.Queues).Ready);
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

    /// <summary>A lease that expires makes the message visible again, with the attempt counted.</summary>
    [Fact]
    public async Task Expired_lease_is_redelivered()
    {
        var time = new ManualTimeProvider();
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
        var time = new ManualTimeProvider();
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

    /// <summary>Once a lease passed to another consumer, the first one can no longer complete, retry or dead-letter the message.</summary>
    [Fact]
    public async Task Competing_consumers_never_both_complete_one_message()
    {
        var time = new ManualTimeProvider();
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
        await using (var connection = await OpenConnectionAsync(first.Store))
        await using (var transaction = await connection.BeginTransactionAsync())
        {
            for (var i = 0; i < 300; i++)
            {
                await first.Bus.SendAsync(new ConformanceCommand("k" + i), transaction);
            }

            await transaction.CommitAsync();
        }

        await WaitForAsync(async () => await CountEffectsAsync(first) >= 300 && (await StatusAsync(first)).Queues.All(q => q.Ready + q.InFlight == 0));
        Assert.Equal(300, await CountEffectsAsync(first));
        await using var check = await OpenConnectionAsync(first.Store);
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
        var letter = Assert.Single(await host.Store.ListDeadLettersAsync(Queue, 10, CancellationToken.None));
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
        var letter = Assert.Single(await host.Store.ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Equal(DeadLetterReasons.MaxAttemptsExceeded, letter.Reason);
        Assert.Equal(3, letter.Attempts);
        Assert.Equal([1, 2, 3], letter.History.Select(a => a.Attempt));
        Assert.All(letter.History, a => Assert.Contains("TimeoutException", a.Error, StringComparison.Ordinal));
        Assert.Equal(0, await CountEffectsAsync(host, "flaky"));
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
            && (await host.Store.ListDeadLettersAsync(null, 10, CancellationToken.None)).Count == 1);
        var unknown = Assert.Single(await host.Store.ListDeadLettersAsync(null, 10, CancellationToken.None));

        Assert.True(await host.Store.DiscardDeadLetterAsync(unknown.Id, CancellationToken.None));
        Assert.False(await host.Store.DiscardDeadLetterAsync(unknown.Id, CancellationToken.None));
        Assert.Equal(0, (await StatusAsync(host)).DeadLetters);

        await host.SendAndWaitAsync(new ConformanceCommand("retry-me", "permanent"));
        var poison = Assert.Single(await host.Store.ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.True(await host.Store.RetryDeadLetterAsync(poison.Id, CancellationToken.None));
        await WaitForAsync(async () => (await host.Store.ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Count == 1
            && (await StatusAsync(host)).Queues.All(q => q.Ready + q.InFlight == 0));
        var again = Assert.Single(await host.Store.ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Equal(poison.Envelope.MessageId, again.Envelope.MessageId);
        Assert.Equal(1, again.Attempts);
    }

    /// <summary>A delayed message stays invisible until it is due.</summary>
    [Fact]
    public async Task Delayed_message_is_invisible_until_due()
    {
        var time = new ManualTimeProvider();
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

    /// <summary>The log can be read from any position (replay), and per stream in version order.</summary>
    [Fact]
    public async Task Log_can_be_replayed_from_any_position_and_read_per_stream()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await host.Bus.PublishAsync("order-1", new ConformanceEvent("placed"));
        await host.Bus.PublishAsync("order-2", new ConformanceEvent("placed"));
        await host.Bus.PublishAsync("order-1", new ConformanceEvent("paid"));

        var all = await host.Store.ReadLogAsync(0, 100, CancellationToken.None);
        var fromTwo = await host.Store.ReadLogAsync(2, 100, CancellationToken.None);
        var order1 = await host.Store.ReadStreamAsync("order-1", 1, 100, CancellationToken.None);

        Assert.Equal([1L, 2L, 3L], all.Select(e => e.Position));
        Assert.Equal([3L], fromTwo.Select(e => e.Position));
        Assert.Equal([1L, 2L], order1.Select(e => e.StreamVersion));
    }

    /// <summary>An append with a stale expected version fails and writes nothing.</summary>
    [Fact]
    public async Task Append_with_a_stale_expected_version_is_refused()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await host.Bus.PublishAsync("account-9", new ConformanceEvent("opened"), new PublishOptions { ExpectedVersion = 0 });

        var conflict = await Assert.ThrowsAsync<StreamVersionConflictException>(async () =>
            await host.Bus.PublishAsync("account-9", new ConformanceEvent("opened-again"), new PublishOptions { ExpectedVersion = 0 }));
        await host.Bus.PublishAsync("account-9", new ConformanceEvent("credited"), new PublishOptions { ExpectedVersion = 1 });

        Assert.Equal(1, conflict.Actual);
        Assert.Equal(2, (await host.Store.ReadStreamAsync("account-9", 1, 10, CancellationToken.None)).Count);
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
        var parked = Assert.Single(await parking.Store.ListDeadLettersAsync("log:" + Group, 10, CancellationToken.None));
        Assert.Equal(DeadLetterReasons.PoisonEvent, parked.Reason);
        Assert.Equal(1, parked.LogPosition);
        Assert.Equal(1, await CountEffectsAsync(parking, "good"));
        Assert.Equal(0, await CountEffectsAsync(parking, "bad"));
    }

    /// <summary>Two processes running the same consumer group never both apply an event.</summary>
    [Fact]
    public async Task Two_processes_in_one_consumer_group_apply_each_event_once()
    {
        await using var first = await StartAsync("shared", o => o.ConsumerGroup(Group, g => g.BatchSize = 3));
        await using var second = await StartAsync("shared", o => o.ConsumerGroup(Group, g => g.BatchSize = 4));
        for (var i = 0; i < 60; i++)
        {
            await first.Bus.PublishAsync("s-" + (i % 4), new ConformanceEvent("e" + i));
        }

        await WaitForAsync(async () => (await first.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 60);
        Assert.Equal(60, await CountEffectsAsync(first));
    }

    /// <summary>Inbox records older than the retention are deleted; newer ones are kept.</summary>
    [Fact]
    public async Task Inbox_records_are_purged_after_retention()
    {
        var time = new ManualTimeProvider();
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

    static async Task<bool> RecordInboxAsync(IMessageStore store, Guid messageId)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        var envelope = new Envelope { MessageId = messageId, MessageType = "conformance.probe@1", SentAt = DateTimeOffset.UnixEpoch, Body = Array.Empty<byte>() };
        var recorded = await transaction.TryRecordInboxAsync(Queue, envelope, CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
        return recorded;
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

    static SagaInstance NewSaga(string transactionId, string definition = "order", int version = 1, SagaState state = SagaState.Running, DateTimeOffset? startedAt = null) => new()
    {
        TransactionId = transactionId,
        Definition = definition,
        Version = version,
        State = state,
        StepIndex = 0,
        Awaiting = Guid.NewGuid(),
        StepAttempt = 1,
        Steps = ["reserve", "charge", "ship"],
        Data = Encoding.UTF8.GetBytes("{\"order\":\"" + transactionId + "\"}"),
        StartedAt = startedAt ?? new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero),
    };

    static async Task<bool> InsertSagaAsync(IMessageStore store, SagaInstance instance)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        var inserted = await transaction.InsertSagaAsync(instance, CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
        return inserted;
    }

    static async Task<bool> UpdateSagaAsync(IMessageStore store, SagaInstance instance, long expectedVersion)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        var saved = await transaction.UpdateSagaAsync(instance, expectedVersion, CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
        return saved;
    }

    /// <summary>A saga instance reads back as stored; inserting a second one with its transaction id changes nothing.</summary>
    [Fact]
    public async Task Saga_insert_is_idempotent_and_the_instance_reads_back_as_stored()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var first = NewSaga("saga-1");
        var second = NewSaga("saga-1", state: SagaState.Compensating);
        second.Data = "{\"order\":\"other\"}"u8.ToArray();

        var insertedFirst = await InsertSagaAsync(host.Store, first);
        var insertedSecond = await InsertSagaAsync(host.Store, second);
        var stored = await host.Store.GetSagaAsync("saga-1", CancellationToken.None);

        Assert.True(insertedFirst);
        Assert.False(insertedSecond);
        Assert.NotNull(stored);
        Assert.Equal(1, first.ConcurrencyVersion);
        Assert.Equal(
            (first.Definition, first.Version, SagaState.Running, first.StepIndex, first.Awaiting, first.StepAttempt, first.Failure, 1L, first.StartedAt),
            (stored.Definition, stored.Version, stored.State, stored.StepIndex, stored.Awaiting, stored.StepAttempt, stored.Failure, stored.ConcurrencyVersion, stored.StartedAt));
        Assert.Equal(first.Steps, stored.Steps);
        Assert.Equal(first.Data.ToArray(), stored.Data.ToArray());
        Assert.Null(await host.Store.GetSagaAsync("saga-2", CancellationToken.None));
    }

    /// <summary>A save from a stale version is refused and leaves the stored instance as the winning save left it.</summary>
    [Fact]
    public async Task Saga_update_with_a_stale_expected_version_is_refused_and_leaves_the_row()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await InsertSagaAsync(host.Store, NewSaga("saga-1"));
        var winner = (await host.Store.GetSagaAsync("saga-1", CancellationToken.None))!;
        var loser = (await host.Store.GetSagaAsync("saga-1", CancellationToken.None))!;

        winner.StepIndex = 1;
        winner.Awaiting = Guid.NewGuid();
        winner.StepAttempt = 1;
        winner.Data = "{\"order\":\"winner\"}"u8.ToArray();
        var winnerSaved = await UpdateSagaAsync(host.Store, winner, 1);
        loser.State = SagaState.Compensating;
        loser.StepIndex = 2;
        loser.Failure = "ship: refused";
        var loserSaved = await UpdateSagaAsync(host.Store, loser, 1);
        var missingSaved = await UpdateSagaAsync(host.Store, NewSaga("saga-missing"), 1);
        var stored = (await host.Store.GetSagaAsync("saga-1", CancellationToken.None))!;

        Assert.True(winnerSaved);
        Assert.False(loserSaved);
        Assert.False(missingSaved);
        Assert.Equal(2, winner.ConcurrencyVersion);
        Assert.Equal(1, loser.ConcurrencyVersion);
        Assert.Equal((SagaState.Running, 1, winner.Awaiting, null as string, 2L), (stored.State, stored.StepIndex, stored.Awaiting, stored.Failure, stored.ConcurrencyVersion));
        Assert.Equal("{\"order\":\"winner\"}", Encoding.UTF8.GetString(stored.Data.Span));
        Assert.Null(await host.Store.GetSagaAsync("saga-missing", CancellationToken.None));
        Assert.True(await UpdateSagaAsync(host.Store, stored, 2));
        Assert.Equal(3, stored.ConcurrencyVersion);
    }

    /// <summary>A transaction sees its own saga writes and log entries before it commits; a rollback leaves nothing.</summary>
    [Fact]
    public async Task Saga_writes_are_visible_in_their_transaction_and_gone_after_a_rollback()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var at = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
        await InsertSagaAsync(host.Store, NewSaga("saga-committed"));
        await using (var committed = await host.Store.BeginAsync(CancellationToken.None))
        {
            await committed.AppendSagaLogAsync([new SagaLogEntry("saga-committed", at, SagaLogKinds.Started, null, null, null, "version 1")], CancellationToken.None);
            await committed.CommitAsync(CancellationToken.None);
        }

        SagaInstance? loaded;
        IReadOnlyList<SagaLogEntry> inTransaction;
        IReadOnlyList<SagaLogEntry> outside;
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            await transaction.InsertSagaAsync(NewSaga("saga-rolled-back"), CancellationToken.None);
            await transaction.AppendSagaLogAsync([new SagaLogEntry("saga-committed", at, SagaLogKinds.CommandSent, "reserve", Guid.NewGuid(), "shop.reserve@1", null)], CancellationToken.None);
            loaded = await transaction.LoadSagaAsync("saga-rolled-back", CancellationToken.None);
            inTransaction = await transaction.ReadSagaLogAsync("saga-committed", CancellationToken.None);
            outside = await host.Store.ReadSagaLogAsync("saga-committed", CancellationToken.None);
        }

        Assert.NotNull(loaded);
        Assert.Equal([SagaLogKinds.Started, SagaLogKinds.CommandSent], inTransaction.Select(e => e.Kind));
        Assert.Equal([SagaLogKinds.Started], outside.Select(e => e.Kind));
        Assert.Null(await host.Store.GetSagaAsync("saga-rolled-back", CancellationToken.None));
        Assert.Equal([SagaLogKinds.Started], (await host.Store.ReadSagaLogAsync("saga-committed", CancellationToken.None)).Select(e => e.Kind));
    }

    /// <summary>Instances can be queried by state, definition and version, newest first, and counted per definition, version and state.</summary>
    [Fact]
    public async Task Sagas_are_queried_by_state_definition_and_version_and_counted()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var t0 = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
        await InsertSagaAsync(host.Store, NewSaga("a", "order", 1, SagaState.Running, t0));
        await InsertSagaAsync(host.Store, NewSaga("b", "order", 1, SagaState.Completed, t0.AddMinutes(1)));
        await InsertSagaAsync(host.Store, NewSaga("c", "order", 2, SagaState.Running, t0.AddMinutes(2)));
        await InsertSagaAsync(host.Store, NewSaga("d", "refund", 1, SagaState.Compensated, t0.AddMinutes(3)));
        await InsertSagaAsync(host.Store, NewSaga("e", "order", 2, SagaState.Running, t0.AddMinutes(4)));

        async Task<IEnumerable<string>> QueryAsync(SagaQuery query) => (await host.Store.QuerySagasAsync(query, CancellationToken.None)).Select(i => i.TransactionId);

        Assert.Equal(["e", "d", "c", "b", "a"], await QueryAsync(new SagaQuery()));
        Assert.Equal(["e", "c", "a"], await QueryAsync(new SagaQuery { State = SagaState.Running }));
        Assert.Equal(["e", "c", "b", "a"], await QueryAsync(new SagaQuery { Definition = "order" }));
        Assert.Equal(["d", "b", "a"], await QueryAsync(new SagaQuery { Version = 1 }));
        Assert.Equal(["a"], await QueryAsync(new SagaQuery { Definition = "order", Version = 1, State = SagaState.Running }));
        Assert.Equal(["e", "d"], await QueryAsync(new SagaQuery { Max = 2 }));
        Assert.Empty(await QueryAsync(new SagaQuery { Definition = "nobody" }));

        var counts = await host.Store.CountSagasAsync(CancellationToken.None);
        Assert.Equal(
            [new SagaCount("order", 1, SagaState.Completed, 1), new SagaCount("order", 1, SagaState.Running, 1),
             new SagaCount("order", 2, SagaState.Running, 2), new SagaCount("refund", 1, SagaState.Compensated, 1)],
            counts.OrderBy(c => c.Definition, StringComparer.Ordinal).ThenBy(c => c.Version).ThenBy(c => c.State.ToString(), StringComparer.Ordinal));
    }

    /// <summary>The saga log of an instance reads back in append order with every field, apart from other instances' entries.</summary>
    [Fact]
    public async Task Saga_log_reads_back_in_append_order()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var at = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var command = Guid.NewGuid();
        SagaLogEntry[] first =
        [
            new("saga-1", at, SagaLogKinds.Started, null, null, null, "version 1"),
            new("saga-1", at, SagaLogKinds.CommandSent, "reserve", command, "shop.reserve@1", null),
        ];
        SagaLogEntry[] second =
        [
            new("saga-1", at.AddSeconds(1), SagaLogKinds.ReplyReceived, "reserve", Guid.NewGuid(), "shop.reserved@1", "to " + command.ToString("N")),
            new("saga-1", at.AddSeconds(1), SagaLogKinds.StateChanged, null, null, null, "running -> completed"),
        ];
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            await transaction.AppendSagaLogAsync(first, CancellationToken.None);
            await transaction.AppendSagaLogAsync([new SagaLogEntry("saga-2", at, SagaLogKinds.Started, null, null, null, "other")], CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            await transaction.AppendSagaLogAsync(second, CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        var log = await host.Store.ReadSagaLogAsync("saga-1", CancellationToken.None);

        Assert.Equal(first.Concat(second).Select(e => (e.TransactionId, e.At, e.Kind, e.Step, e.MessageId, e.MessageType, e.Detail)), log.Select(e => (e.TransactionId, e.At, e.Kind, e.Step, e.MessageId, e.MessageType, e.Detail)));
        Assert.Equal(log.Select(e => e.Id).Order(), log.Select(e => e.Id));
        Assert.Equal(4, log.Select(e => e.Id).Distinct().Count());
        Assert.Single(await host.Store.ReadSagaLogAsync("saga-2", CancellationToken.None));
        Assert.Empty(await host.Store.ReadSagaLogAsync("saga-3", CancellationToken.None));
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

        var flow = await host.Store.ReadFlowAsync(Flow, CancellationToken.None);

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
        Assert.Empty(await host.Store.ReadFlowAsync("order-unknown", CancellationToken.None));
    }

    /// <summary>Awaits <paramref name="condition"/>, checking again after short pauses, failing after 30 seconds.</summary>
    protected static async Task WaitForAsync(Func<Task<bool>> condition, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var deadline = TimeProvider.System.GetTimestamp() + (long)((timeout ?? TimeSpan.FromSeconds(30)).TotalSeconds * TimeProvider.System.TimestampFrequency);
        while (!await condition())
        {
            if (TimeProvider.System.GetTimestamp() > deadline)
            {
                throw new TimeoutException("The awaited condition did not become true in time.");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(10));
        }
    }

    static async Task<DeadLetter> WaitForDeadLetterAsync(ConvergeTestHost host)
    {
        await WaitForAsync(async () => (await host.Store.ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Count > 0);
        return (await host.Store.ListDeadLettersAsync(Queue, 10, CancellationToken.None))[0];
    }

    /// <summary>Sends a command and publishes an event from inside a handler.</summary>
    /// <param name="Key">Passed on.</param>
    public sealed record Relay(string Key);

    /// <summary>Relays to the conformance queue and the log.</summary>
    public sealed class RelayHandler : IHandler<Relay>
    {
        /// <inheritdoc />
        public async Task HandleAsync(Relay message, MessageContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(message);
            ArgumentNullException.ThrowIfNull(context);
            await context.SendAsync(new ConformanceCommand(message.Key), cancellationToken: cancellationToken);
            await context.PublishAsync("relay-" + message.Key, new ConformanceEvent(message.Key), cancellationToken: cancellationToken);
        }
    }
}
