using System.Diagnostics;
using System.Globalization;
using Converge.CrashWorker;
using Converge.Hosting;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit.Abstractions;

namespace Converge.EndToEnd.Tests;

/// <summary>
/// The crash test: a separate worker process handles messages whose handlers write effect rows in the same
/// database, is killed with SIGKILL at random moments and restarted, and every effect must exist exactly once.
/// </summary>
public sealed class CrashTests(ITestOutputHelper output)
{
    const int MessageCount = 20_000;
    const int SendTransactionSize = 1_000;

    /// <summary>Kills that must land while work remains; one more is planned, in case the last one comes too late.</summary>
    const int MinKills = 5;
    const int MaxKills = 8;
    const string SeedVariable = "CONVERGE_CRASH_SEED";

    /// <summary>How long the workers may go without reaching the next point before the test fails.</summary>
    static readonly TimeSpan ProgressTimeout = TimeSpan.FromSeconds(60);
    static readonly TimeSpan ExitTimeout = TimeSpan.FromSeconds(30);
    static readonly TimeSpan PollDelay = TimeSpan.FromMilliseconds(10);

    [Fact]
    public async Task Worker_killed_with_SIGKILL_at_random_moments_leaves_every_effect_exactly_once()
    {
        var seed = Environment.GetEnvironmentVariable(SeedVariable) is { Length: > 0 } given
            ? int.Parse(given, CultureInfo.InvariantCulture)
            : Random.Shared.Next();
        var random = new Random(seed);
        var thresholds = Enumerable.Range(0, random.Next(MinKills + 1, MaxKills + 1))
            .Select(_ => (long)random.Next(MessageCount * 5 / 100, (MessageCount * 90 / 100) + 1))
            .Order()
            .ToList();

        // After a kill point is seen, a little more time (up to about one batch) passes before the kill, so that
        // kills land anywhere in a batch: while claiming, in a handler, or during the commit.
        var delays = thresholds.Select(_ => TimeSpan.FromMilliseconds(random.Next(0, 40))).ToList();
        output.WriteLine($"seed {seed} (replay with {SeedVariable}={seed}); kill when the effects reach {string.Join(", ", thresholds)}");

        // The test host keeps thread-pool threads blocked for the whole run, and on a 2-core machine the pool
        // starts with only two. Without spare threads the timer behind each poll, and the completion of each
        // kill, wait for the pool to add a thread (about half a second) while the worker handles thousands of
        // messages, and the kills land far past their points.
        ThreadPool.GetMinThreads(out var minWorkers, out var minIo);
        ThreadPool.SetMinThreads(Math.Max(minWorkers, 16), minIo);

        var folder = Path.Combine(Path.GetTempPath(), "converge-crash-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        var databasePath = Path.Combine(folder, "crash.db");
        var log = new WorkerLog();
        var workers = new List<WorkerProcess>();
        try
        {
            // The test process only sends: its host migrates the schema and owns the outbox.
            var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
            builder.Services.AddConverge(o => CrashScenario.Configure(o, databasePath, runConsumers: false));
            using var host = builder.Build();
            await host.StartAsync();
            var store = (SqliteMessageStore)host.Services.GetRequiredService<IMessageStore>();
            var bus = host.Services.GetRequiredService<IMessageBus>();
            using var db = store.OpenConnection();
            Execute(db, CrashScenario.CreateEffectsTable);
            await EnqueueAsync(db, bus);

            var clock = Stopwatch.StartNew();
            WorkerProcess StartWorker()
            {
                var worker = WorkerProcess.Start(databasePath, workers.Count + 1, log);
                workers.Add(worker);
                return worker;
            }

            var current = StartWorker();
            var countsAtKill = new List<long>();
            var atStart = 0L;
            for (var i = 0; i < thresholds.Count; i++)
            {
                // Each worker commits at least one batch before it is killed, so every kill lands in a working
                // process: a worker that ran past several kill points would otherwise be followed by workers
                // killed while still starting.
                var seen = await current.WaitForProgressAsync(() => Count(db, $"SELECT count(*) FROM {CrashScenario.EffectsTable}"), Math.Max(thresholds[i], atStart + 1), MessageCount, "effects", log, ProgressTimeout, PollDelay);
                await Task.Delay(delays[i]);
                await current.KillAsync(ExitTimeout);
                var atKill = Count(db, $"SELECT count(*) FROM {CrashScenario.EffectsTable}");
                countsAtKill.Add(atKill);
                output.WriteLine($"{clock.Elapsed.TotalSeconds,6:F2}s kill {i + 1} (worker {current.Number}, exit code {current.ExitCode}): threshold {thresholds[i]}, seen {seen}, +{delays[i].TotalMilliseconds} ms, effects at kill {atKill}");
                atStart = atKill;
                current = StartWorker();
            }

            var status = await WaitUntilDrainedAsync(store, current, log);
            var exitCode = await current.StopAsync(ExitTimeout);
            output.WriteLine($"{clock.Elapsed.TotalSeconds,6:F2}s drained; worker {current.Number} stopped with exit code {exitCode}");
            Assert.True(exitCode == 0, $"The last worker did not stop cleanly (exit code {exitCode}).\n{log.Tail()}");
            status = await store.GetStatusAsync(CancellationToken.None);

            var effects = Count(db, $"SELECT count(*) FROM {CrashScenario.EffectsTable}");
            var distinctSeqs = Count(db, $"SELECT count(DISTINCT seq) FROM {CrashScenario.EffectsTable}");
            var distinctIds = Count(db, $"SELECT count(DISTINCT message_id) FROM {CrashScenario.EffectsTable}");
            var inRange = Count(db, $"SELECT count(*) FROM {CrashScenario.EffectsTable} WHERE seq BETWEEN 0 AND {MessageCount - 1}");
            output.WriteLine($"effects {effects}, distinct seq {distinctSeqs}, distinct message ids {distinctIds}, inbox records {status.InboxRecords}");

            var problems = Describe(db);
            Assert.True(effects == MessageCount, $"Expected {MessageCount} effect rows, found {effects}. {problems}");
            Assert.True(distinctSeqs == MessageCount, $"Expected {MessageCount} distinct seq values, found {distinctSeqs}. {problems}");
            Assert.True(distinctIds == MessageCount, $"Expected {MessageCount} distinct message ids, found {distinctIds}. {problems}");
            Assert.Equal(MessageCount, inRange);
            Assert.All(status.Queues, q => Assert.Equal((0L, 0L, 0L), (q.Ready, q.Scheduled, q.InFlight)));
            var deadLetters = await store.ListDeadLettersAsync(null, 10, CancellationToken.None);
            Assert.True(
                status.DeadLetters == 0,
                $"{status.DeadLetters} dead letters, for example: {string.Join("; ", deadLetters.Select(d => $"{d.Reason} after {d.Attempts} attempts"))}");
            Assert.Equal(MessageCount, status.InboxRecords);

            var killsWithWorkLeft = countsAtKill.Count(c => c < MessageCount);
            Assert.True(killsWithWorkLeft >= MinKills, $"Only {killsWithWorkLeft} kills happened while work remained (effects at each kill: {string.Join(", ", countsAtKill)}).");
            output.WriteLine($"{clock.Elapsed.TotalSeconds,6:F2}s done: {killsWithWorkLeft} kills, {workers.Count} workers");

            await host.StopAsync();
        }
        finally
        {
            foreach (var worker in workers)
            {
                worker.Dispose();
            }

            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (IOException exception)
            {
                output.WriteLine($"Could not delete {folder}: {exception.Message}");
            }
        }
    }

    /// <summary>Sends every message through the outbox, in transactions of <see cref="SendTransactionSize"/>.</summary>
    static async Task EnqueueAsync(SqliteConnection db, IMessageBus bus)
    {
        for (var first = 0; first < MessageCount; first += SendTransactionSize)
        {
            using var transaction = db.BeginTransaction();
            for (var seq = first; seq < first + SendTransactionSize; seq++)
            {
                await bus.SendAsync(new CrashMessage(seq), transaction);
            }

            transaction.Commit();
        }
    }

    /// <summary>Polls until no message is left in any queue (ready, scheduled or in flight).</summary>
    static async Task<StoreStatus> WaitUntilDrainedAsync(SqliteMessageStore store, WorkerProcess worker, WorkerLog log)
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            var status = await store.GetStatusAsync(CancellationToken.None);
            var remaining = status.Queues.Sum(q => q.Ready + q.Scheduled + q.InFlight);
            if (remaining == 0)
            {
                return status;
            }

            if (worker.HasExited)
            {
                Assert.Fail($"Worker {worker.Number} exited on its own (exit code {worker.ExitCode}) with {remaining} messages left.\n{log.Tail()}");
            }

            if (waited.Elapsed > ProgressTimeout)
            {
                var queues = string.Join(", ", status.Queues.Select(q => $"{q.Queue}: ready {q.Ready}, scheduled {q.Scheduled}, in flight {q.InFlight}"));
                Assert.Fail($"The queues did not drain in {ProgressTimeout.TotalSeconds} s ({queues}).\n{log.Tail()}");
            }

            await Task.Delay(PollDelay);
        }
    }

    /// <summary>Which seq values are doubled or missing, for a failure message.</summary>
    static string Describe(SqliteConnection db)
    {
        var doubled = new List<string>();
        using (var command = db.CreateCommand())
        {
            command.CommandText = $"SELECT seq, count(*) FROM {CrashScenario.EffectsTable} GROUP BY seq HAVING count(*) > 1 ORDER BY seq LIMIT 20";
            using var reader = command.ExecuteReader();
            while (reader.Read())
            {
                doubled.Add($"{reader.GetInt64(0)}x{reader.GetInt64(1)}");
            }
        }

        var present = new HashSet<long>();
        using (var command = db.CreateCommand())
        {
            command.CommandText = $"SELECT DISTINCT seq FROM {CrashScenario.EffectsTable}";
            using var reader = command.ExecuteReader();
            while (reader.Read())
            {
                present.Add(reader.GetInt64(0));
            }
        }

        var missing = Enumerable.Range(0, MessageCount).Where(seq => !present.Contains(seq)).ToList();
        return $"Doubled (seq x rows, first 20): [{string.Join(", ", doubled)}]; missing {missing.Count} (first 20): [{string.Join(", ", missing.Take(20))}].";
    }

    static long Count(SqliteConnection db, string sql)
    {
        using var command = db.CreateCommand();
        command.CommandText = sql;
        return Convert.ToInt64(command.ExecuteScalar(), CultureInfo.InvariantCulture);
    }

    static void Execute(SqliteConnection db, string sql)
    {
        using var command = db.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
