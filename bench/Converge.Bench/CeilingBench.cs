using System.Diagnostics;
using Microsoft.Data.Sqlite;

namespace Converge.Bench;

/// <summary>What the ceiling bench runs.</summary>
public sealed class CeilingBenchSettings
{
    /// <summary>The scratch database file; <c>null</c> for a temporary file. Must not exist; deleted afterwards.</summary>
    public string? DbPath { get; init; }

    /// <summary>Single-row transactions committed one after the other.</summary>
    public int SingleRowCommits { get; init; } = 5_000;

    /// <summary>Rows inserted in transactions of <see cref="BatchRows"/>.</summary>
    public int BatchedRows { get; init; } = 500_000;

    /// <summary>Rows per transaction in the batched part.</summary>
    public int BatchRows { get; init; } = 1_000;
}

/// <summary>The raw SQLite figures on this disk, with the store's settings (WAL, <c>synchronous=FULL</c>).</summary>
/// <param name="SingleRowCommits">Transactions of one row committed.</param>
/// <param name="SingleRowCommitsPerSecond">Commits per second: the bound on anything that commits per message.</param>
/// <param name="SingleRowCommitMs">Mean time of one commit.</param>
/// <param name="SingleRowCommitP50Ms">Median time of one single-row transaction (begin, insert, commit).</param>
/// <param name="SingleRowCommitP99Ms">99th percentile of that: the disk's own latency tail, beneath any message latency.</param>
/// <param name="SingleRowCommitMaxMs">Slowest single-row transaction.</param>
/// <param name="BatchedRows">Rows inserted in the batched part.</param>
/// <param name="BatchRows">Rows per transaction in the batched part.</param>
/// <param name="BatchedRowsPerSecond">Rows per second in transactions of <paramref name="BatchRows"/>.</param>
/// <param name="JournalMode">As SQLite reported it.</param>
/// <param name="Synchronous">The synchronous setting.</param>
/// <param name="SqliteVersion">The SQLite library version.</param>
public sealed record CeilingResult(
    int SingleRowCommits,
    double SingleRowCommitsPerSecond,
    double SingleRowCommitMs,
    double SingleRowCommitP50Ms,
    double SingleRowCommitP99Ms,
    double SingleRowCommitMaxMs,
    int BatchedRows,
    int BatchRows,
    double BatchedRowsPerSecond,
    string JournalMode,
    string Synchronous,
    string SqliteVersion);

/// <summary>
/// Inserts rows shaped like the messages bench's effect rows (an integer and a 16-byte id) with prepared
/// commands on one connection: first each row in its own transaction, then in transactions of many rows.
/// </summary>
public static class CeilingBench
{
    /// <summary>Runs both parts on a new file and deletes it.</summary>
    public static CeilingResult Run(CeilingBenchSettings settings, TextWriter progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(progress);
        ArgumentOutOfRangeException.ThrowIfLessThan(settings.SingleRowCommits, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(settings.BatchRows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(settings.BatchedRows, settings.BatchRows);
        if (settings.DbPath is { } given && BenchFiles.Exists(given))
        {
            throw new InvalidOperationException($"{given} already exists; the ceiling bench needs a new file (it deletes it afterwards).");
        }

        var temp = settings.DbPath is null ? BenchFiles.NewTempFolder() : null;
        var path = settings.DbPath ?? Path.Combine(temp!, "ceiling.db");
        try
        {
            using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
            connection.Open();
            var journalMode = (string)Scalar(connection, "PRAGMA journal_mode = WAL")!;
            Scalar(connection, "PRAGMA synchronous = FULL");
            var synchronous = Convert.ToInt64(Scalar(connection, "PRAGMA synchronous"), System.Globalization.CultureInfo.InvariantCulture) == 2 ? "full" : "other";
            var version = (string)Scalar(connection, "SELECT sqlite_version()")!;
            Scalar(connection, "CREATE TABLE ceiling (seq INTEGER NOT NULL, message_id BLOB NOT NULL)");

            using var begin = Prepare(connection, "BEGIN IMMEDIATE");
            using var commit = Prepare(connection, "COMMIT");
            using var insert = Prepare(connection, "INSERT INTO ceiling (seq, message_id) VALUES ($seq, $message_id)");
            var seq = insert.Parameters.Add("$seq", SqliteType.Integer);
            var id = insert.Parameters.Add("$message_id", SqliteType.Blob);
            insert.Prepare();

            progress.WriteLine($"single-row commits: {settings.SingleRowCommits}");
            var commitMs = new double[settings.SingleRowCommits];
            var started = Stopwatch.GetTimestamp();
            for (var i = 0; i < settings.SingleRowCommits; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var one = Stopwatch.GetTimestamp();
                begin.ExecuteNonQuery();
                seq.Value = i;
                id.Value = Guid.NewGuid();
                insert.ExecuteNonQuery();
                commit.ExecuteNonQuery();
                commitMs[i] = Stopwatch.GetElapsedTime(one).TotalMilliseconds;
            }

            var singleSeconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            Array.Sort(commitMs);

            var batches = settings.BatchedRows / settings.BatchRows;
            progress.WriteLine($"batched rows: {batches * settings.BatchRows} in transactions of {settings.BatchRows}");
            started = Stopwatch.GetTimestamp();
            var row = 0;
            for (var b = 0; b < batches; b++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                begin.ExecuteNonQuery();
                for (var i = 0; i < settings.BatchRows; i++)
                {
                    seq.Value = row++;
                    id.Value = Guid.NewGuid();
                    insert.ExecuteNonQuery();
                }

                commit.ExecuteNonQuery();
            }

            var batchedSeconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            return new CeilingResult(
                settings.SingleRowCommits,
                MessagesBench.Round(settings.SingleRowCommits / singleSeconds, 1),
                MessagesBench.Round(singleSeconds * 1000 / settings.SingleRowCommits, 4),
                MessagesBench.Round(NearestRank(commitMs, 0.50), 3),
                MessagesBench.Round(NearestRank(commitMs, 0.99), 3),
                MessagesBench.Round(commitMs[^1], 3),
                row,
                settings.BatchRows,
                MessagesBench.Round(row / batchedSeconds, 1),
                journalMode,
                synchronous,
                version);
        }
        finally
        {
            BenchFiles.Delete(path);
            if (temp is not null)
            {
                BenchFiles.DeleteFolder(temp);
            }
        }
    }

    static double NearestRank(double[] sorted, double quantile) =>
        sorted[Math.Clamp((int)Math.Ceiling(quantile * sorted.Length) - 1, 0, sorted.Length - 1)];

    static SqliteCommand Prepare(SqliteConnection connection, string sql)
    {
        var command = connection.CreateCommand();
        command.CommandText = sql;
        return command;
    }

    static object? Scalar(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return command.ExecuteScalar();
    }
}
