using System.Collections.Concurrent;
using System.Data.Common;
using System.Runtime.CompilerServices;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing.InMemory;

namespace Converge.Testing.Conformance;

/// <summary>A command whose <see cref="Behavior"/> tells the conformance handler what to do.</summary>
/// <param name="Key">Written to the effect row.</param>
/// <param name="Behavior"><c>ok</c>, <c>permanent</c> (fail, not retryable), <c>transient</c> (always fail, retryable) or <c>fail-N</c> (fail the first N attempts).</param>
public sealed record ConformanceCommand(string Key, string Behavior = "ok");

/// <summary>An event for consumer-group tests.</summary>
/// <param name="Key">Written to the effect row.</param>
/// <param name="Behavior"><c>ok</c> or <c>transient</c> (always fail).</param>
public sealed record ConformanceEvent(string Key, string Behavior = "ok");

/// <summary>Writes one effect row in the message's transaction, then fails if told to (rolling the row back).</summary>
public sealed class ConformanceCommandHandler : IHandler<ConformanceCommand>
{
    /// <inheritdoc />
    public async Task HandleAsync(ConformanceCommand message, MessageContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(context);
        await Effects.WriteAsync(context, context.Queue!, message.Key, cancellationToken);
        switch (message.Behavior)
        {
            case "permanent":
                throw new HandlerFailureException("refused for good", nonRetryable: true);
            case "transient":
                throw new TimeoutException("the downstream service timed out");
            case var failN when failN.StartsWith("fail-", StringComparison.Ordinal) && context.Attempt <= int.Parse(failN[5..], System.Globalization.CultureInfo.InvariantCulture):
                throw new TimeoutException($"attempt {context.Attempt} fails");
        }
    }
}

/// <summary>A command whose handler records its effect as a statement (<see cref="MessageContext.Execute"/>).</summary>
/// <param name="Key">Written to the effect row.</param>
/// <param name="Breaks">Record a statement that breaks the effect table's NOT NULL constraint instead.</param>
public sealed record RecordedCommand(string Key, bool Breaks = false);

/// <summary>Records one effect row as a statement that runs when it returns (or, told to, one that fails there).</summary>
public sealed class RecordedCommandHandler : IHandler<RecordedCommand>
{
    /// <inheritdoc />
    public Task HandleAsync(RecordedCommand message, MessageContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(context);
        if (message.Breaks)
        {
            context.Execute("INSERT INTO conformance_effects (message_id, item_key) VALUES (@id, @key)", ("@id", context.MessageId.ToString("N")), ("@key", message.Key));
        }
        else
        {
            context.Execute(
                "INSERT INTO conformance_effects (message_id, consumer, item_key) VALUES (@id, @consumer, @key)",
                ("@id", context.MessageId.ToString("N")),
                ("@consumer", context.Queue),
                ("@key", message.Key));
        }

        return Task.CompletedTask;
    }
}

/// <summary>Writes one effect row per event in the consumer group's transaction.</summary>
public sealed class ConformanceEventHandler : IHandler<ConformanceEvent>
{
    /// <inheritdoc />
    public async Task HandleAsync(ConformanceEvent message, MessageContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(context);
        await Effects.WriteAsync(context, "log:" + context.ConsumerGroup, message.Key, cancellationToken);
        if (message.Behavior == "transient")
        {
            throw new TimeoutException("the projection's dependency timed out");
        }
    }
}

/// <summary>
/// The effects the conformance handlers write: rows of a table, in plain SQL every store's database accepts, or, on a
/// store without a database (the in-memory store), records kept when the handler's transaction commits.
/// </summary>
public static class Effects
{
    static readonly ConditionalWeakTable<IMessageStore, ConcurrentQueue<(long Order, string Key)>> Committed = new();
    static long _written;

    /// <summary>
    /// Writes one effect of the message <paramref name="context"/> handles, sharing the fate of its transaction: a
    /// row in the transaction on a database store; on the in-memory store, a record kept when the transaction commits
    /// (and never when it, or the savepoint of the message, rolls back).
    /// </summary>
    public static async Task WriteAsync(MessageContext context, string consumer, string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (Faults.CrashingStore.Unwrap(context.Transaction) is InMemoryStoreTransaction memory)
        {
            // Numbered now, inside the transaction, which holds the store's write gate until it commits: the numbers
            // follow the commits, while the callbacks of two commits may run in either order.
            var effects = Committed.GetOrCreateValue(memory.Store);
            var order = Interlocked.Increment(ref _written);
            memory.OnCommitted(() => effects.Enqueue((order, key)));
            return;
        }

        await WriteAsync(await context.GetTransactionAsync(cancellationToken), context.MessageId, consumer, key, cancellationToken);
    }

    /// <summary>The keys of the effects committed on an in-memory <paramref name="store"/>, one per effect, in commit order.</summary>
    public static IReadOnlyList<string> CommittedKeys(IMessageStore store) =>
        Committed.TryGetValue(store, out var effects) ? [.. effects.OrderBy(e => e.Order).Select(e => e.Key)] : [];

    /// <summary>The table's DDL.</summary>
    public const string CreateTable = "CREATE TABLE IF NOT EXISTS conformance_effects (message_id VARCHAR(64) NOT NULL, consumer VARCHAR(200) NOT NULL, item_key VARCHAR(200) NOT NULL)";

    /// <summary>Inserts one effect row inside <paramref name="transaction"/>.</summary>
    public static async Task WriteAsync(DbTransaction transaction, Guid messageId, string consumer, string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        await using var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "INSERT INTO conformance_effects (message_id, consumer, item_key) VALUES (@id, @consumer, @key)";
        Add(command, "@id", messageId.ToString("N"));
        Add(command, "@consumer", consumer);
        Add(command, "@key", key);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>Counts effect rows, optionally of one key.</summary>
    public static async Task<long> CountAsync(DbConnection connection, string? key = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        await using var command = connection.CreateCommand();
        command.CommandText = key is null
            ? "SELECT count(*) FROM conformance_effects"
            : "SELECT count(*) FROM conformance_effects WHERE item_key = @key";
        if (key is not null)
        {
            Add(command, "@key", key);
        }

        return Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture);
    }

    static void Add(DbCommand command, string name, object value)
    {
        var parameter = command.CreateParameter();
        parameter.ParameterName = name;
        parameter.Value = value;
        command.Parameters.Add(parameter);
    }
}
