using System.Globalization;
using Converge.Jobs;
using Microsoft.Data.Sqlite;

namespace Converge.Sqlite;

/// <summary>
/// How much history to write into a store for measuring the dashboard's listings: finished jobs (inbox records of job
/// queues), saga instances and dead letters, spread over time and over the values the listings filter by.
/// </summary>
/// <param name="FinishedJobs">Succeeded jobs, over <see cref="SeedShape.JobQueues"/> job queues; every 100th in a batch (with the batch's row, finished).</param>
/// <param name="Sagas">Saga instances over three definitions, two versions and every state (1 in 50 stuck).</param>
/// <param name="DeadLetters">Dead letters over four sources and three reasons; 1 in 20 has an ordering key.</param>
internal sealed record SeedShape(int FinishedJobs, int Sagas, int DeadLetters)
{
    /// <summary>Job queues the finished jobs are spread over: <c>jobs-0</c> to <c>jobs-3</c>.</summary>
    public const int JobQueues = 4;

    /// <summary>Rows per transaction: large enough that commits cost little, small enough to keep the journal short.</summary>
    public int RowsPerTransaction { get; init; } = 50_000;

    /// <summary>The time of the oldest row; rows follow a millisecond apart, a few sharing each time.</summary>
    public DateTimeOffset Start { get; init; } = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public static string JobQueue(int i) => "jobs-" + (i % JobQueues).ToString(CultureInfo.InvariantCulture);

    public static string? BatchOf(int i) => i % 100 == 0 ? "batch-" + (i / 10_000).ToString(CultureInfo.InvariantCulture) : null;

    public static string Definition(int i) => (i % 3) switch { 0 => "order", 1 => "refund", _ => "shipping" };

    public static string SagaState(int i) => i % 50 == 0 ? "stuck" : (i % 10) switch { 1 => "running", 2 => "compensated", 3 => "compensating", _ => "completed" };

    public static string Source(int i) => (i % 4) switch { 0 => "orders", 1 => "payments", 2 => "jobs-0", _ => "log:projection" };

    public static string Reason(int i) => (i % 3) switch { 0 => Storage.DeadLetterReasons.MaxAttemptsExceeded, 1 => Storage.DeadLetterReasons.PermanentFailure, _ => Storage.DeadLetterReasons.DeserializationFailed };

    /// <summary>Row <paramref name="i"/>'s time: three rows share each millisecond, so that tie-breakers are exercised.</summary>
    public long TicksOf(int i) => Start.UtcTicks + (i / 3 * TimeSpan.TicksPerMillisecond);
}

