using Converge.Bench;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Sqlite;
using Microsoft.Data.Sqlite;

namespace Converge.Cli.Tests;

/// <summary>
/// The benches' verifications catch what they claim to: a small run's store is kept, a fault is planted in a copy
/// (an effect row twice or missing, a compensation that ran, a saga completed twice or not at all, an inbox record
/// missing, a job run twice) and the verification must report it.
/// </summary>
public sealed class BenchVerificationTests : IDisposable
{
    readonly TempFolder _folder = new();
    int _copies;

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        _folder.Dispose();
    }

    [Fact]
    public async Task Bench_sagas_verifies_each_participant_command_and_each_completion_from_the_stores_rows()
    {
        var db = _folder.File("sagas.db");
        var result = await Cli.RunAsync("bench", "sagas", "--count", "150", "--warmup", "0", "--db", db, "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.True(result.Json().GetProperty("verified").GetBoolean());

        Assert.Empty(await VerifySagasAsync(Copy(db)));

        Assert.Contains("charge took effect 151 times for 150 distinct sagas (numbers 0..149); expected once for each of the 150", await VerifySagasAsync(Copy(db),
            "INSERT INTO bench_saga_effects (seq, command, message_id) SELECT seq, command, randomblob(16) FROM bench_saga_effects WHERE seq = 5 AND command = 'charge'"));
        Assert.Contains("ship took effect 149 times for 149 distinct sagas (numbers 0..149); expected once for each of the 150", await VerifySagasAsync(Copy(db),
            "DELETE FROM bench_saga_effects WHERE seq = 7 AND command = 'ship'"));
        Assert.Contains("refund took effect 1 times; no saga should have compensated", await VerifySagasAsync(Copy(db),
            "INSERT INTO bench_saga_effects (seq, command, message_id) VALUES (9, 'refund', randomblob(16))"));
        Assert.Contains("150 saga instances are completed and 149 of them logged exactly one completion; expected 150 and 150", await VerifySagasAsync(Copy(db),
            "INSERT INTO converge_saga_log (transaction_id, at, kind, detail) VALUES ('order-3', 0, 'state-changed', 'running -> completed')"));
        Assert.Contains("149 saga instances are completed and 149 of them logged exactly one completion; expected 150 and 150", await VerifySagasAsync(Copy(db),
            "UPDATE converge_sagas SET state = 'running' WHERE transaction_id = 'order-11'"));
    }

    [Fact]
    public void A_duplicate_shipped_reply_neither_counts_a_saga_twice_nor_completes_the_run_early()
    {
        var observer = new SagaCompletionObserver(2);

        observer.OnHandled(Shipped("order-0"), "bench-order", HandlingOutcome.Completed);
        observer.OnHandled(Shipped("order-0"), "bench-order", HandlingOutcome.Completed);

        Assert.Equal(1, observer.Completed);
        Assert.False(observer.Done.IsCompleted);
        observer.OnHandled(Shipped("order-1"), "bench-order", HandlingOutcome.Completed);
        Assert.Equal(2, observer.Completed);
        Assert.True(observer.Done.IsCompletedSuccessfully);
    }

    [Fact]
    public async Task Bench_messages_verification_reports_an_effect_row_twice_or_missing()
    {
        var db = _folder.File("messages.db");
        var result = await Cli.RunAsync("bench", "messages", "--count", "200", "--warmup", "0", "--db", db, "--json");
        Assert.True(result.ExitCode == 0, result.ToString());

        Assert.Empty(await VerifyAsync(Copy(db), store => MessagesBench.VerifyAsync(store, 200, CancellationToken.None)));
        Assert.Contains("bench_effects has 201 rows with 200 distinct seq (range 0..199); expected exactly 200 rows, seq 0..199", await VerifyAsync(
            Copy(db), store => MessagesBench.VerifyAsync(store, 200, CancellationToken.None),
            "INSERT INTO bench_effects (seq, message_id) SELECT seq, randomblob(16) FROM bench_effects WHERE seq = 17"));
        Assert.Contains("bench_effects has 199 rows with 199 distinct seq (range 0..199); expected exactly 200 rows, seq 0..199", await VerifyAsync(
            Copy(db), store => MessagesBench.VerifyAsync(store, 200, CancellationToken.None),
            "DELETE FROM bench_effects WHERE seq = 17"));
        Assert.Contains("199 inbox records; expected 200", await VerifyAsync(
            Copy(db), store => MessagesBench.VerifyAsync(store, 200, CancellationToken.None),
            "DELETE FROM converge_inbox WHERE message_id = (SELECT min(message_id) FROM converge_inbox)"));
    }

    [Fact]
    public async Task Bench_jobs_verification_reports_a_job_run_twice_or_not_at_all_and_a_missing_inbox_record()
    {
        var db = _folder.File("jobs.db");
        var result = await Cli.RunAsync("bench", "jobs", "--count", "100", "--warmup", "0", "--db", db, "--json");
        Assert.True(result.ExitCode == 0, result.ToString());

        Assert.Empty(await VerifyAsync(Copy(db), store => JobsBench.VerifyAsync(store, 100, Tally(100), CancellationToken.None)));

        var twice = Tally(100);
        twice.Record(42);
        Assert.Contains("100 distinct jobs ran and 1 ran again; expected each of the 100 once", await VerifyAsync(Copy(db), store => JobsBench.VerifyAsync(store, 100, twice, CancellationToken.None)));
        Assert.Contains("99 distinct jobs ran and 0 ran again; expected each of the 100 once", await VerifyAsync(Copy(db), store => JobsBench.VerifyAsync(store, 100, Tally(99, size: 100), CancellationToken.None)));
        Assert.Contains("99 inbox records; expected 100", await VerifyAsync(
            Copy(db), store => JobsBench.VerifyAsync(store, 100, Tally(100), CancellationToken.None),
            "DELETE FROM converge_inbox WHERE message_id = (SELECT min(message_id) FROM converge_inbox)"));
    }

    /// <summary>A tally of jobs 0 to <paramref name="ran"/> - 1 having run once, out of <paramref name="size"/>.</summary>
    static JobsBenchTally Tally(int ran, int? size = null)
    {
        var tally = new JobsBenchTally(size ?? ran);
        for (var seq = 0; seq < ran; seq++)
        {
            tally.Record(seq);
        }

        return tally;
    }

    static Envelope Shipped(string saga) => new()
    {
        MessageId = Guid.NewGuid(),
        MessageType = "bench.shipped@1",
        CorrelationId = saga,
        SentAt = DateTimeOffset.UnixEpoch,
        Body = Array.Empty<byte>(),
    };

    static Task<IReadOnlyList<string>> VerifySagasAsync(string db, string? plant = null) =>
        VerifyAsync(db, store => SagasBench.VerifyAsync(store, 150, CancellationToken.None), plant);

    /// <summary>Plants the fault (a statement that must change a row), then runs the verification on the store.</summary>
    static async Task<IReadOnlyList<string>> VerifyAsync(string db, Func<SqliteMessageStore, Task<IReadOnlyList<string>>> verify, string? plant = null)
    {
        if (plant is not null)
        {
            await using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = db, Pooling = false }.ToString());
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = plant;
            Assert.True(await command.ExecuteNonQueryAsync() > 0, "Planting the fault changed nothing: " + plant);
        }

        await using var store = new SqliteMessageStore(new SqliteStoreOptions { Path = db }, TimeProvider.System);
        return await verify(store);
    }

    /// <summary>A copy of the kept store (with its write-ahead log) to plant one fault in.</summary>
    string Copy(string db)
    {
        var folder = Path.Combine(_folder.Path, "copy-" + ++_copies);
        Directory.CreateDirectory(folder);
        foreach (var file in Directory.GetFiles(Path.GetDirectoryName(db)!, Path.GetFileName(db) + "*"))
        {
            File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        }

        return Path.Combine(folder, Path.GetFileName(db));
    }
}
