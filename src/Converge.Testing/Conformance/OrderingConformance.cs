using System.Collections.Concurrent;
using System.Data.Common;
using System.Globalization;
using System.Runtime.CompilerServices;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing.InMemory;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>A keyed command whose <see cref="Behavior"/> tells the ordered handler what to do.</summary>
/// <param name="Key">The ordering key it is sent with, written to the ordered effect row.</param>
/// <param name="Sequence">Its place in the key's send order, 1-based.</param>
/// <param name="Behavior">
/// <c>ok</c>; <c>fail-N</c> (fail the first N attempts, retryable); <c>hold</c> (fail for good until
/// <see cref="OrderedCommandHandler.Release"/> lets the key through, so it is dead-lettered and handled when retried).
/// </param>
public sealed record OrderedCommand(string Key, int Sequence, string Behavior = "ok");

/// <summary>Writes one ordered effect row in the message's transaction, then fails if told to (rolling the row back).</summary>
public sealed class OrderedCommandHandler : IHandler<OrderedCommand>
{
    static readonly ConcurrentDictionary<string, bool> Released = new(StringComparer.Ordinal);

    /// <summary>Lets the <c>hold</c> messages of <paramref name="key"/> succeed from now on (keys are unique per test).</summary>
    public static void Release(string key) => Released[key] = true;

    /// <inheritdoc />
    public async Task HandleAsync(OrderedCommand message, MessageContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(context);
        await OrderedEffects.WriteAsync(context, message.Key, message.Sequence, cancellationToken);
        switch (message.Behavior)
        {
            case "hold" when !Released.ContainsKey(message.Key):
                throw new HandlerFailureException($"{message.Key} #{message.Sequence} is refused until released", nonRetryable: true);
            case var failN when failN.StartsWith("fail-", StringComparison.Ordinal) && context.Attempt <= int.Parse(failN[5..], CultureInfo.InvariantCulture):
                throw new TimeoutException($"attempt {context.Attempt} of {message.Key} #{message.Sequence} fails");
        }
    }
}

/// <summary>One handled keyed message as the ordered effect table recorded it.</summary>
/// <param name="Key">The ordering key.</param>
/// <param name="Sequence">Its place in the key's send order.</param>
/// <param name="Handled">The how-many-th message of its key it was to commit, 1-based.</param>
public sealed record OrderedEffect(string Key, int Sequence, int Handled);

/// <summary>
/// The durable record of keyed handling, in plain SQL every store's database accepts: each handled message writes its key,
/// its sequence and how many of its key were handled before it plus one, in its own transaction. Handled one at a time, a
/// key's rows number 1, 2, 3...; handled out of order, the sequences do not rise; handled at once, two rows share a number.
/// </summary>
public static class OrderedEffects
{
    static readonly ConditionalWeakTable<IMessageStore, List<(string Key, int Sequence, long Stamp)>> Committed = new();
    static long _stamp;

    /// <summary>
    /// Records the handled message in its transaction: a row on a database store; on the in-memory store, an effect kept
    /// when the transaction commits. Its place among its key's effects is stamped while the handler runs: the in-memory
    /// store has one writer at a time from begin to commit, so that order is the commit order, whatever order the
    /// commit callbacks of two transactions then run in.
    /// </summary>
    public static async Task WriteAsync(MessageContext context, string key, int sequence, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Transaction is InMemoryStoreTransaction memory)
        {
            var effects = Committed.GetOrCreateValue(memory.Store);
            var stamp = Interlocked.Increment(ref _stamp);
            memory.OnCommitted(() =>
            {
                lock (effects)
                {
                    effects.Add((key, sequence, stamp));
                }
            });
            return;
        }

