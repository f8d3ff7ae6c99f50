using System.Collections.Concurrent;
using System.Diagnostics;
using Converge.Contracts;
using Converge.Storage;
using Npgsql;
using Xunit.Abstractions;

namespace Converge.PostgreSql.Tests;

/// <summary>
/// The log's order on PostgreSQL under contention, as Jepsen's G2 checks would put it: many transactions append at once
/// (some roll back), readers page through the log from checkpoints they save, and no reader may skip a committed
/// position or see one twice. Positions come from an identity column, which hands them out in the order transactions
/// ask, not the order they commit; the store's turn-taking is what keeps a reader from passing a position that commits
/// later. <c>CONVERGE_LOG_CONTENTION_SECONDS</c> sets how long the writers run (10 by default).
/// </summary>
public sealed class LogOrderingUnderContentionTests(ITestOutputHelper output) : IAsyncDisposable
{
    const int Writers = 32;
    const int Readers = 4;
    readonly TestDatabase _database = new();

    static TimeSpan Duration =>
        TimeSpan.FromSeconds(int.TryParse(Environment.GetEnvironmentVariable("CONVERGE_LOG_CONTENTION_SECONDS"), out var seconds) && seconds > 0 ? seconds : 10);

    [Fact]
    public async Task Readers_that_save_checkpoints_never_skip_or_repeat_a_position_while_32_writers_append()
    {
        var schema = _database.Schema("contention");
        await using var store = new PostgreSqlMessageStore(new PostgreSqlStoreOptions { ConnectionString = TestDatabase.ConnectionString, Schema = schema }, TimeProvider.System);
        await store.MigrateAsync(CancellationToken.None);
        var committed = new ConcurrentBag<long>();
        var writersDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var readers = Enumerable.Range(0, Readers).Select(r => Task.Run(() => ReadAsync(store, "reader-" + r, writersDone.Task))).ToList();

        using (var stop = new CancellationTokenSource(Duration))
        {
            await Task.WhenAll(Enumerable.Range(0, Writers).Select(w => Task.Run(() => WriteAsync(store, w, committed, stop.Token))));
        }

        writersDone.SetResult();
        var seen = await Task.WhenAll(readers);
        var log = await ReadAllAsync(store);
        output.WriteLine($"{Writers} writers for {Duration.TotalSeconds} s: {log.Count} events committed up to position {log[^1]} ({log[^1] - log.Count} positions rolled back); {Readers} readers saw {string.Join(", ", seen.Select(s => s.Count))}");

        Assert.True(committed.Count > 1_000, $"only {committed.Count} events were committed in {Duration}");
        Assert.True(log[^1] - log.Count > 0, "no append rolled back, so the identity column left no gap for a reader to fall into");
        Assert.Empty(LogHistory.Violations(committed.Order().ToList(), log, "the log"));
        for (var r = 0; r < Readers; r++)
        {
            Assert.Empty(LogHistory.Violations(log, seen[r], "reader-" + r));
        }
    }

    [Fact]
    public async Task The_check_finds_the_skip_when_a_later_position_commits_first()
    {
        // Two transactions insert into the log without the store's turns: the first takes a position and stays open
        // while the second takes the next one and commits. A reader pages to the second and saves it as its checkpoint;
        // the first commits after. Every position is committed, and the reader never sees the first.
        var schema = _database.Schema("skip");
        await using var store = new PostgreSqlMessageStore(new PostgreSqlStoreOptions { ConnectionString = TestDatabase.ConnectionString, Schema = schema }, TimeProvider.System);
        await store.MigrateAsync(CancellationToken.None);
        await using var early = await OpenAsync();
        await using var late = await OpenAsync();
        await using var earlyTransaction = await early.BeginTransactionAsync();
        var first = await InsertAsync(early, earlyTransaction, store, "early");
        await using (var lateTransaction = await late.BeginTransactionAsync())
        {
            await InsertAsync(late, lateTransaction, store, "late");
            await lateTransaction.CommitAsync();
        }

        var seen = (await store.ReadLogAsync(0, 100, CancellationToken.None)).Select(e => e.Position).ToList();
        await earlyTransaction.CommitAsync();
        seen.AddRange((await store.ReadLogAsync(seen[^1], 100, CancellationToken.None)).Select(e => e.Position));

        var violations = LogHistory.Violations(await ReadAllAsync(store), seen, "reader");
        Assert.Equal([$"reader skipped position {first}"], violations);
    }

    [Fact]
    public void The_check_names_a_repeat_a_step_back_and_a_position_never_committed()
    {
        Assert.Equal(["reader saw position 2 twice"], LogHistory.Violations([1, 2, 3], [1, 2, 2, 3], "reader"));
        Assert.Equal(["reader saw position 2 after 3"], LogHistory.Violations([1, 2, 3], [1, 3, 2], "reader"));
        Assert.Equal(["reader saw position 4, which was never committed"], LogHistory.Violations([1, 2, 3], [1, 2, 3, 4], "reader"));
        Assert.Empty(LogHistory.Violations([1, 2, 5], [1, 2, 5], "reader"));
    }

