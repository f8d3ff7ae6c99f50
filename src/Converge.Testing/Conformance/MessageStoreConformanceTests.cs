using System.Data.Common;
using System.Text;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// The delivery guarantees every store must keep, stated once. A store's test project derives one class from
/// this, says how to point options at a fresh store (<see cref="UseStore"/>) and how to open a connection to its
/// database (<see cref="OpenConnectionAsync"/>); xunit runs every inherited test against it.
/// </summary>
public abstract partial class MessageStoreConformanceTests
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

    /// <summary>The store's queue table as the test's own SQL names it on a connection from <see cref="OpenConnectionAsync"/>.</summary>
    protected abstract string QueueTable { get; }

    /// <summary>
    /// Whether the store has a database the suite reaches with its own SQL (<see cref="OpenConnectionAsync"/>). Default
    /// <c>true</c>. A store without one (the in-memory store) says <c>false</c>: the conformance handlers then keep their
    /// effects when their transaction commits instead of writing rows, and the facts about SQL and ADO.NET (the outbox
    /// with the caller's <see cref="DbTransaction"/>, rows spoiled with SQL, the read connection) cannot apply: they
    /// are virtual, and such a store's subclass overrides each with a skipped fact that says why.
    /// </summary>
    protected virtual bool HasDatabase => true;

    /// <summary>
    /// One way a queue row can hold what Converge never writes to <paramref name="Column"/>, so that the row cannot be
    /// decoded; <paramref name="Value"/> draws a value (a type the store's column accepts) for the test's SQL.
    /// </summary>
    /// <param name="Column">The queue table's column.</param>
    /// <param name="Value">Draws one spoiling value.</param>
    protected sealed record RowDamage(string Column, Func<Random, object> Value);

    /// <summary>
    /// The damage the fuzz test inflicts on queue rows. The default is what every store's column types allow (text that
    /// is not headers or a history, times outside .NET's range, attempt counts no claim can raise); a store whose
    /// columns accept more (SQLite's are untyped) adds its own.
    /// </summary>
    protected virtual IReadOnlyList<RowDamage> RowDamages { get; } = PortableRowDamages;

    /// <summary>Damage every store's column types allow.</summary>
    protected static IReadOnlyList<RowDamage> PortableRowDamages { get; } =
    [
        new("headers", r => "x" + Garbage(r)),
        new("headers", r => "{\"n\":" + r.Next() + "}"),
        new("headers", _ => "{\"a\":null}"),
        new("headers", _ => "[\"not\",\"an\",\"object\"]"),
        new("headers", r => "{\"a\":" + new string('[', 70 + r.Next(30)) + new string(']', 100) + "}"),
        new("history", r => "x" + Garbage(r)),
        new("history", _ => "[null]"),
        new("history", _ => "[{}]"),
        new("history", _ => "{\"attempt\":1}"),
        new("sent_at", r => -1 - r.NextInt64(long.MaxValue - 1)),
        new("sent_at", r => DateTimeOffset.MaxValue.UtcTicks + 1 + r.NextInt64(long.MaxValue - DateTimeOffset.MaxValue.UtcTicks - 1)),
        new("as_of", r => -1 - r.NextInt64(long.MaxValue - 1)),
        new("as_of", _ => long.MaxValue),
        new("attempts", _ => int.MaxValue),
        new("attempts", r => -r.Next(1, int.MaxValue)),
    ];

    /// <summary>Printable junk of random length.</summary>
    protected static string Garbage(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var chars = new char[random.Next(0, 40)];
        for (var i = 0; i < chars.Length; i++)
        {
            chars[i] = (char)random.Next(32, 127);
        }

        return new string(chars);
    }

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
        if (HasDatabase)
        {
            await using var connection = await OpenConnectionAsync(host.Store);
            await using var create = connection.CreateCommand();
            create.CommandText = Effects.CreateTable;
            await create.ExecuteNonQueryAsync();
        }

        return host;
    }

    /// <summary>Counts effect rows in the host's store.</summary>
    protected async Task<long> CountEffectsAsync(ConvergeTestHost host, string? key = null)
    {
        ArgumentNullException.ThrowIfNull(host);
        if (!HasDatabase)
        {
            return Effects.CommittedKeys(host.Store).Count(k => key is null || k == key);
        }

        await using var connection = await OpenConnectionAsync(host.Store);
        return await Effects.CountAsync(connection, key);
    }

    static Task<StoreStatus> StatusAsync(ConvergeTestHost host) => host.Store.Queries().GetStatusAsync(CancellationToken.None).AsTask();

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
    public virtual async Task Outbox_send_commits_and_rolls_back_with_the_callers_transaction()
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
        if (HasDatabase)
        {
            await using var connection = await OpenConnectionAsync(first.Store);
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
        if (!HasDatabase)
        {
            Assert.Equal(300, Effects.CommittedKeys(first.Store).Distinct().Count());
            return;
        }

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

    /// <summary>
    /// Rows written into the queue table by something other than Converge, each spoiled in one to three ways its
    /// columns allow, between valid ones: every spoiled row is dead-lettered as invalid-row with its decode errors and
    /// raw values, every valid one is handled, nothing stays on the queue, and a message sent afterwards is handled
    /// within a second.
    /// </summary>
    [Fact]
    public virtual async Task Rows_that_cannot_be_decoded_are_dead_lettered_as_invalid_and_the_queue_goes_on()
    {
        const int spoiled = 10_000;
        const int validEvery = 10;
        var random = new Random(20261204);
        var damages = RowDamages;
        var damagedColumns = new Dictionary<long, HashSet<string>>();
        var valid = 0;
        await using (var seeding = await StartAsync("fuzz", o => o.RunConsumers = false))
        {
            var total = spoiled + (spoiled / (validEvery - 1)) + 1;
            await using (var transaction = await seeding.Store.BeginAsync(CancellationToken.None))
            {
                for (var i = 0; i < total; i++)
                {
                    await transaction.EnqueueAsync(new OutgoingMessage(Queue, RawEnvelope("conformance.command@1", Encoding.UTF8.GetBytes($"{{\"key\":\"fuzz-{i}\"}}"))), CancellationToken.None);
                }

                await transaction.CommitAsync(CancellationToken.None);
            }

            await using var connection = await OpenConnectionAsync(seeding.Store);
            var ids = new List<long>();
            await using (var select = connection.CreateCommand())
            {
                select.CommandText = $"SELECT id FROM {QueueTable} ORDER BY id";
                await using var reader = await select.ExecuteReaderAsync();
                while (await reader.ReadAsync())
                {
                    ids.Add(reader.GetInt64(0));
                }
            }

            await using var spoil = await connection.BeginTransactionAsync();
            foreach (var id in ids)
            {
                if (damagedColumns.Count == spoiled || (id % validEvery == 0 && valid * (validEvery - 1) < spoiled))
                {
                    valid++;
                    continue;
                }

                var columns = damagedColumns[id] = new HashSet<string>(StringComparer.Ordinal);
                for (var n = random.Next(1, 4); n > 0; n--)
                {
                    var damage = damages[random.Next(damages.Count)];
                    columns.Add(damage.Column);
                    await using var update = connection.CreateCommand();
                    update.Transaction = spoil;
                    update.CommandText = $"UPDATE {QueueTable} SET {damage.Column} = @value WHERE id = @id";
                    AddParameter(update, "@value", damage.Value(random));
                    AddParameter(update, "@id", id);
                    await update.ExecuteNonQueryAsync();
                }
            }

            await spoil.CommitAsync();
        }

        Assert.Equal(spoiled, damagedColumns.Count);
        await using var host = await StartAsync("fuzz");
        await WaitForAsync(
            async () => (await StatusAsync(host)).Queues.Single(q => q.Queue == Queue) is { Ready: 0, Scheduled: 0, InFlight: 0 } queue && queue.DeadLetters == spoiled,
            TimeSpan.FromMinutes(2));

        var letters = await host.Store.Queries().ListDeadLettersAsync(Queue, spoiled + 100, CancellationToken.None);
        Assert.Equal(spoiled, letters.Count);
        Assert.All(letters, letter => Assert.Equal(DeadLetterReasons.InvalidRow, letter.Reason));
        Assert.All(letters, letter => Assert.Contains("cannot be decoded", letter.Exception, StringComparison.Ordinal));
        Assert.Equal(valid, await CountEffectsAsync(host));

        // Each dead letter names, and keeps raw, a column the test spoiled (a spoiled column whose value still decodes
        // beside a broken one is not named, so the check is one-way).
        var rawColumns = letters.Select(letter => letter.Envelope.Headers.Keys
            .Where(key => key.StartsWith("converge-raw-", StringComparison.Ordinal))
            .Select(key => key["converge-raw-".Length..])
            .ToHashSet(StringComparer.Ordinal)).ToList();
        Assert.All(rawColumns, columns => Assert.NotEmpty(columns));
        Assert.All(rawColumns, columns => Assert.Subset(damages.Select(d => d.Column).ToHashSet(StringComparer.Ordinal), columns));
        Assert.Equal(damages.Select(d => d.Column).Distinct().Order(), rawColumns.SelectMany(c => c).Distinct().Order());

        // The queue is not stuck behind them: a message sent now is handled within a second.
        var history = await host.SendAndWaitAsync(new ConformanceCommand("after-the-fuzz"), timeout: TimeSpan.FromSeconds(1));
        Assert.Contains(history, h => h.What == "completed");
        Assert.Equal(1, await CountEffectsAsync(host, "after-the-fuzz"));
    }

    /// <summary>
    /// A row whose visible-at time no consumer will reach (written by something other than Converge) is counted as
    /// stranded in the status, not as scheduled, and does not hold up the queue.
    /// </summary>
    [Fact]
    public virtual async Task Rows_no_consumer_will_reach_are_reported_as_stranded()
    {
        var absurd = StrandedVisibleAts;
        await using (var seeding = await StartAsync("stranded", o => o.RunConsumers = false))
        {
            await using (var transaction = await seeding.Store.BeginAsync(CancellationToken.None))
            {
                for (var i = 0; i < absurd.Count + 1; i++)
                {
                    await transaction.EnqueueAsync(new OutgoingMessage(Queue, RawEnvelope("conformance.command@1", Encoding.UTF8.GetBytes($"{{\"key\":\"stranded-{i}\"}}")), DueAt: seeding.Options.TimeProvider.GetUtcNow().AddDays(1)), CancellationToken.None);
                }

                await transaction.CommitAsync(CancellationToken.None);
            }

            await using var connection = await OpenConnectionAsync(seeding.Store);
            for (var i = 0; i < absurd.Count; i++)
            {
                await using var update = connection.CreateCommand();
                update.CommandText = $"UPDATE {QueueTable} SET visible_at = @value WHERE id = (SELECT min(id) + {i} FROM {QueueTable})";
                AddParameter(update, "@value", absurd[i]);
                await update.ExecuteNonQueryAsync();
            }
        }

        await using var host = await StartAsync("stranded");
        var queue = (await StatusAsync(host)).Queues.Single(q => q.Queue == Queue);
        Assert.Equal((0L, 1L, 0L, (long)absurd.Count), (queue.Ready, queue.Scheduled, queue.InFlight, queue.Stranded));

        var history = await host.SendAndWaitAsync(new ConformanceCommand("beside-the-stranded"), timeout: TimeSpan.FromSeconds(5));
        Assert.Contains(history, h => h.What == "completed");
        Assert.Equal(absurd.Count, (await StatusAsync(host)).Queues.Single(q => q.Queue == Queue).Stranded);

        // A queue that holds nothing but a time beyond .NET's last tick waits until the end of time; it does not fail.
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            await transaction.EnqueueAsync(new OutgoingMessage("far", RawEnvelope("conformance.command@1", "{}"u8.ToArray()), DueAt: host.Options.TimeProvider.GetUtcNow().AddDays(1)), CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        await using (var connection = await OpenConnectionAsync(host.Store))
        {
            await using var update = connection.CreateCommand();
            update.CommandText = $"UPDATE {QueueTable} SET visible_at = @value WHERE queue = 'far'";
            AddParameter(update, "@value", long.MaxValue);
            Assert.Equal(1, await update.ExecuteNonQueryAsync());
        }

        Assert.Equal(DateTimeOffset.MaxValue, await host.Store.NextVisibleAtAsync("far", CancellationToken.None));
    }

    /// <summary>Visible-at values no consumer will reach that the store's column accepts; SQLite adds values that are not numbers.</summary>
    protected virtual IReadOnlyList<object> StrandedVisibleAts { get; } = PortableStrandedVisibleAts;

    /// <summary>Visible-at values no consumer will reach that every store's column accepts.</summary>
    protected static IReadOnlyList<object> PortableStrandedVisibleAts { get; } =
    [
        new DateTimeOffset(2300, 1, 1, 0, 0, 0, TimeSpan.Zero).UtcTicks,
        DateTimeOffset.MaxValue.UtcTicks,
        long.MaxValue,
    ];

    static void AddParameter(DbCommand command, string name, object value)
    {
        var parameter = command.CreateParameter();
        parameter.ParameterName = name;
        parameter.Value = value;
        command.Parameters.Add(parameter);
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

    /// <summary>
    /// The sequence-gap problem: a transaction that appends while another appending transaction is still open must
    /// not make a larger position visible before the smaller one commits, or a reader that checkpoints the larger
    /// position never sees the smaller. Either the second append waits for the first transaction, or its position
    /// is larger and visible only after it; in both cases a reader that moves its checkpoint misses nothing.
    /// </summary>
    [Fact]
    public async Task A_reader_never_skips_an_event_that_commits_after_a_later_position()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var store = host.Store;
        Envelope EventEnvelope(string label) => RawEnvelope("conformance.event", Encoding.UTF8.GetBytes($$"""{"label":"{{label}}"}"""));

        var first = await store.BeginAsync(CancellationToken.None);
        await first.AppendAsync("gap-a", null, [EventEnvelope("first")], CancellationToken.None);
        var second = Task.Run(() => InTransactionAsync(store, async t => await t.AppendAsync("gap-b", null, [EventEnvelope("second")], CancellationToken.None)));

        // A store without turns lets the second commit now; give it the chance before reading.
        await Task.WhenAny(second, Task.Delay(TimeSpan.FromMilliseconds(500)));
        var checkpoint = 0L;
        var seen = new List<LogEvent>();
        foreach (var e in await store.ReadLogAsync(checkpoint, 100, CancellationToken.None))
        {
            seen.Add(e);
            checkpoint = e.Position;
        }

        await first.CommitAsync(CancellationToken.None);
        await first.DisposeAsync();
        await second.WaitAsync(TimeSpan.FromSeconds(30));
        seen.AddRange(await store.ReadLogAsync(checkpoint, 100, CancellationToken.None));

        Assert.Equal(["gap-a", "gap-b"], seen.Select(e => e.Stream).Order());
        Assert.True(seen.Zip(seen.Skip(1)).All(pair => pair.First.Position < pair.Second.Position), "positions must rise in reading order");
    }

    /// <summary>Many appenders at once and a reader that checkpoints as it goes: the reader sees every event, in rising positions.</summary>
    [Fact]
    public async Task Concurrent_appenders_and_a_checkpointing_reader_lose_nothing()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var store = host.Store;
        const int appenders = 6;
        const int transactionsEach = 20;
        var appended = new System.Collections.Concurrent.ConcurrentBag<Guid>();
        var writers = Enumerable.Range(0, appenders).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < transactionsEach; i++)
            {
                await InTransactionAsync(store, async t =>
                {
                    var envelopes = Enumerable.Range(0, 1 + (i % 3)).Select(k => RawEnvelope("conformance.event", Encoding.UTF8.GetBytes($$"""{"label":"w{{w}}-{{i}}-{{k}}"}"""))).ToList();
                    await t.AppendAsync($"writer-{w}", null, envelopes, CancellationToken.None);

                    // More work after the append keeps transactions open across each other's appends.
                    await t.TryRecordInboxAsync("gap-probe", envelopes[0], CancellationToken.None);
                    envelopes.ForEach(e => appended.Add(e.MessageId));
                });
            }
        })).ToArray();

        var seen = new List<LogEvent>();
        var checkpoint = 0L;
        var writing = Task.WhenAll(writers);
        while (true)
        {
            var done = writing.IsCompleted;
            var read = await store.ReadLogAsync(checkpoint, 50, CancellationToken.None);
            foreach (var e in read)
            {
                Assert.True(e.Position > checkpoint, $"position {e.Position} after checkpoint {checkpoint}");
                seen.Add(e);
                checkpoint = e.Position;
            }

            if (done && read.Count == 0)
            {
                break;
            }

            await Task.Yield();
        }

        await writing;
        Assert.Equal(appended.Order(), seen.Select(e => e.Envelope.MessageId).Order());
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
        var parked = Assert.Single(await parking.Store.Queries().ListDeadLettersAsync("log:" + Group, 10, CancellationToken.None));
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
        var inserted = await transaction.Sagas().InsertSagaAsync(instance, CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
        return inserted;
    }

    static async Task<bool> UpdateSagaAsync(IMessageStore store, SagaInstance instance, long expectedVersion)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        var saved = await transaction.Sagas().UpdateSagaAsync(instance, expectedVersion, CancellationToken.None);
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
        var stored = await host.Store.SagaQueries().GetSagaAsync("saga-1", CancellationToken.None);

        Assert.True(insertedFirst);
        Assert.False(insertedSecond);
        Assert.NotNull(stored);
        Assert.Equal(1, first.ConcurrencyVersion);
        Assert.Equal(
            (first.Definition, first.Version, SagaState.Running, first.StepIndex, first.Awaiting, first.StepAttempt, first.Failure, 1L, first.StartedAt),
            (stored.Definition, stored.Version, stored.State, stored.StepIndex, stored.Awaiting, stored.StepAttempt, stored.Failure, stored.ConcurrencyVersion, stored.StartedAt));
        Assert.Equal(first.Steps, stored.Steps);
        Assert.Equal(first.Data.ToArray(), stored.Data.ToArray());
        Assert.Null(await host.Store.SagaQueries().GetSagaAsync("saga-2", CancellationToken.None));
    }

    /// <summary>The fields of a failed, stuck instance and its pending timeout read back as saved.</summary>
    [Fact]
    public async Task Saga_failure_stuck_and_timeout_fields_read_back_as_saved()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await InsertSagaAsync(host.Store, NewSaga("saga-stuck"));
        var instance = (await host.Store.SagaQueries().GetSagaAsync("saga-stuck", CancellationToken.None))!;
        Assert.Equal((null as string, null as string, null as string, null as Guid?, null as DateTimeOffset?, null as string),
            (instance.FailedStep, instance.LastError, instance.StuckReason, instance.TimeoutId, instance.TimeoutAt, instance.Queue));

        var timeoutId = Guid.NewGuid();
        var dueAt = new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero).AddTicks(1234567);
        instance.State = SagaState.Stuck;
        instance.Failure = "ship refused";
        instance.FailedStep = "ship";
        instance.LastError = "timed out";
        instance.StuckReason = "gave up";
        instance.TimeoutId = timeoutId;
        instance.TimeoutAt = dueAt;
        instance.Queue = "sagas.order";
        Assert.True(await UpdateSagaAsync(host.Store, instance, 1));
        var stored = (await host.Store.SagaQueries().GetSagaAsync("saga-stuck", CancellationToken.None))!;

        Assert.Equal((SagaState.Stuck, "ship refused", "ship", "timed out", "gave up", timeoutId, dueAt, "sagas.order"),
            (stored.State, stored.Failure, stored.FailedStep, stored.LastError, stored.StuckReason, stored.TimeoutId, stored.TimeoutAt, stored.Queue));
        Assert.Equal(["saga-stuck"], (await host.Store.SagaQueries().QuerySagasAsync(new SagaQuery { State = SagaState.Stuck }, CancellationToken.None)).Select(s => s.TransactionId));
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

    /// <summary>A save from a stale version is refused and leaves the stored instance as the winning save left it.</summary>
    [Fact]
    public async Task Saga_update_with_a_stale_expected_version_is_refused_and_leaves_the_row()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await InsertSagaAsync(host.Store, NewSaga("saga-1"));
        var winner = (await host.Store.SagaQueries().GetSagaAsync("saga-1", CancellationToken.None))!;
        var loser = (await host.Store.SagaQueries().GetSagaAsync("saga-1", CancellationToken.None))!;

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
        var stored = (await host.Store.SagaQueries().GetSagaAsync("saga-1", CancellationToken.None))!;

        Assert.True(winnerSaved);
        Assert.False(loserSaved);
        Assert.False(missingSaved);
        Assert.Equal(2, winner.ConcurrencyVersion);
        Assert.Equal(1, loser.ConcurrencyVersion);
        Assert.Equal((SagaState.Running, 1, winner.Awaiting, null as string, 2L), (stored.State, stored.StepIndex, stored.Awaiting, stored.Failure, stored.ConcurrencyVersion));
        Assert.Equal("{\"order\":\"winner\"}", Encoding.UTF8.GetString(stored.Data.Span));
        Assert.Null(await host.Store.SagaQueries().GetSagaAsync("saga-missing", CancellationToken.None));
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
            await committed.Sagas().AppendSagaLogAsync([new SagaLogEntry("saga-committed", at, SagaLogKinds.Started, null, null, null, "version 1")], CancellationToken.None);
            await committed.CommitAsync(CancellationToken.None);
        }

        SagaInstance? loaded;
        IReadOnlyList<SagaLogEntry> inTransaction;
        IReadOnlyList<SagaLogEntry> outside;
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            await transaction.Sagas().InsertSagaAsync(NewSaga("saga-rolled-back"), CancellationToken.None);
            await transaction.Sagas().AppendSagaLogAsync([new SagaLogEntry("saga-committed", at, SagaLogKinds.CommandSent, "reserve", Guid.NewGuid(), "shop.reserve@1", null)], CancellationToken.None);
            loaded = await transaction.Sagas().LoadSagaAsync("saga-rolled-back", CancellationToken.None);
            inTransaction = await transaction.Sagas().ReadSagaLogAsync("saga-committed", CancellationToken.None);
            outside = await host.Store.SagaQueries().ReadSagaLogAsync("saga-committed", CancellationToken.None);
        }

        Assert.NotNull(loaded);
        Assert.Equal([SagaLogKinds.Started, SagaLogKinds.CommandSent], inTransaction.Select(e => e.Kind));
        Assert.Equal([SagaLogKinds.Started], outside.Select(e => e.Kind));
        Assert.Null(await host.Store.SagaQueries().GetSagaAsync("saga-rolled-back", CancellationToken.None));
        Assert.Equal([SagaLogKinds.Started], (await host.Store.SagaQueries().ReadSagaLogAsync("saga-committed", CancellationToken.None)).Select(e => e.Kind));
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

        async Task<IEnumerable<string>> QueryAsync(SagaQuery query) => (await host.Store.SagaQueries().QuerySagasAsync(query, CancellationToken.None)).Select(i => i.TransactionId);

        Assert.Equal(["e", "d", "c", "b", "a"], await QueryAsync(new SagaQuery()));
        Assert.Equal(["e", "c", "a"], await QueryAsync(new SagaQuery { State = SagaState.Running }));
        Assert.Equal(["e", "c", "b", "a"], await QueryAsync(new SagaQuery { Definition = "order" }));
        Assert.Equal(["d", "b", "a"], await QueryAsync(new SagaQuery { Version = 1 }));
        Assert.Equal(["a"], await QueryAsync(new SagaQuery { Definition = "order", Version = 1, State = SagaState.Running }));
        Assert.Equal(["e", "d"], await QueryAsync(new SagaQuery { Max = 2 }));
        Assert.Empty(await QueryAsync(new SagaQuery { Definition = "nobody" }));

        var counts = await host.Store.SagaQueries().CountSagasAsync(CancellationToken.None);
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
            await transaction.Sagas().AppendSagaLogAsync(first, CancellationToken.None);
            await transaction.Sagas().AppendSagaLogAsync([new SagaLogEntry("saga-2", at, SagaLogKinds.Started, null, null, null, "other")], CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            await transaction.Sagas().AppendSagaLogAsync(second, CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        var log = await host.Store.SagaQueries().ReadSagaLogAsync("saga-1", CancellationToken.None);

        Assert.Equal(first.Concat(second).Select(e => (e.TransactionId, e.At, e.Kind, e.Step, e.MessageId, e.MessageType, e.Detail)), log.Select(e => (e.TransactionId, e.At, e.Kind, e.Step, e.MessageId, e.MessageType, e.Detail)));
        Assert.Equal(log.Select(e => e.Id).Order(), log.Select(e => e.Id));
        Assert.Equal(4, log.Select(e => e.Id).Distinct().Count());
        Assert.Single(await host.Store.SagaQueries().ReadSagaLogAsync("saga-2", CancellationToken.None));
        Assert.Empty(await host.Store.SagaQueries().ReadSagaLogAsync("saga-3", CancellationToken.None));
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

    Task<ConvergeTestHost> StartIdleAsync(FakeTimeProvider time, string storeName = "main") =>
        StartAsync(storeName, o => { o.RunConsumers = false; o.TimeProvider = time; });

    /// <summary>
    /// Records <see cref="Queue"/> as a job queue, as a job worker does when it starts (and a job client with a queue's
    /// first job). Job facts begin with it: a transport that keeps job queues in the store learns here that this one is.
    /// </summary>
    static Task StartJobQueueAsync(IMessageStore store) => InTransactionAsync(store, t => t.Jobs().RegisterJobQueueAsync(Queue, CancellationToken.None));

    static async Task<T> InTransactionAsync<T>(IMessageStore store, Func<IStoreTransaction, ValueTask<T>> work)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        var result = await work(transaction);
        await transaction.CommitAsync(CancellationToken.None);
        return result;
    }

    static async Task InTransactionAsync(IMessageStore store, Func<IStoreTransaction, ValueTask> work)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        await work(transaction);
        await transaction.CommitAsync(CancellationToken.None);
    }

    static string KeyOf(QueuedMessage message) => System.Text.Json.JsonDocument.Parse(message.Envelope.Body).RootElement.GetProperty("key").GetString()!;

    static Dictionary<string, string> InBatch(string batchId) => new() { [JobHeaders.Batch] = batchId };

    static Task<IReadOnlyList<QueuedMessage>> ClaimAsync(IMessageStore store, int max, ClaimPolicy policy, string queue = Queue) =>
        store.ClaimAsync(queue, max, TimeSpan.FromMinutes(5), policy, CancellationToken.None).AsTask();

    static OutgoingMessage Callback(string key, Guid id) => new("callbacks", new Envelope
    {
        MessageId = id,
        MessageType = "conformance.command@1",
        CorrelationId = "batch-callback",
        SentAt = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero),
        Headers = new Dictionary<string, string> { ["origin"] = "batch" },
        Body = Encoding.UTF8.GetBytes("{\"key\":\"" + key + "\"}"),
    }, Priority: 4);

    static JobBatchRecord NewBatch(string id, DateTimeOffset at) => new()
    {
        Id = id,
        Description = "conformance batch " + id,
        CreatedAt = at,
        OnSuccess = Callback("on-success", Guid.NewGuid()),
        OnComplete = Callback("on-complete", Guid.NewGuid()),
    };

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

    /// <summary>A unique key is held by the first job until it expires; meanwhile a second reservation learns the holder.</summary>
    [Fact]
    public async Task Unique_key_is_held_until_it_expires()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var (first, second, third, fourth) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        ValueTask<Guid?> ReserveAsync(IStoreTransaction t, string key, Guid job) => t.Jobs().TryReserveUniqueKeyAsync(key, job, time.GetUtcNow().AddHours(1), CancellationToken.None);

        var reserved = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:7", first));
        var held = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:7", second));
        var otherKey = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:8", second));
        time.Advance(TimeSpan.FromMinutes(59));
        var stillHeld = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:7", third));
        time.Advance(TimeSpan.FromMinutes(1));
        var afterExpiry = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:7", third));
        var heldAgain = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:7", fourth));
        Guid? rolledBack;
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            rolledBack = await ReserveAsync(transaction, "invoice:9", first);
        }

        var afterRollback = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:9", second));

        Assert.Null(reserved);
        Assert.Equal(first, held);
        Assert.Null(otherKey);
        Assert.Equal(first, stillHeld);
        Assert.Null(afterExpiry);
        Assert.Equal(third, heldAgain);
        Assert.Null(rolledBack);
        Assert.Null(afterRollback);
    }

    /// <summary>
    /// A batch counts its jobs and finishes once it is sealed and nothing is pending, reporting its failures once; a
    /// batch sealed empty finishes at once; a finished batch takes no more jobs and keeps its counts.
    /// </summary>
    [Fact]
    public async Task Batch_counts_its_jobs_and_finishes_once_sealed_with_nothing_pending()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var batch = NewBatch("month-close:2030-01", time.GetUtcNow());
        var store = host.Store;

        var created = await InTransactionAsync(store, t => t.Jobs().CreateBatchAsync(batch, CancellationToken.None));
        var createdAgain = await InTransactionAsync(store, t => t.Jobs().CreateBatchAsync(batch with { Description = "other" }, CancellationToken.None));
        await InTransactionAsync(store, t => t.Jobs().AddToBatchAsync(batch.Id, 3, CancellationToken.None));
        var sealedWithPending = await InTransactionAsync(store, t => t.Jobs().SealBatchAsync(batch.Id, CancellationToken.None));
        var twoSucceeded = await InTransactionAsync(store, t => t.Jobs().RecordBatchOutcomesAsync(batch.Id, 2, 0, CancellationToken.None));
        var running = await store.JobQueries().GetBatchAsync(batch.Id, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        var finished = await InTransactionAsync(store, t => t.Jobs().RecordBatchOutcomesAsync(batch.Id, 0, 1, CancellationToken.None));
        var late = await InTransactionAsync(store, t => t.Jobs().RecordBatchOutcomesAsync(batch.Id, 1, 0, CancellationToken.None));
        var stored = await store.JobQueries().GetBatchAsync(batch.Id, CancellationToken.None);

        Assert.True(created);
        Assert.False(createdAgain);
        Assert.Null(sealedWithPending);
        Assert.Null(twoSucceeded);
        Assert.Equal((3L, 1L, 2L, 0L, true, null as DateTimeOffset?), (running!.Total, running.Pending, running.Succeeded, running.Failed, running.Sealed, running.FinishedAt));
        Assert.NotNull(finished);
        Assert.Equal((3L, 0L, 2L, 1L, true, time.GetUtcNow()), (finished.Total, finished.Pending, finished.Succeeded, finished.Failed, finished.Sealed, finished.FinishedAt));
        Assert.Null(late);
        Assert.Equal((3L, 0L, 2L, 1L, time.GetUtcNow()), (stored!.Total, stored.Pending, stored.Succeeded, stored.Failed, stored.FinishedAt));
        Assert.Equal((batch.Description, batch.CreatedAt), (stored.Description, stored.CreatedAt));
        foreach (var (expected, actual) in new[] { (batch.OnSuccess!, stored.OnSuccess), (batch.OnComplete!, stored.OnComplete) })
        {
            Assert.NotNull(actual);
            Assert.Equal((expected.Queue, expected.Priority), (actual.Queue, actual.Priority));
            Assert.Equal((expected.Envelope.MessageId, expected.Envelope.MessageType, expected.Envelope.CorrelationId, expected.Envelope.SentAt), (actual.Envelope.MessageId, actual.Envelope.MessageType, actual.Envelope.CorrelationId, actual.Envelope.SentAt));
            Assert.Equal(expected.Envelope.Headers, actual.Envelope.Headers);
            Assert.Equal(expected.Envelope.Body.ToArray(), actual.Envelope.Body.ToArray());
        }

        var empty = new JobBatchRecord { Id = "empty", CreatedAt = time.GetUtcNow() };
        await InTransactionAsync(store, t => t.Jobs().CreateBatchAsync(empty, CancellationToken.None));
        var emptySealed = await InTransactionAsync(store, t => t.Jobs().SealBatchAsync(empty.Id, CancellationToken.None));
        var sealedAgain = await InTransactionAsync(store, t => t.Jobs().SealBatchAsync(empty.Id, CancellationToken.None));

        Assert.NotNull(emptySealed);
        Assert.Equal((0L, 0L, 0L, (OutgoingMessage?)null, (OutgoingMessage?)null), (emptySealed.Total, emptySealed.Failed, emptySealed.Succeeded, emptySealed.OnSuccess, emptySealed.OnComplete));
        Assert.Null(sealedAgain);
        await Assert.ThrowsAsync<InvalidOperationException>(() => InTransactionAsync(store, t => t.Jobs().AddToBatchAsync(batch.Id, 1, CancellationToken.None)));
        await Assert.ThrowsAsync<InvalidOperationException>(() => InTransactionAsync(store, t => t.Jobs().AddToBatchAsync("no-such-batch", 1, CancellationToken.None)));
        Assert.Equal(3, (await store.JobQueries().GetBatchAsync(batch.Id, CancellationToken.None))!.Total);
        Assert.Null(await store.JobQueries().GetBatchAsync("no-such-batch", CancellationToken.None));
    }

    /// <summary>
    /// Retrying a dead job of a running batch takes its failure back (pending again); once the batch finished, a retry
    /// leaves its counts as they ended.
    /// </summary>
    [Fact]
    public async Task Retrying_a_dead_job_reopens_its_count_in_an_unfinished_batch()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        foreach (var id in new[] { "open", "closed" })
        {
            await InTransactionAsync(store, t => t.Jobs().CreateBatchAsync(NewBatch(id, time.GetUtcNow()), CancellationToken.None));
            await InTransactionAsync(store, t => t.Jobs().AddToBatchAsync(id, 1, CancellationToken.None));
            await host.Bus.SendAsync(new ConformanceCommand("job-of-" + id), new SendOptions { Headers = InBatch(id) });
        }

        await InTransactionAsync(store, t => t.Jobs().SealBatchAsync("closed", CancellationToken.None));

        // A claim may return fewer than are waiting (a transport delivers them as its relay moves them): claim on.
        var claimed = new List<QueuedMessage>();
        await WaitForAsync(async () =>
        {
            claimed.AddRange(await store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None));
            return claimed.Count >= 2;
        });
        foreach (var message in claimed)
        {
            await InTransactionAsync(store, async t =>
            {
                await t.DeadLetterAsync(message, DeadLetterReasons.PermanentFailure, "System.InvalidOperationException: no", null, CancellationToken.None);
                await t.Jobs().RecordBatchOutcomesAsync(message.Envelope.Headers[JobHeaders.Batch], 0, 1, CancellationToken.None);
            });
        }

        var letters = await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None);
        foreach (var letter in letters)
        {
            Assert.True(await store.RetryDeadLetterAsync(letter.Id, CancellationToken.None));
        }

        var open = (await store.JobQueries().GetBatchAsync("open", CancellationToken.None))!;
        var closed = (await store.JobQueries().GetBatchAsync("closed", CancellationToken.None))!;
        var retried = new List<QueuedMessage>();
        await WaitForAsync(async () =>
        {
            retried.AddRange(await store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None));
            return retried.Count >= 2;
        });
        var retriedOpen = retried.Single(m => KeyOf(m) == "job-of-open");
        await InTransactionAsync(store, async t =>
        {
            await t.CompleteAsync(retriedOpen, CancellationToken.None);
            await t.Jobs().RecordBatchOutcomesAsync("open", 1, 0, CancellationToken.None);
        });
        var finished = await InTransactionAsync(store, t => t.Jobs().SealBatchAsync("open", CancellationToken.None));

        Assert.Equal(2, letters.Count);
        Assert.Equal((1L, 1L, 0L, 0L), (open.Total, open.Pending, open.Succeeded, open.Failed));
        Assert.Equal((1L, 0L, 0L, 1L), (closed.Total, closed.Pending, closed.Succeeded, closed.Failed));
        Assert.NotNull(closed.FinishedAt);
        Assert.Equal(2, retried.Count);
        Assert.NotNull(finished);
        Assert.Equal((1L, 0L, 1L, 0L), (finished.Total, finished.Pending, finished.Succeeded, finished.Failed));
    }

    /// <summary>
    /// A recurring schedule keeps where it stands when stored again with the same cron and time zone, restarts when
    /// either changes, advances only from where it was expected to be, and is due once its next occurrence has come.
    /// </summary>
    [Fact]
    public async Task Recurring_schedule_upsert_advance_due_and_remove()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var t0 = time.GetUtcNow();
        var nightly = new RecurringJobRecord
        {
            Name = "nightly",
            Cron = "0 2 * * *",
            TimeZone = "UTC",
            Queue = Queue,
            MessageType = "conformance.command@1",
            Body = "{\"key\":\"nightly\"}"u8.ToArray(),
            Priority = 1,
            Misfire = MisfirePolicy.Skip,
            NextAt = t0.AddHours(2),
        };
        var hourly = nightly with { Name = "hourly", Cron = "0 * * * *", Misfire = MisfirePolicy.RunOnce, NextAt = t0.AddHours(1) };

        await InTransactionAsync(store, t => t.Jobs().UpsertRecurringJobAsync(nightly, CancellationToken.None));
        await InTransactionAsync(store, t => t.Jobs().UpsertRecurringJobAsync(hourly, CancellationToken.None));
        var dueBefore = await InTransactionAsync(store, t => t.Jobs().LoadDueRecurringJobsAsync(t0.AddMinutes(59), CancellationToken.None));
        var dueAtOne = await InTransactionAsync(store, t => t.Jobs().LoadDueRecurringJobsAsync(t0.AddHours(1), CancellationToken.None));
        var dueAtTwo = await InTransactionAsync(store, t => t.Jobs().LoadDueRecurringJobsAsync(t0.AddHours(2), CancellationToken.None));
        var advanced = await InTransactionAsync(store, t => t.Jobs().AdvanceRecurringJobAsync("nightly", t0.AddHours(2), t0.AddHours(26), t0.AddHours(2), CancellationToken.None));
        var advancedAgain = await InTransactionAsync(store, t => t.Jobs().AdvanceRecurringJobAsync("nightly", t0.AddHours(2), t0.AddHours(50), t0.AddHours(26), CancellationToken.None));
        await InTransactionAsync(store, t => t.Jobs().UpsertRecurringJobAsync(nightly with { Priority = 7, Body = "{\"key\":\"v2\"}"u8.ToArray(), NextAt = t0.AddHours(3) }, CancellationToken.None));
        var sameCron = (await store.JobQueries().ListRecurringJobsAsync(CancellationToken.None)).Single(r => r.Name == "nightly");
        await InTransactionAsync(store, t => t.Jobs().UpsertRecurringJobAsync(nightly with { Cron = "0 3 * * *", NextAt = t0.AddHours(3) }, CancellationToken.None));
        var newCron = (await store.JobQueries().ListRecurringJobsAsync(CancellationToken.None)).Single(r => r.Name == "nightly");
        await InTransactionAsync(store, t => t.Jobs().UpsertRecurringJobAsync(nightly with { Cron = "0 3 * * *", TimeZone = "Europe/Paris", NextAt = t0.AddHours(4) }, CancellationToken.None));
        var newZone = (await store.JobQueries().ListRecurringJobsAsync(CancellationToken.None)).Single(r => r.Name == "nightly");
        var removed = await InTransactionAsync(store, t => t.Jobs().RemoveRecurringJobAsync("hourly", CancellationToken.None));
        var removedAgain = await InTransactionAsync(store, t => t.Jobs().RemoveRecurringJobAsync("hourly", CancellationToken.None));

        Assert.Empty(dueBefore);
        Assert.Equal(["hourly"], dueAtOne.Select(r => r.Name));
        Assert.Equal(["hourly", "nightly"], dueAtTwo.Select(r => r.Name));
        var loaded = dueAtTwo.Single(r => r.Name == "nightly");
        Assert.Equal((nightly.Cron, nightly.TimeZone, nightly.Queue, nightly.MessageType, nightly.Priority, MisfirePolicy.Skip, nightly.NextAt, null as DateTimeOffset?), (loaded.Cron, loaded.TimeZone, loaded.Queue, loaded.MessageType, loaded.Priority, loaded.Misfire, loaded.NextAt, loaded.LastAt));
        Assert.Equal(nightly.Body.ToArray(), loaded.Body.ToArray());
        Assert.Equal(MisfirePolicy.RunOnce, dueAtTwo.Single(r => r.Name == "hourly").Misfire);
        Assert.True(advanced);
        Assert.False(advancedAgain);
        Assert.Equal((t0.AddHours(26), (DateTimeOffset?)t0.AddHours(2), 7), (sameCron.NextAt, sameCron.LastAt, sameCron.Priority));
        Assert.Equal("{\"key\":\"v2\"}", Encoding.UTF8.GetString(sameCron.Body.Span));
        Assert.Equal(("0 3 * * *", t0.AddHours(3)), (newCron.Cron, newCron.NextAt));
        Assert.Equal(("Europe/Paris", t0.AddHours(4)), (newZone.TimeZone, newZone.NextAt));
        Assert.True(removed);
        Assert.False(removedAgain);
        Assert.Equal(["nightly"], (await store.JobQueries().ListRecurringJobsAsync(CancellationToken.None)).Select(r => r.Name));
    }

    /// <summary>
    /// Cancelling a waiting job moves it to the dead letters as cancelled and counts it as failed in its batch, which
    /// then finishes and enqueues its completion callback only; a cancelled job cannot be cancelled again.
    /// </summary>
    [Fact]
    public async Task Cancelling_a_waiting_job_dead_letters_it_and_counts_it_failed_in_its_batch()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var batch = NewBatch("cancel-me", time.GetUtcNow());
        await CreateSealedBatchOfOneAsync(store, batch);
        var job = await host.Bus.SendAsync(new ConformanceCommand("waiting"), new SendOptions { Headers = InBatch(batch.Id), Delay = TimeSpan.FromMinutes(10) });

        var outcome = await store.Jobs().CancelJobAsync(job, CancellationToken.None);
        var again = await store.Jobs().CancelJobAsync(job, CancellationToken.None);
        var unknown = await store.Jobs().CancelJobAsync(Guid.NewGuid(), CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(10));

        Assert.Equal(JobCancelOutcome.Cancelled, outcome);
        Assert.Equal(JobCancelOutcome.NotFound, again);
        Assert.Equal(JobCancelOutcome.NotFound, unknown);
        Assert.Empty(await store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None));
        var letter = Assert.Single(await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Equal((job, DeadLetterReasons.Cancelled), (letter.Envelope.MessageId, letter.Reason));
        var info = await store.JobQueries().GetJobAsync(job, CancellationToken.None);
        Assert.Equal((JobState.Cancelled, (long?)letter.Id, batch.Id), (info!.State, info.DeadLetterId, info.BatchId));
        await AssertFinishedWithOneFailureAndCalledBackAsync(store, batch);
    }

    /// <summary>Creates <paramref name="batch"/> with one job to come and seals it.</summary>
    static async Task CreateSealedBatchOfOneAsync(IMessageStore store, JobBatchRecord batch)
    {
        await InTransactionAsync(store, t => t.Jobs().CreateBatchAsync(batch, CancellationToken.None));
        await InTransactionAsync(store, t => t.Jobs().AddToBatchAsync(batch.Id, 1, CancellationToken.None));
        await InTransactionAsync(store, t => t.Jobs().SealBatchAsync(batch.Id, CancellationToken.None));
    }

    /// <summary>Asserts that <paramref name="batch"/> finished with its one job failed and enqueued its callback.</summary>
    static async Task AssertFinishedWithOneFailureAndCalledBackAsync(IMessageStore store, JobBatchRecord batch)
    {
        var finished = (await store.JobQueries().GetBatchAsync(batch.Id, CancellationToken.None))!;
        Assert.Equal((0L, 0L, 1L), (finished.Pending, finished.Succeeded, finished.Failed));
        Assert.NotNull(finished.FinishedAt);
        var callback = Assert.Single(await store.ClaimAsync("callbacks", 10, TimeSpan.FromMinutes(5), CancellationToken.None));
        Assert.Equal(batch.OnComplete!.Envelope.MessageId, callback.Envelope.MessageId);
    }

    /// <summary>
    /// A job whose row cannot be decoded leaves the queue at its claim, dead-lettered as invalid-row beside the claim's
    /// good rows, and counts as failed in its batch (read from its headers), which finishes and enqueues its callback.
    /// </summary>
    [Fact]
    public virtual async Task Job_row_that_cannot_be_decoded_is_dead_lettered_at_its_claim_and_counted_failed_in_its_batch()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var batch = NewBatch("spoiled", time.GetUtcNow());
        await CreateSealedBatchOfOneAsync(store, batch);
        var before = await host.Bus.SendAsync(new ConformanceCommand("before"));
        var job = await host.Bus.SendAsync(new ConformanceCommand("spoiled"), new SendOptions { Headers = InBatch(batch.Id) });
        var after = await host.Bus.SendAsync(new ConformanceCommand("after"));
        await using (var connection = await OpenConnectionAsync(store))
        {
            await using var spoil = connection.CreateCommand();
            spoil.CommandText = $"UPDATE {QueueTable} SET sent_at = -5, history = '[null]' WHERE id = (SELECT min(id) + 1 FROM {QueueTable})";
            Assert.Equal(1, await spoil.ExecuteNonQueryAsync());
        }

        var claimed = await store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None);

        Assert.Equal([before, after], claimed.Select(m => m.Envelope.MessageId));
        var letter = Assert.Single(await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Equal((job, DeadLetterReasons.InvalidRow, 1), (letter.Envelope.MessageId, letter.Reason, letter.Attempts));
        Assert.Equal(("-5", "[null]", batch.Id), (letter.Envelope.Headers["converge-raw-sent_at"], letter.Envelope.Headers["converge-raw-history"], letter.Envelope.Headers[JobHeaders.Batch]));
        Assert.Contains("sent_at: ArgumentOutOfRangeException", letter.Exception, StringComparison.Ordinal);
        Assert.Contains("history: JsonException", letter.Exception, StringComparison.Ordinal);
        await AssertFinishedWithOneFailureAndCalledBackAsync(store, batch);
    }

    /// <summary>
    /// A waiting job whose row cannot be decoded is still listed and looked up (with what could be read), and
    /// cancelling it leaves a dead letter that reads back, rather than fail every job listing.
    /// </summary>
    [Fact]
    public virtual async Task Job_row_that_cannot_be_decoded_is_listed_looked_up_and_cancelled()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        await StartJobQueueAsync(store);
        var job = await host.Bus.SendAsync(new ConformanceCommand("waiting"), new SendOptions { Delay = TimeSpan.FromMinutes(10) });
        await using (var connection = await OpenConnectionAsync(store))
        {
            await using var spoil = connection.CreateCommand();
            spoil.CommandText = $"UPDATE {QueueTable} SET as_of = -7, history = '[null]', headers = '{{\"a\":1}}'";
            Assert.Equal(1, await spoil.ExecuteNonQueryAsync());
        }

        var listed = Assert.Single(await store.JobQueries().ListJobsAsync(new JobQuery { Queue = Queue }, CancellationToken.None));
        var found = await store.JobQueries().GetJobAsync(job, CancellationToken.None);
        var outcome = await store.Jobs().CancelJobAsync(job, CancellationToken.None);

        Assert.Equal((job, JobState.Scheduled), (listed.Id, listed.State));
        Assert.Equal(("-7", "[null]", "{\"a\":1}"), (listed.Headers["converge-raw-as_of"], listed.Headers["converge-raw-history"], listed.Headers["converge-raw-headers"]));
        Assert.Equal(job, found!.Id);
        Assert.Equal(JobCancelOutcome.Cancelled, outcome);
        var letter = Assert.Single(await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Equal((job, DeadLetterReasons.Cancelled), (letter.Envelope.MessageId, letter.Reason));
        Assert.Equal("-7", letter.Envelope.Headers["converge-raw-as_of"]);
    }

    /// <summary>Cancelling a running job leaves it with its worker and flags it; the flag is read back until it is forgotten.</summary>
    [Fact]
    public async Task Cancelling_a_running_job_flags_it_for_its_worker()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        await StartJobQueueAsync(store);
        var running = await host.Bus.SendAsync(new ConformanceCommand("running"));
        var other = await host.Bus.SendAsync(new ConformanceCommand("other"));
        var claimed = await store.ClaimAsync(Queue, 1, TimeSpan.FromMinutes(5), CancellationToken.None);

        var outcome = await store.Jobs().CancelJobAsync(running, CancellationToken.None);
        var flagged = await store.Jobs().ReadCancellationsAsync([running, other], CancellationToken.None);
        var state = (await store.JobQueries().GetJobAsync(running, CancellationToken.None))!.State;
        await InTransactionAsync(store, t => t.Jobs().ForgetJobStateAsync([running], CancellationToken.None));
        var forgotten = await store.Jobs().ReadCancellationsAsync([running, other], CancellationToken.None);

        Assert.Equal(running, Assert.Single(claimed).Envelope.MessageId);
        Assert.Equal(JobCancelOutcome.Requested, outcome);
        Assert.Equal([running], flagged);
        Assert.Equal(JobState.Processing, state);
        Assert.Empty(forgotten);
        Assert.Empty(await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Empty(await store.Jobs().ReadCancellationsAsync([], CancellationToken.None));
    }

    /// <summary>Progress reported by a running job is read back with the job, the latest report winning, until it is forgotten.</summary>
    [Fact]
    public async Task Job_progress_is_saved_and_read_back_with_the_job()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var job = await host.Bus.SendAsync(new ConformanceCommand("progressing"));
        await InTransactionAsync(store, t => t.Jobs().RegisterJobQueueAsync(Queue, CancellationToken.None));
        await store.ClaimAsync(Queue, 1, TimeSpan.FromMinutes(5), CancellationToken.None);

        var before = await store.JobQueries().GetJobAsync(job, CancellationToken.None);
        await store.Jobs().SaveJobProgressAsync(job, 40, "400 of 1000 invoices", CancellationToken.None);
        var first = await store.JobQueries().GetJobAsync(job, CancellationToken.None);
        await store.Jobs().SaveJobProgressAsync(job, 80, null, CancellationToken.None);
        var second = await store.JobQueries().GetJobAsync(job, CancellationToken.None);
        var listed = Assert.Single(await store.JobQueries().ListJobsAsync(new JobQuery { Queue = Queue }, CancellationToken.None));
        await InTransactionAsync(store, t => t.Jobs().ForgetJobStateAsync([job], CancellationToken.None));
        var forgotten = await store.JobQueries().GetJobAsync(job, CancellationToken.None);

        Assert.Equal((null as int?, null as string), (before!.Progress, before.ProgressNote));
        Assert.Equal((40 as int?, "400 of 1000 invoices"), (first!.Progress, first.ProgressNote));
        Assert.Equal((80 as int?, null as string), (second!.Progress, second.ProgressNote));
        Assert.Equal(80, listed.Progress);
        Assert.Null(forgotten!.Progress);
    }

    /// <summary>
    /// A job reads back in every state: scheduled, enqueued, processing, scheduled again after a failure (with the
    /// error), succeeded (from the inbox), and dead (with its reason and dead-letter id); an unknown id is null.
    /// </summary>
    [Fact]
    public async Task Job_reads_back_through_its_states()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        await StartJobQueueAsync(store);
        var t0 = time.GetUtcNow();
        var asOf = t0.AddMinutes(-1);
        var job = await host.Bus.SendAsync(new ConformanceCommand("states"), new SendOptions
        {
            Delay = TimeSpan.FromMinutes(5),
            Priority = 3,
            CorrelationId = "close-2030-01",
            AsOf = asOf,
            Headers = InBatch("b-states"),
        });
        Task<JobInfo?> GetAsync(Guid id) => store.JobQueries().GetJobAsync(id, CancellationToken.None).AsTask();

        var scheduled = (await GetAsync(job))!;
        time.Advance(TimeSpan.FromMinutes(5));
        var enqueued = (await GetAsync(job))!;
        var claimed = Assert.Single(await store.ClaimAsync(Queue, 1, TimeSpan.FromSeconds(30), CancellationToken.None));
        var processing = (await GetAsync(job))!;
        var failure = new AttemptRecord(1, time.GetUtcNow(), "System.TimeoutException: the ledger did not answer");
        await InTransactionAsync(store, t => t.RetryLaterAsync(claimed, time.GetUtcNow().AddMinutes(1), failure, CancellationToken.None));
        var retrying = (await GetAsync(job))!;
        time.Advance(TimeSpan.FromMinutes(1));
        var again = Assert.Single(await store.ClaimAsync(Queue, 1, TimeSpan.FromSeconds(30), CancellationToken.None));
        time.Advance(TimeSpan.FromSeconds(5));
        await InTransactionAsync(store, async t =>
        {
            await t.TryRecordInboxAsync(Queue, again.Envelope, CancellationToken.None);
            await t.CompleteAsync(again, CancellationToken.None);
        });
        var succeeded = (await GetAsync(job))!;

        var doomed = await host.Bus.SendAsync(new ConformanceCommand("doomed"));
        var doomedClaim = Assert.Single(await store.ClaimAsync(Queue, 1, TimeSpan.FromSeconds(30), CancellationToken.None));
        await InTransactionAsync(store, t => t.DeadLetterAsync(doomedClaim, DeadLetterReasons.PermanentFailure, "System.InvalidOperationException: no such customer\n   at Billing.Charge()", null, CancellationToken.None));
        var dead = (await GetAsync(doomed))!;

        Assert.Equal((job, Queue, "conformance.command@1", JobState.Scheduled, "close-2030-01", (DateTimeOffset?)t0.AddMinutes(5), 3, 0, "b-states"),
            (scheduled.Id, scheduled.Queue, scheduled.Type, scheduled.State, scheduled.CorrelationId, scheduled.DueAt, scheduled.Priority, scheduled.Attempts, scheduled.BatchId));
        Assert.Equal((t0, (DateTimeOffset?)asOf, null as DateTimeOffset?), (scheduled.EnqueuedAt, scheduled.AsOf, scheduled.FinishedAt));
        Assert.Equal("states", System.Text.Json.JsonDocument.Parse(scheduled.Body!.Value).RootElement.GetProperty("key").GetString());
        Assert.Equal("b-states", scheduled.Headers[JobHeaders.Batch]);
        Assert.Equal(JobState.Enqueued, enqueued.State);
        Assert.Equal((JobState.Processing, 1, (DateTimeOffset?)t0.AddMinutes(5).AddSeconds(30)), (processing.State, processing.Attempts, processing.DueAt));
        Assert.Equal((JobState.Scheduled, failure.Error), (retrying.State, retrying.Error));
        Assert.Equal([failure], retrying.History);
        Assert.Equal((job, Queue, "conformance.command@1", JobState.Succeeded, "close-2030-01", (DateTimeOffset?)time.GetUtcNow()),
            (succeeded.Id, succeeded.Queue, succeeded.Type, succeeded.State, succeeded.CorrelationId, succeeded.FinishedAt));
        Assert.Null(succeeded.Body);
        Assert.Equal((JobState.Dead, Queue, "permanent-failure", (DateTimeOffset?)time.GetUtcNow(), 1),
            (dead.State, dead.Queue, dead.Error, dead.FinishedAt, dead.Attempts));
        Assert.Equal(Assert.Single(await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Id, dead.DeadLetterId);
        Assert.Null(await GetAsync(Guid.NewGuid()));
    }

    /// <summary>Jobs are listed newest first across the queue, the inbox and the dead letters, filtered by queue, state and batch.</summary>
    [Fact]
    public async Task Jobs_are_listed_newest_first_by_queue_state_and_batch()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        await StartJobQueueAsync(store);
        async Task<Guid> SendAsync(string key, SendOptions? options = null)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            return await host.Bus.SendAsync(new ConformanceCommand(key), options ?? new SendOptions());
        }

        var succeeded = await SendAsync("succeeded");
        var handled = Assert.Single(await store.ClaimAsync(Queue, 1, TimeSpan.FromMinutes(5), CancellationToken.None));
        await InTransactionAsync(store, async t =>
        {
            await t.TryRecordInboxAsync(Queue, handled.Envelope, CancellationToken.None);
            await t.CompleteAsync(handled, CancellationToken.None);
        });
        var dead = await SendAsync("dead", new SendOptions { Headers = InBatch("b") });
        var doomed = Assert.Single(await store.ClaimAsync(Queue, 1, TimeSpan.FromMinutes(5), CancellationToken.None));
        await InTransactionAsync(store, t => t.DeadLetterAsync(doomed, DeadLetterReasons.MaxAttemptsExceeded, null, null, CancellationToken.None));
        var cancelled = await SendAsync("cancelled", new SendOptions { Headers = InBatch("b") });
        await store.Jobs().CancelJobAsync(cancelled, CancellationToken.None);
        var processing = await SendAsync("processing", new SendOptions { Headers = InBatch("b") });
        await store.ClaimAsync(Queue, 1, TimeSpan.FromMinutes(5), CancellationToken.None);
        var enqueued = await SendAsync("enqueued");
        var scheduled = await SendAsync("scheduled", new SendOptions { Delay = TimeSpan.FromHours(1), Headers = InBatch("b") });
        var elsewhere = await SendAsync("elsewhere", new SendOptions { Queue = "reports" });
        await SendAsync("not a job", new SendOptions { Queue = "plain-messages" });
        await InTransactionAsync(store, async t =>
        {
            await t.Jobs().RegisterJobQueueAsync(Queue, CancellationToken.None);
            await t.Jobs().RegisterJobQueueAsync("reports", CancellationToken.None);
            await t.Jobs().RegisterJobQueueAsync("reports", CancellationToken.None);
        });

        async Task<IEnumerable<Guid>> ListAsync(JobQuery query) => (await store.JobQueries().ListJobsAsync(query, CancellationToken.None)).Select(j => j.Id);

        Assert.Equal([elsewhere, scheduled, enqueued, processing, cancelled, dead, succeeded], await ListAsync(new JobQuery()));
        Assert.Equal([scheduled, enqueued, processing, cancelled, dead, succeeded], await ListAsync(new JobQuery { Queue = Queue }));
        Assert.Equal([elsewhere], await ListAsync(new JobQuery { Queue = "reports" }));
        Assert.Equal([scheduled], await ListAsync(new JobQuery { State = JobState.Scheduled }));
        Assert.Equal([elsewhere, enqueued], await ListAsync(new JobQuery { State = JobState.Enqueued }));
        Assert.Equal([processing], await ListAsync(new JobQuery { State = JobState.Processing }));
        Assert.Equal([succeeded], await ListAsync(new JobQuery { State = JobState.Succeeded }));
        Assert.Equal([dead], await ListAsync(new JobQuery { State = JobState.Dead }));
        Assert.Equal([cancelled], await ListAsync(new JobQuery { State = JobState.Cancelled }));
        Assert.Equal([scheduled, processing, cancelled, dead], await ListAsync(new JobQuery { BatchId = "b" }));
        Assert.Equal([cancelled], await ListAsync(new JobQuery { BatchId = "b", Queue = Queue, State = JobState.Cancelled }));
        Assert.Equal([scheduled, processing], await ListAsync(new JobQuery { BatchId = "b", Max = 2 }));
        Assert.Empty(await ListAsync(new JobQuery { BatchId = "b", State = JobState.Enqueued }));
        Assert.Equal([elsewhere, scheduled], await ListAsync(new JobQuery { Max = 2 }));
        Assert.Empty(await ListAsync(new JobQuery { Max = 0 }));
    }

    /// <summary>A read connection sees what handlers committed and refuses writes.</summary>
    [Fact]
    public virtual async Task Read_connection_sees_committed_effects_and_refuses_writes()
    {
        await using var host = await StartAsync();
        await host.SendAndWaitAsync(new ConformanceCommand("read-back"));

        await using var connection = await host.Store.Database().OpenReadConnectionAsync(CancellationToken.None);
        var count = await Effects.CountAsync(connection, "read-back");

        Assert.Equal(1, count);
        await Assert.ThrowsAnyAsync<DbException>(async () =>
        {
            await using var transaction = await connection.BeginTransactionAsync();
            await Effects.WriteAsync(transaction, Guid.NewGuid(), Queue, "sneaked-in", CancellationToken.None);
            await transaction.CommitAsync();
        });
        Assert.Equal(1, await CountEffectsAsync(host));
    }

    /// <summary>Awaits <paramref name="condition"/>, checking again after short pauses, failing after 30 seconds.</summary>
    protected static async Task WaitForAsync(Func<Task<bool>> condition, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var deadline = WallClock.Instance.GetTimestamp() + (long)((timeout ?? TimeSpan.FromSeconds(30)).TotalSeconds * WallClock.Instance.TimestampFrequency);
        while (!await condition())
        {
            if (WallClock.Instance.GetTimestamp() > deadline)
            {
                throw new TimeoutException("The awaited condition did not become true in time.");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(10));
        }
    }

    static async Task<DeadLetter> WaitForDeadLetterAsync(ConvergeTestHost host)
    {
        await WaitForAsync(async () => (await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Count > 0);
        return (await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None))[0];
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