        await WriteAsync(await context.GetTransactionAsync(cancellationToken), context.MessageId, key, sequence, cancellationToken);
    }

    /// <summary>
    /// The effects committed on an in-memory <paramref name="store"/>, optionally of keys starting with
    /// <paramref name="keyPrefix"/>, each numbered by its place in its key's commit order.
    /// </summary>
    public static IReadOnlyList<OrderedEffect> CommittedOn(IMessageStore store, string? keyPrefix = null)
    {
        if (!Committed.TryGetValue(store, out var effects))
        {
            return [];
        }

        lock (effects)
        {
            return [.. effects
                .Where(e => keyPrefix is null || e.Key.StartsWith(keyPrefix, StringComparison.Ordinal))
                .GroupBy(e => e.Key, StringComparer.Ordinal)
                .SelectMany(key => key.OrderBy(e => e.Stamp).Select((e, i) => new OrderedEffect(e.Key, e.Sequence, i + 1)))];
        }
    }

    /// <summary>The table's DDL.</summary>
    public const string CreateTable = "CREATE TABLE IF NOT EXISTS conformance_ordered (item_key VARCHAR(300) NOT NULL, sequence INTEGER NOT NULL, handled INTEGER NOT NULL, message_id VARCHAR(64) NOT NULL)";

    /// <summary>Creates the table on <paramref name="connection"/> when it does not exist.</summary>
    public static async Task CreateAsync(DbConnection connection, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        await using var command = connection.CreateCommand();
        command.CommandText = CreateTable;
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>Records that the message of <paramref name="key"/> at <paramref name="sequence"/> was handled, inside <paramref name="transaction"/>.</summary>
    public static async Task WriteAsync(DbTransaction transaction, Guid messageId, string key, int sequence, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        await using var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "INSERT INTO conformance_ordered (item_key, sequence, handled, message_id) SELECT @key, @sequence, count(*) + 1, @id FROM conformance_ordered WHERE item_key = @key";
        Add(command, "@key", key);
        Add(command, "@sequence", sequence);
        Add(command, "@id", messageId.ToString("N"));
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>Every recorded row, optionally of keys starting with <paramref name="keyPrefix"/>.</summary>
    public static async Task<IReadOnlyList<OrderedEffect>> ReadAsync(DbConnection connection, string? keyPrefix = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT item_key, sequence, handled FROM conformance_ordered";
        var rows = new List<OrderedEffect>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var key = reader.GetString(0);
            if (keyPrefix is null || key.StartsWith(keyPrefix, StringComparison.Ordinal))
            {
                rows.Add(new OrderedEffect(key, Convert.ToInt32(reader.GetValue(1), CultureInfo.InvariantCulture), Convert.ToInt32(reader.GetValue(2), CultureInfo.InvariantCulture)));
            }
        }

        return rows;
    }

    /// <summary>
    /// What breaks per-key order in <paramref name="rows"/>: two messages of a key handled as the same number (at
    /// once), a gap in the handled numbers, a sequence handled after a later one, a sequence handled twice, and, when
    /// <paramref name="expected"/> gives a key's count, a sequence from 1 to that count never handled. Empty when
    /// every key was handled one at a time in send order.
    /// </summary>
    public static IReadOnlyList<string> Violations(IEnumerable<OrderedEffect> rows, IReadOnlyDictionary<string, int>? expected = null)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var violations = new List<string>();
        var byKey = rows.GroupBy(r => r.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.OrderBy(r => r.Handled).ThenBy(r => r.Sequence).ToList(), StringComparer.Ordinal);
        foreach (var (key, handled) in byKey.OrderBy(k => k.Key, StringComparer.Ordinal))
        {
            for (var i = 0; i < handled.Count; i++)
            {
                if (handled[i].Handled != i + 1)
                {
                    violations.Add($"{key}: the {Ordinal(i + 1)} handled message (sequence {handled[i].Sequence}) was recorded as number {handled[i].Handled}: two of the key were handled at once.");
                }

                if (i > 0 && handled[i].Sequence <= handled[i - 1].Sequence)
                {
                    violations.Add(handled[i].Sequence == handled[i - 1].Sequence
                        ? $"{key}: sequence {handled[i].Sequence} was handled twice."
                        : $"{key}: sequence {handled[i].Sequence} was handled after sequence {handled[i - 1].Sequence}.");
                }
            }
        }

        foreach (var (key, count) in expected ?? new Dictionary<string, int>())
        {
            var seen = byKey.TryGetValue(key, out var handled) ? handled.Select(r => r.Sequence).ToHashSet() : [];
            var missing = Enumerable.Range(1, count).Where(s => !seen.Contains(s)).ToList();
            if (missing.Count > 0)
            {
                violations.Add($"{key}: {missing.Count} of {count} never handled (first: sequence {missing[0]}).");
            }
        }

        return violations;
    }

    static string Ordinal(int n) => n.ToString(CultureInfo.InvariantCulture) + "th";

    static void Add(DbCommand command, string name, object value)
    {
        var parameter = command.CreateParameter();
        parameter.ParameterName = name;
        parameter.Value = value;
        command.Parameters.Add(parameter);
    }
}