/// <summary>
/// Fills a SQLite store fast with history for measurements (the dashboard's listings at scale): one prepared INSERT per
/// table, re-bound per row, committed every <see cref="SeedShape.RowsPerTransaction"/> rows on one connection. Not for
/// production data: the rows carry stand-in bodies, and nothing is announced to running consumers.
/// </summary>
internal static class SqliteSeeder
{
    /// <summary>Writes <paramref name="shape"/>'s rows into <paramref name="store"/> (migrated first).</summary>
    public static async Task SeedAsync(SqliteMessageStore store, SeedShape shape, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(shape);
        await store.MigrateAsync(cancellationToken);
        var schema = store.Schema;
        using var connection = store.OpenConnection();
        Execute(connection, string.Join(';', Enumerable.Range(0, SeedShape.JobQueues).Select(i => $"INSERT INTO {schema.JobQueues} (name) VALUES ('{SeedShape.JobQueue(i)}') ON CONFLICT DO NOTHING")));

        Insert(connection, shape, shape.FinishedJobs,
            $"INSERT INTO {schema.Inbox} (consumer, message_id, handled_at, message_type, correlation_id, causation_id, sent_at, batch_id) VALUES ($consumer, $message_id, $at, 'bench.job@1', NULL, NULL, $sent_at, $batch_id)",
            (command, i) => command
                .With("$consumer", SeedShape.JobQueue(i))
                .With("$message_id", Guid.NewGuid())
                .With("$at", shape.TicksOf(i))
                .With("$sent_at", shape.TicksOf(i) - TimeSpan.TicksPerSecond)
                .With("$batch_id", SeedShape.BatchOf(i)),
            cancellationToken);

        // The batches' own rows (their counters, as the batch page shows them): every batch finished, all succeeded.
        Execute(connection, $"INSERT INTO {schema.Batches} (id, description, total, pending, succeeded, failed, sealed, created_at, finished_at) SELECT batch_id, 'bench batch', count(*), 0, count(*), 0, 1, min(sent_at), max(handled_at) FROM {schema.Inbox} WHERE batch_id IS NOT NULL GROUP BY batch_id");

        Insert(connection, shape, shape.Sagas,
            $"""
            INSERT INTO {schema.Sagas} (transaction_id, definition, version, state, step_index, awaiting, step_attempt, steps, data, failure, concurrency_version, started_at, updated_at, stuck_reason)
            VALUES ($transaction_id, $definition, $version, $state, 1, NULL, 1, '["reserve","charge","ship"]', X'7B7D', NULL, 1, $at, $at, $stuck_reason)
            """,
            (command, i) => command
                .With("$transaction_id", "saga-" + i.ToString("D8", CultureInfo.InvariantCulture))
                .With("$definition", SeedShape.Definition(i))
                .With("$version", 1 + (i / 3 % 2))
                .With("$state", SeedShape.SagaState(i))
                .With("$at", shape.TicksOf(i))
                .With("$stuck_reason", SeedShape.SagaState(i) == "stuck" ? "gave up after 5 attempts" : null),
            cancellationToken);

        Insert(connection, shape, shape.DeadLetters,
            $"""
            INSERT INTO {schema.DeadLetters} (source, priority, message_id, message_type, correlation_id, causation_id, sent_at, as_of, headers, body, reason, exception, attempts, history, dead_lettered_at, log_position, ordering_key, ordering_seq)
            VALUES ($source, 0, $message_id, 'bench.command@1', NULL, NULL, $sent_at, NULL, NULL, X'7B7D', $reason, 'System.InvalidOperationException: bench', 5, NULL, $at, $log_position, $ordering_key, $ordering_seq)
            """,
            (command, i) =>
            {
                var keyed = i % 20 == 0 && !SeedShape.Source(i).StartsWith("log:", StringComparison.Ordinal);
                return command
                    .With("$source", SeedShape.Source(i))
                    .With("$message_id", Guid.NewGuid())
                    .With("$sent_at", shape.TicksOf(i) - TimeSpan.TicksPerMinute)
                    .With("$reason", SeedShape.Reason(i))
                    .With("$at", shape.TicksOf(i))
                    .With("$log_position", SeedShape.Source(i).StartsWith("log:", StringComparison.Ordinal) ? i + 1L : null)
                    .With("$ordering_key", keyed ? "customer-" + (i % 1000).ToString(CultureInfo.InvariantCulture) : null)
                    .With("$ordering_seq", keyed ? i : null);
            },
            cancellationToken);

        // The planner's statistics, as a long-running store would have them after its periodic optimize.
        Execute(connection, "PRAGMA optimize");
    }

    static void Insert(SqliteConnection connection, SeedShape shape, int rows, string sql, Func<SqliteCommand, int, SqliteCommand> bind, CancellationToken cancellationToken)
    {
        for (var first = 0; first < rows; first += shape.RowsPerTransaction)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var transaction = connection.BeginTransaction(deferred: false);
            using var command = connection.CreateCommand();
            command.Transaction = transaction;
            command.CommandText = sql;
            command.Prepare();
            for (var i = first; i < Math.Min(rows, first + shape.RowsPerTransaction); i++)
            {
                bind(command, i).ExecuteNonQuery();
            }

            transaction.Commit();
        }
    }

    static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