    static async Task WriteAsync(PostgreSqlMessageStore store, int writer, ConcurrentBag<long> committed, CancellationToken stop)
    {
        var random = new Random(writer);
        for (var i = 0; !stop.IsCancellationRequested; i++)
        {
            await using var transaction = await store.BeginAsync(CancellationToken.None);
            var events = Enumerable.Range(0, random.Next(1, 4)).Select(_ => Event(writer)).ToList();
            var appended = await transaction.AppendAsync($"w{writer}-{i % 5}", null, events, CancellationToken.None);
            if (random.Next(10) == 0)
            {
                // Rolled back: the identity column has handed out these positions, and they never commit.
                continue;
            }

            await transaction.CommitAsync(CancellationToken.None);
            foreach (var e in appended)
            {
                committed.Add(e.Position);
            }
        }
    }

    /// <summary>Pages through the log from its saved checkpoint until the writers are done and it has reached the head.</summary>
    static async Task<List<long>> ReadAsync(PostgreSqlMessageStore store, string group, Task writersDone)
    {
        var seen = new List<long>();
        while (true)
        {
            var done = writersDone.IsCompleted;
            var checkpoint = (await store.GetConsumerGroupAsync(group, CancellationToken.None))?.Position ?? 0;
            var page = await store.ReadLogAsync(checkpoint, 50, CancellationToken.None);
            if (page.Count == 0)
            {
                if (done)
                {
                    return seen;
                }

                // Woken by the writers' commits (they share this store object); the timeout covers a ring missed
                // between the read and the wait.
                await store.Signals.Log.WaitAsync(TimeSpan.FromMilliseconds(50), TimeProvider.System, CancellationToken.None);
                continue;
            }

            seen.AddRange(page.Select(e => e.Position));
            await using var transaction = await store.BeginAsync(CancellationToken.None);
            Assert.True(await transaction.SaveConsumerGroupAsync(group, checkpoint, page[^1].Position, 0, null, CancellationToken.None));
            await transaction.CommitAsync(CancellationToken.None);
        }
    }

    static async Task<List<long>> ReadAllAsync(PostgreSqlMessageStore store)
    {
        var positions = new List<long>();
        IReadOnlyList<LogEvent> page;
        while ((page = await store.ReadLogAsync(positions.Count == 0 ? 0 : positions[^1], 10_000, CancellationToken.None)).Count > 0)
        {
            positions.AddRange(page.Select(e => e.Position));
        }

        return positions;
    }

    static Envelope Event(int writer) => new()
    {
        MessageId = Guid.NewGuid(),
        MessageType = "contention.appended@1",
        CorrelationId = "writer-" + writer,
        SentAt = DateTimeOffset.UnixEpoch,
        Body = "{}"u8.ToArray(),
    };

    static async Task<NpgsqlConnection> OpenAsync()
    {
        var connection = new NpgsqlConnection(TestDatabase.ConnectionString);
        await connection.OpenAsync();
        return connection;
    }

    /// <summary>Inserts one event straight into the log table, as a store without turns would; its position.</summary>
    static async Task<long> InsertAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, PostgreSqlMessageStore store, string stream)
    {
        await using var insert = new NpgsqlCommand(
            $"INSERT INTO {store.Schema.Log} (stream, stream_version, message_id, message_type, sent_at, body) VALUES (@stream, 1, @id, 'contention.appended@1', 0, '\\x7b7d'::bytea) RETURNING position",
            connection,
            transaction);
        insert.Parameters.AddWithValue("stream", stream);
        insert.Parameters.AddWithValue("id", Guid.NewGuid());
        return (long)(await insert.ExecuteScalarAsync())!;
    }

    public ValueTask DisposeAsync() => _database.DisposeAsync();
}

/// <summary>Compares what a reader saw of the log with what was committed to it.</summary>
public static class LogHistory
{
    /// <summary>
    /// What is wrong with <paramref name="seen"/> (positions in the order <paramref name="who"/> saw them) against
    /// <paramref name="committed"/> (every committed position, ascending): a position seen twice, one seen after a
    /// larger one, one seen but never committed, one committed but never seen. Empty when nothing is.
    /// </summary>
    public static List<string> Violations(IReadOnlyList<long> committed, IReadOnlyList<long> seen, string who)
    {
        var violations = new List<string>();
        var all = committed.ToHashSet();
        var once = new HashSet<long>();
        for (var i = 0; i < seen.Count; i++)
        {
            if (!once.Add(seen[i]))
            {
                violations.Add($"{who} saw position {seen[i]} twice");
            }
            else if (i > 0 && seen[i] < seen[i - 1])
            {
                violations.Add($"{who} saw position {seen[i]} after {seen[i - 1]}");
            }

            if (!all.Contains(seen[i]))
            {
                violations.Add($"{who} saw position {seen[i]}, which was never committed");
            }
        }

        violations.AddRange(committed.Where(p => !once.Contains(p)).Select(p => $"{who} skipped position {p}"));
        return violations;
    }
}
