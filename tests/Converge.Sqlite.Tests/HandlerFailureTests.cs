using System.Collections.Concurrent;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Sqlite.Tests;

public sealed record Charge(string Key, string Fail);

/// <summary>Counts each message's handler calls; inserts the charge key, then fails as <see cref="Charge.Fail"/> says.</summary>
public sealed class ChargeCalls
{
    public ConcurrentDictionary<string, int> Calls { get; } = new(StringComparer.Ordinal);
}

public sealed class ChargeHandler(ChargeCalls calls) : IHandler<Charge>
{
    public async Task HandleAsync(Charge message, MessageContext context, CancellationToken cancellationToken)
    {
        calls.Calls.AddOrUpdate(message.Key, 1, static (_, n) => n + 1);
        var transaction = await context.GetTransactionAsync(cancellationToken);
        using var command = (SqliteCommand)transaction.Connection!.CreateCommand();
        command.Transaction = (SqliteTransaction)transaction;
        command.CommandText = "CREATE TABLE IF NOT EXISTS charges (key TEXT PRIMARY KEY, amount INTEGER CHECK (amount > 0)); INSERT INTO charges (key, amount) VALUES ($key, $amount)";
        command.Parameters.AddWithValue("$key", message.Fail == "unique" ? "taken" : message.Key);
        command.Parameters.AddWithValue("$amount", message.Fail == "check" ? -1 : 1);
        await command.ExecuteNonQueryAsync(cancellationToken);
        if (message.Fail == "throw")
        {
            throw new InvalidOperationException("the provider is down");
        }
    }
}

public sealed class HandlerFailureTests
{
    static Task<ConvergeTestHost> StartAsync(ChargeCalls calls, int batchSize = 256, BatchIsolation isolation = BatchIsolation.PerMessage) =>
        ConvergeTestHost.StartAsync(
            o =>
            {
                o.Messages.Register<Charge>("test.charge");
                o.Handle<Charge, ChargeHandler>("charges");
                o.Queue("charges", q =>
                {
                    q.BatchSize = batchSize;
                    q.Isolation = isolation;
                });
                o.Retry.MaxAttempts = 4;
                o.Retry.InitialDelay = TimeSpan.Zero;
                o.Retry.MaxDelay = TimeSpan.Zero;
                o.PollInterval = TimeSpan.FromMilliseconds(20);
            },
            services => services.AddSingleton(calls));

    static async Task TakeKeyAsync(ConvergeTestHost host)
    {
        await using var connection = ((SqliteMessageStore)host.Store).OpenConnection();
        using var command = connection.CreateCommand();
        command.CommandText = "CREATE TABLE IF NOT EXISTS charges (key TEXT PRIMARY KEY, amount INTEGER CHECK (amount > 0)); INSERT INTO charges (key, amount) VALUES ('taken', 1)";
        command.ExecuteNonQuery();
    }

    static async Task<long> CountChargesAsync(ConvergeTestHost host)
    {
        await using var connection = ((SqliteMessageStore)host.Store).OpenConnection();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT count(*) FROM charges";
        return (long)command.ExecuteScalar()!;
    }