/// <summary>Ordering keys: one key at a time in send order, on every process, and dead letters that hold their key.</summary>
public abstract partial class QueueConformanceTests
{
    /// <summary>The queue of the ordered handler.</summary>
    protected const string OrderedQueue = "conformance-ordered";

    bool KeepsOrderingKeys => Target.KeepsOrderingKeys;

    async Task<ConvergeTestHost> StartOrderedAsync(string storeName = "main", Action<ConvergeOptions>? configure = null)
    {
        var host = await StartAsync(storeName, o =>
        {
            o.Messages.Register<OrderedCommand>("conformance.ordered");
            o.Handle<OrderedCommand, OrderedCommandHandler>(OrderedQueue);
            o.Queue(OrderedQueue, q => { q.Concurrency = 4; q.BatchSize = 8; });
            configure?.Invoke(o);
        });
        if (Target is DatabaseConformanceStore database)
        {
            await using var connection = await database.OpenConnectionAsync(host.Store);
            await OrderedEffects.CreateAsync(connection);
        }

        return host;
    }

    static ValueTask<Guid> SendOrderedAsync(ConvergeTestHost host, string key, int sequence, string behavior = "ok") =>
        host.Bus.SendAsync(new OrderedCommand(key, sequence, behavior), new SendOptions { OrderingKey = key });

    async Task<IReadOnlyList<OrderedEffect>> OrderedAsync(ConvergeTestHost host, string keyPrefix)
    {
        if (Target is not DatabaseConformanceStore database)
        {
            return OrderedEffects.CommittedOn(host.Store, keyPrefix);
        }

        await using var connection = await database.OpenConnectionAsync(host.Store);
        return await OrderedEffects.ReadAsync(connection, keyPrefix);
    }

    /// <summary>On a transport that cannot keep key order, a keyed send fails at once, saying why; nothing is sent.</summary>
    async Task<bool> RefusesKeysAsync(ConvergeTestHost host)
    {
        if (KeepsOrderingKeys)
        {
            return false;
        }

        var refused = await Assert.ThrowsAsync<NotSupportedException>(async () => await SendOrderedAsync(host, "refused", 1));
        Assert.Contains("ordering key", refused.Message, StringComparison.Ordinal);
        Assert.Contains("StoreQueues", refused.Message, StringComparison.Ordinal);
        return true;
    }

    /// <summary>
    /// Keyed messages whose handlers fail and retry are still handled one at a time per key, in send order, while
    /// consumers work several keys at once.
    /// </summary>
    [Fact]
    public async Task Keyed_messages_are_handled_in_send_order_through_failures_and_retries()
    {
        await using var host = await StartOrderedAsync();
        if (await RefusesKeysAsync(host))
        {
            return;
        }

        var prefix = "order-" + Guid.NewGuid().ToString("N")[..8] + "-";
        var expected = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var k = 0; k < 6; k++)
        {
            expected[prefix + k] = 12;
        }

        for (var s = 1; s <= 12; s++)
        {
            for (var k = 0; k < 6; k++)
            {
                // Every third message of a key fails once or twice first: a retrying head must hold its followers.
                await SendOrderedAsync(host, prefix + k, s, (s + k) % 3 == 0 ? $"fail-{1 + (s % 2)}" : "ok");
            }
        }

