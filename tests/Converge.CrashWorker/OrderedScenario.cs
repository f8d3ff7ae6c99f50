using Converge.Runtime;
using Converge.Sqlite;

namespace Converge.CrashWorker;

/// <summary>A message of the ordering test: the <see cref="Seq"/>-th (from 1) sent with ordering key <see cref="Key"/>.</summary>
public sealed record OrderedMessage(string Key, int Seq);

/// <summary>
/// Records each handled message in the ordered effect table (the one Converge.Testing's <c>OrderedEffects</c> reads:
/// key, sequence, and how many of the key were handled before it plus one), in the message's transaction. Fails on
/// purpose: every <see cref="OrderedScenario.FailEvery"/>-th call in this process throws a retryable error, and a
/// message listed in the hold table fails for good (it is dead-lettered) until its key is listed as released.
/// </summary>
public sealed class OrderedHandler : IHandler<OrderedMessage>
{
    static int _calls;

    public async Task HandleAsync(OrderedMessage message, MessageContext context, CancellationToken cancellationToken)
    {
        var transaction = await context.GetTransactionAsync(cancellationToken);
        await using (var check = transaction.Connection!.CreateCommand())
        {
            check.Transaction = transaction;
            check.CommandText = $"SELECT (SELECT count(*) FROM {OrderedScenario.HoldTable} WHERE item_key = @key AND sequence = @seq) - (SELECT count(*) FROM {OrderedScenario.ReleasedTable} WHERE item_key = @key)";
            var key = check.CreateParameter();
            key.ParameterName = "@key";
            key.Value = message.Key;
            check.Parameters.Add(key);
            var seq = check.CreateParameter();
            seq.ParameterName = "@seq";
            seq.Value = message.Seq;
            check.Parameters.Add(seq);
            if (Convert.ToInt64(await check.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture) > 0)
            {
                throw new HandlerFailureException($"{message.Key} #{message.Seq} is held until its key is released", nonRetryable: true);
            }
        }

        await context.ExecuteAsync(
            "INSERT INTO conformance_ordered (item_key, sequence, handled, message_id) SELECT @key, @seq, count(*) + 1, @id FROM conformance_ordered WHERE item_key = @key",
            [("@key", message.Key), ("@seq", message.Seq), ("@id", context.MessageId.ToString("N"))],
            cancellationToken);
        if (Interlocked.Increment(ref _calls) % OrderedScenario.FailEvery == 0)
        {
            await Console.Error.WriteLineAsync($"{OrderedScenario.InjectedLine} {message.Key} #{message.Seq}");
            throw new TimeoutException($"injected failure of {message.Key} #{message.Seq} (attempt {context.Attempt})");
        }
    }
}

/// <summary>What the ordered worker and the ordering test share; compiled into both.</summary>
public static class OrderedScenario
{
    public const string MessageTypeName = "ordered.message";
    public const string Queue = "ordered";
    public const string HoldTable = "ordered_hold";
    public const string ReleasedTable = "ordered_released";
    public const int FailEvery = 7;

    /// <summary>What the worker writes to standard error for each failure it injects.</summary>
    public const string InjectedLine = "injecting a failure of";

    public const string CreateTables = $"""
        CREATE TABLE IF NOT EXISTS conformance_ordered (item_key VARCHAR(300) NOT NULL, sequence INTEGER NOT NULL, handled INTEGER NOT NULL, message_id VARCHAR(64) NOT NULL);
        CREATE TABLE IF NOT EXISTS {HoldTable} (item_key TEXT NOT NULL, sequence INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS {ReleasedTable} (item_key TEXT NOT NULL);
        """;

    public static void Configure(ConvergeOptions options, string databasePath, bool runConsumers)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.UseSqlite(databasePath);
        options.Messages.Register<OrderedMessage>(MessageTypeName);
        options.Handle<OrderedMessage, OrderedHandler>(Queue);
        // Small batches and a short poll: on SQLite a process learns of another's sends only by polling, and one that
        // claims its next batch in each commit would otherwise do nearly all the work while the other waits to poll.
        options.Queue(Queue, q => q.BatchSize = 4);
        options.PollInterval = TimeSpan.FromMilliseconds(20);
        options.LeaseDuration = CrashScenario.LeaseDuration;
        options.Retry.InitialDelay = TimeSpan.FromMilliseconds(20);
        options.Retry.MaxDelay = TimeSpan.FromMilliseconds(100);
        options.Retry.MaxAttempts = 50;
        options.RunConsumers = runConsumers;
    }
}