    [Theory]
    [InlineData("unique")]
    [InlineData("check")]
    public async Task A_constraint_violation_is_dead_lettered_as_a_permanent_failure_after_one_call(string violation)
    {
        var calls = new ChargeCalls();
        await using var host = await StartAsync(calls);
        await TakeKeyAsync(host);

        var history = await host.SendAndWaitAsync(new Charge("c-1", violation));

        Assert.Equal(["sent", "deadlettered"], history.Select(h => h.What));
        var letter = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None));
        Assert.Equal(DeadLetterReasons.PermanentFailure, letter.Reason);
        Assert.Equal(1, letter.Attempts);
        Assert.Equal(1, calls.Calls["c-1"]);
    }

    [Fact]
    public async Task A_failing_handler_runs_once_per_counted_attempt_in_a_batch_of_one()
    {
        var calls = new ChargeCalls();
        await using var host = await StartAsync(calls, batchSize: 1);
        await TakeKeyAsync(host);

        await host.SendAndWaitAsync(new Charge("c-1", "throw"));

        var letter = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None));
        Assert.Equal(DeadLetterReasons.MaxAttemptsExceeded, letter.Reason);
        Assert.Equal(4, letter.Attempts);
        Assert.Equal(4, calls.Calls["c-1"]);
    }

    [Fact]
    public async Task A_failure_in_a_batch_reruns_nobody_and_undoes_only_its_own_writes()
    {
        var calls = new ChargeCalls();
        await using var host = await StartAsync(calls);
        await RunFailingBatchAsync(host);

        Assert.Equal(new Dictionary<string, int> { ["a"] = 1, ["b"] = 4, ["c"] = 1, ["d"] = 1, ["e"] = 1 }, calls.Calls.OrderBy(c => c.Key).ToDictionary());
        await AssertOnlyGoodChargesAsync(host);
    }

    /// <summary>
    /// Isolated on failure only, the batch ran without savepoints until b failed, then again with them: a and b ran
    /// twice in that first attempt, the messages after b once. b's later attempts run isolated from the start (it failed
    /// before), once each. The writes are the same as with a savepoint per message.
    /// </summary>
    [Fact]
    public async Task Isolated_on_failure_a_failure_reruns_the_batch_before_it_once_and_undoes_only_its_own_writes()
    {
        var calls = new ChargeCalls();
        await using var host = await StartAsync(calls, isolation: BatchIsolation.OnFailure);
        await RunFailingBatchAsync(host);

        Assert.Equal(new Dictionary<string, int> { ["a"] = 2, ["b"] = 2 + 3, ["c"] = 1, ["d"] = 1, ["e"] = 1 }, calls.Calls.OrderBy(c => c.Key).ToDictionary());
        await AssertOnlyGoodChargesAsync(host);
    }

    static async Task AssertOnlyGoodChargesAsync(ConvergeTestHost host)
    {
        Assert.Equal(1 + 3, await CountChargesAsync(host));
        var letters = await host.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None);
        Assert.Equal([DeadLetterReasons.MaxAttemptsExceeded, DeadLetterReasons.PermanentFailure], letters.Select(l => l.Reason).Order());
    }

    /// <summary>Sends a to e in one transaction (so the consumer claims them as one batch): b throws, d breaks a constraint.</summary>
    static async Task RunFailingBatchAsync(ConvergeTestHost host)
    {
        await TakeKeyAsync(host);
        var ids = new List<Guid>();

        // Sent in one transaction, so the consumer claims them as one batch.
        await using (var transaction = await host.Bus.BeginTransactionAsync())
        {
            foreach (var (key, fail) in new[] { ("a", ""), ("b", "throw"), ("c", ""), ("d", "unique"), ("e", "") })
            {
                var id = Guid.CreateVersion7();
                ids.Add(id);
                host.Tracker.Track(id, "charges");
                await host.Bus.SendAsync(new Charge(key, fail), transaction.Transaction, new SendOptions { MessageId = id });
            }

            await transaction.CommitAsync();
        }

        await host.WaitForQuiescenceAsync();
    }

    [Fact]
    public void Busy_and_locked_are_transient_and_constraint_violations_are_not()
    {
        var folder = Directory.CreateTempSubdirectory("converge-errors-");
        try
        {
            var path = Path.Combine(folder.FullName, "errors.db");
            using var first = new SqliteConnection($"Data Source={path};Pooling=false");
            first.Open();
            Execute(first, "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL CHECK (n > 0)); INSERT INTO t VALUES (1, 1)");

            var unique = Assert.Throws<SqliteException>(() => Execute(first, "INSERT INTO t VALUES (1, 1)"));
            var check = Assert.Throws<SqliteException>(() => Execute(first, "INSERT INTO t VALUES (2, -1)"));
            var notNull = Assert.Throws<SqliteException>(() => Execute(first, "INSERT INTO t VALUES (3, NULL)"));
            var syntax = Assert.Throws<SqliteException>(() => Execute(first, "INSERT INTO missing VALUES (1)"));

            using var writing = first.BeginTransaction(deferred: false);
            using var second = new SqliteConnection($"Data Source={path};Pooling=false;Default Timeout=1");
            second.Open();
            Execute(second, "PRAGMA busy_timeout = 0");
            var busy = Assert.Throws<SqliteException>(() => Execute(second, "INSERT INTO t VALUES (4, 1)"));

            Assert.Equal(5, busy.SqliteErrorCode);
            Assert.True(SqliteErrors.IsTransient(busy));
            Assert.All([unique, check, notNull, syntax], e => Assert.False(SqliteErrors.IsTransient(e)));

            // What the default policy decides once UseSqlite installed the classification.
            var retry = new ConvergeOptions().UseSqlite(path).Retry;
            Assert.True(retry.IsTransient(busy));
            Assert.False(retry.IsTransient(unique));
            Assert.False(retry.IsTransient(new InvalidOperationException("wrapped", unique)));
        }
        finally
        {
            SqliteConnection.ClearAllPools();
            folder.Delete(recursive: true);
        }
    }

    static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