        await WaitForAsync(async () => (await OrderedAsync(host, prefix)).Count == 72, TimeSpan.FromSeconds(60));
        Assert.Empty(OrderedEffects.Violations(await OrderedAsync(host, prefix), expected));
    }

    /// <summary>
    /// A claim takes only the oldest message of each key, at most one per key in a batch, and none of a key whose
    /// oldest message is leased, to this consumer or to another store on the same database; unkeyed messages and
    /// other keys are claimed as usual.
    /// </summary>
    [Fact]
    public async Task A_claim_takes_only_the_oldest_message_of_a_key_on_every_store()
    {
        await using var first = await StartOrderedAsync("shared", o => o.RunConsumers = false);
        await using var second = await StartOrderedAsync("shared", o => o.RunConsumers = false);
        if (await RefusesKeysAsync(first))
        {
            return;
        }

        const string raw = "conformance-ordered-raw";
        for (var s = 1; s <= 3; s++)
        {
            await first.Bus.SendAsync(new OrderedCommand("a", s), new SendOptions { Queue = raw, OrderingKey = "a" });
            await first.Bus.SendAsync(new OrderedCommand("b", s), new SendOptions { Queue = raw, OrderingKey = "b" });
        }

        await first.Bus.SendAsync(new OrderedCommand("none", 1), new SendOptions { Queue = raw });
        await first.Bus.SendAsync(new OrderedCommand("none", 2), new SendOptions { Queue = raw });
        var lease = TimeSpan.FromMinutes(5);

        var batch = await first.Store.ClaimAsync(raw, 100, lease, CancellationToken.None);
        Assert.Equal(["a:1", "b:1", "none:1", "none:2"], Describe(batch, first).Order(StringComparer.Ordinal));
        Assert.Empty(await first.Store.ClaimAsync(raw, 100, lease, CancellationToken.None));
        Assert.Empty(await second.Store.ClaimAsync(raw, 100, lease, CancellationToken.None));

        // The head of a is done: its next message becomes claimable, by either store, once.
        var headOfA = batch.Single(m => Describe([m], first)[0] == "a:1");
        await using (var transaction = await first.Store.BeginAsync(CancellationToken.None))
        {
            Assert.True(await transaction.CompleteAsync(headOfA, CancellationToken.None));
            await transaction.CommitAsync(CancellationToken.None);
        }

        Assert.Equal(["a:2"], Describe(await second.Store.ClaimAsync(raw, 100, lease, CancellationToken.None), first));
        Assert.Empty(await first.Store.ClaimAsync(raw, 100, lease, CancellationToken.None));

        // A head given back to retry later keeps its place: its followers stay behind it.
        var headOfB = batch.Single(m => Describe([m], first)[0] == "b:1");
        await using (var transaction = await first.Store.BeginAsync(CancellationToken.None))
        {
            Assert.True(await transaction.RetryLaterAsync(headOfB, first.Options.TimeProvider.GetUtcNow(), new AttemptRecord(1, first.Options.TimeProvider.GetUtcNow(), "test"), CancellationToken.None));
            await transaction.CommitAsync(CancellationToken.None);
        }

        Assert.Equal(["b:1"], Describe(await second.Store.ClaimAsync(raw, 100, lease, CancellationToken.None), first));
    }

    static List<string> Describe(IReadOnlyList<QueuedMessage> messages, ConvergeTestHost host) =>
        [.. messages.Select(m => (OrderedCommand)host.Options.Serializer.Deserialize(m.Envelope.Body.Span, typeof(OrderedCommand))!).Select(c => c.Key + ":" + c.Sequence)];

    /// <summary>
    /// A dead-lettered message holds its key: the key's later messages wait (status shows the key and how many wait)
    /// while other keys and unkeyed messages go on. Retried, it is handled first, then the rest in send order.
    /// </summary>
    [Fact]
    public async Task A_dead_lettered_key_holds_its_followers_until_retried_then_releases_them_in_order()
    {
        await using var host = await StartOrderedAsync();
        if (await RefusesKeysAsync(host))
        {
            return;
        }

        var prefix = "held-" + Guid.NewGuid().ToString("N")[..8] + "-";
        var held = prefix + "a";
        var free = prefix + "b";
        await SendOrderedAsync(host, held, 1);
        await SendOrderedAsync(host, held, 2, "hold");
        for (var s = 3; s <= 5; s++)
        {
            await SendOrderedAsync(host, held, s);
        }

        for (var s = 1; s <= 3; s++)
        {
            await SendOrderedAsync(host, free, s);
        }

        await host.Bus.SendAsync(new ConformanceCommand(prefix + "unkeyed"));
        await WaitForAsync(async () => (await OrderedAsync(host, free)).Count == 3 && await CountEffectsAsync(host, prefix + "unkeyed") == 1
            && (await host.Store.Queries().ListDeadLettersAsync(OrderedQueue, 10, CancellationToken.None)).Count == 1);

        var status = await StatusAsync(host);
        Assert.Equal(new HeldKeyStatus(OrderedQueue, held, 1, 3), Assert.Single(status.HeldKeys));
        var letter = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(OrderedQueue, 10, CancellationToken.None));
        Assert.Equal(held, letter.OrderingKey);
        Assert.Equal([1], (await OrderedAsync(host, held)).Select(r => r.Sequence));
        Assert.Equal(3, status.Queues.Single(q => q.Queue == OrderedQueue).Ready);

        OrderedCommandHandler.Release(held);
        Assert.True(await host.Store.RetryDeadLetterAsync(letter.Id, CancellationToken.None));
        await WaitForAsync(async () => (await OrderedAsync(host, held)).Count == 5);

        var handled = await OrderedAsync(host, held);
        Assert.Equal([1, 2, 3, 4, 5], handled.OrderBy(r => r.Handled).Select(r => r.Sequence));
        Assert.Empty(OrderedEffects.Violations(handled));
        Assert.Empty((await StatusAsync(host)).HeldKeys);
    }

    /// <summary>A key stays held until its last dead letter is gone; discarding them lets the waiting messages go on, in order.</summary>
    [Fact]
    public async Task Discarding_the_dead_letters_of_a_key_releases_it()
    {
        await using var host = await StartOrderedAsync(configure: o => o.RunConsumers = false);
        if (await RefusesKeysAsync(host))
        {
            return;
        }

        var key = "discard-" + Guid.NewGuid().ToString("N")[..8];
        for (var s = 1; s <= 4; s++)
        {
            await SendOrderedAsync(host, key, s);
        }

        var lease = TimeSpan.FromMinutes(5);
        async Task DeadLetterNextAsync()
        {
            var head = Assert.Single(await host.Store.ClaimAsync(OrderedQueue, 10, lease, CancellationToken.None));
            await using var transaction = await host.Store.BeginAsync(CancellationToken.None);
            Assert.True(await transaction.DeadLetterAsync(head, DeadLetterReasons.PermanentFailure, null, null, CancellationToken.None));
            await transaction.CommitAsync(CancellationToken.None);
        }

        await DeadLetterNextAsync();
        Assert.Empty(await host.Store.ClaimAsync(OrderedQueue, 10, lease, CancellationToken.None));
        Assert.Null(await host.Store.NextVisibleAtAsync(OrderedQueue, CancellationToken.None));

        // Retried, the dead letter goes back ahead of its followers: the next claim takes it again, not sequence 2.
        var first = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(OrderedQueue, 10, CancellationToken.None));
        Assert.Equal(new HeldKeyStatus(OrderedQueue, key, 1, 3), Assert.Single((await StatusAsync(host)).HeldKeys));
        Assert.True(await host.Store.RetryDeadLetterAsync(first.Id, CancellationToken.None));
        await DeadLetterNextAsync();
        var letters = await host.Store.Queries().ListDeadLettersAsync(OrderedQueue, 10, CancellationToken.None);
        Assert.Equal(first.Envelope.MessageId, Assert.Single(letters).Envelope.MessageId);

        Assert.True(await host.Store.DiscardDeadLetterAsync(letters[0].Id, CancellationToken.None));
        Assert.Empty((await StatusAsync(host)).HeldKeys);
        Assert.Equal([$"{key}:2"], Describe(await host.Store.ClaimAsync(OrderedQueue, 10, lease, CancellationToken.None), host));
    }

    /// <summary>
    /// Two hosts on one store (two processes on one database) share a key's messages yet handle them one at a time,
    /// in send order, through failures.
    /// </summary>
    [Fact]
    public async Task Two_stores_on_one_database_keep_key_order()
    {
        await using var first = await StartOrderedAsync("shared");
        await using var second = await StartOrderedAsync("shared");
        if (await RefusesKeysAsync(first))
        {
            return;
        }

        var prefix = "two-" + Guid.NewGuid().ToString("N")[..8] + "-";
        var expected = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var s = 1; s <= 20; s++)
        {
            for (var k = 0; k < 4; k++)
            {
                var sender = (s + k) % 2 == 0 ? first : second;
                await SendOrderedAsync(sender, prefix + k, s, s % 5 == 0 ? "fail-1" : "ok");
                expected[prefix + k] = s;
            }
        }

        await WaitForAsync(async () => (await OrderedAsync(first, prefix)).Count == 80, TimeSpan.FromSeconds(60));
        Assert.Empty(OrderedEffects.Violations(await OrderedAsync(first, prefix), expected));
    }

    /// <summary>An ordering key is validated where it is set: not empty, not blank, at most 256 characters.</summary>
    [Fact]
    public void Ordering_keys_are_validated()
    {
        Assert.Throws<ArgumentException>(() => new SendOptions { OrderingKey = "" });
        Assert.Throws<ArgumentException>(() => new SendOptions { OrderingKey = "  " });
        Assert.Throws<ArgumentException>(() => new SendOptions { OrderingKey = new string('k', SendOptions.MaxOrderingKeyLength + 1) });
        Assert.Equal(SendOptions.MaxOrderingKeyLength, new SendOptions { OrderingKey = new string('k', SendOptions.MaxOrderingKeyLength) }.OrderingKey!.Length);
        Assert.Null(new SendOptions { OrderingKey = null }.OrderingKey);
    }
}
