using System.Diagnostics;
using System.Globalization;
using Converge.Jobs;
using Converge.Samples.Billing;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit.Abstractions;

namespace Converge.EndToEnd.Tests;

/// <summary>
/// The month close under crashes: the Billing sample's <c>serve</c> program works the close in a separate process,
/// is killed with SIGKILL at random moments (while it fans out, invoices, charges through the provider and sends
/// receipts) and started again, and in the end every account must be settled exactly once, with no double charge
/// in the provider's ledger and no duplicate email.
/// </summary>
public sealed class MonthCloseCrashTests(ITestOutputHelper output)
{
    const string Period = "2026-11";
    const string SeedVariable = "CONVERGE_CRASH_SEED";
    const string AccountsVariable = "CONVERGE_BILLING_CRASH_ACCOUNTS";

    /// <summary>Kills that must land while work remains; one or two more are planned, in case the last come too late.</summary>
    const int MinKills = 5;
    const int MaxKills = 7;

    /// <summary>The provider's latency in the worker: short, so the test stays within a minute, but calls are still in flight when it is killed.</summary>
    const int LatencyMs = 5;

    static readonly TimeSpan ProgressTimeout = TimeSpan.FromSeconds(60);
    static readonly TimeSpan FinishTimeout = TimeSpan.FromSeconds(120);
    static readonly TimeSpan ExitTimeout = TimeSpan.FromSeconds(30);
    static readonly TimeSpan PollDelay = TimeSpan.FromMilliseconds(20);

    /// <summary>20,000 accounts; 5,000 on CI machines (CI set), or what <see cref="AccountsVariable"/> says.</summary>
    static int Accounts =>
        Environment.GetEnvironmentVariable(AccountsVariable) is { Length: > 0 } given ? int.Parse(given, CultureInfo.InvariantCulture)
        : Environment.GetEnvironmentVariable("CI") is { Length: > 0 } ? 5_000
        : 20_000;

    [Fact]
    public async Task Month_close_worker_killed_with_SIGKILL_at_random_moments_settles_every_account_exactly_once()
    {
        var seed = Environment.GetEnvironmentVariable(SeedVariable) is { Length: > 0 } given
            ? int.Parse(given, CultureInfo.InvariantCulture)
            : Random.Shared.Next();
        var random = new Random(seed);
        var accounts = Accounts;

        // The first kill lands early (by time: during the fan-out or the first invoices), the others when a share of
        // the accounts is settled, and a little after that point, so kills land anywhere in a job: reading, waiting on
        // the provider or the email service, or committing.
        var thresholds = Enumerable.Range(0, random.Next(MinKills, MaxKills + 1))
            .Select(_ => (long)random.Next(accounts * 3 / 100, (accounts * 90 / 100) + 1))
            .Order()
            .Prepend(0)
            .ToList();
        var delays = thresholds.Select((_, i) => TimeSpan.FromMilliseconds(i == 0 ? random.Next(200, 1500) : random.Next(0, 40))).ToList();
        output.WriteLine($"seed {seed} (replay with {SeedVariable}={seed}); {accounts} accounts; kill when settled reach {string.Join(", ", thresholds)}");

        // See CrashTests: spare pool threads keep polling and kills on time on a small machine.
        ThreadPool.GetMinThreads(out var minWorkers, out var minIo);
        ThreadPool.SetMinThreads(Math.Max(minWorkers, 16), minIo);

        var folder = Path.Combine(Path.GetTempPath(), "converge-month-close-crash-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        var databasePath = Path.Combine(folder, "billing.db");
        var log = new WorkerLog();
        var workers = new List<WorkerProcess>();
        try
        {
            // The test process seeds and triggers the close; it runs no consumers and no schedule.
            var billing = new BillingOptions { ProviderLatency = TimeSpan.FromMilliseconds(LatencyMs), Seed = seed };
            var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
            builder.Services.AddBilling(databasePath, billing, o =>
            {
                o.RunConsumers = false;
                o.Jobs.RunScheduler = false;
            });
            using var host = builder.Build();
            await host.StartAsync();
            var store = (SqliteMessageStore)host.Services.GetRequiredService<IMessageStore>();
            var jobs = host.Services.GetRequiredService<IJobClient>();
            await BillingTables.CreateAsync(store, CancellationToken.None);
            await BillingTables.SeedAccountsAsync(store, accounts, seed, TimeProvider.System.GetUtcNow(), null, CancellationToken.None);
            await BillingSetup.TriggerCloseAsync(jobs, Period, CancellationToken.None);
            using var db = store.OpenConnection();

            var clock = Stopwatch.StartNew();
            WorkerProcess StartWorker()
            {
                var worker = WorkerProcess.Start(
                    typeof(MonthCloseDemo).Assembly.Location,
                    ["serve", databasePath, LatencyMs.ToString(CultureInfo.InvariantCulture), seed.ToString(CultureInfo.InvariantCulture), "--watch-stdin"],
                    workers.Count + 1,
                    log);
                workers.Add(worker);
                return worker;
            }

            var current = StartWorker();
            var settledAtKill = new List<long>();
            var atStart = 0L;
            for (var i = 0; i < thresholds.Count; i++)
            {
                // Every worker but the first settles something before it is killed, so each kill lands in a working
                // process rather than one still starting.
                var seen = i == 0 ? 0 : await current.WaitForProgressAsync(() => Settled(db), Math.Max(thresholds[i], atStart + 1), accounts, "settled invoices", log, ProgressTimeout, PollDelay);
                await Task.Delay(delays[i]);
                await current.KillAsync(ExitTimeout);
                var atKill = Settled(db);
                settledAtKill.Add(atKill);
                output.WriteLine($"{clock.Elapsed.TotalSeconds,6:F2}s kill {i + 1} (worker {current.Number}, exit code {current.ExitCode}): threshold {thresholds[i]}, seen {seen}, +{delays[i].TotalMilliseconds} ms, settled at kill {atKill}");
                atStart = atKill;
                current = StartWorker();
            }

            await WaitForFinanceReportAsync(db, current, log);
            output.WriteLine($"{clock.Elapsed.TotalSeconds,6:F2}s finance report written");
            var exitCode = await current.StopAsync(ExitTimeout);
            Assert.True(exitCode == 0, $"The last worker did not stop cleanly (exit code {exitCode}).\n{log.Tail()}");

            var status = await store.GetStatusAsync(CancellationToken.None);
            var deadLetters = await store.ListDeadLettersAsync(null, 10, CancellationToken.None);
            var batch = await jobs.GetBatchAsync(BillingPeriod.BatchId(Period), CancellationToken.None);
            await host.StopAsync();

            var outcome = await MonthCloseDemo.CheckAsync(databasePath, Period, CancellationToken.None);
            output.WriteLine($"invoiced {outcome.Invoiced}: charged {outcome.Charged}, credited {outcome.Credited}, skipped {outcome.SkippedAlreadyPaid}, held {outcome.Held}; " +
                $"receipts {outcome.Emails}; provider replays {outcome.ProviderReplays}; batch {batch?.Succeeded} succeeded, {batch?.Failed} failed of {batch?.Total}");

            Assert.True(outcome.Violations.Count == 0, $"{outcome.Violations.Count} violations, for example:\n{string.Join("\n", outcome.Violations.Take(20))}");
            Assert.Equal(accounts, outcome.Accounts);
            Assert.Equal(accounts, outcome.Invoiced);
            Assert.Equal(accounts, outcome.Charged + outcome.Credited + outcome.SkippedAlreadyPaid + outcome.Held);
            Assert.Equal(0, outcome.StillOpen);
            Assert.Equal(0, outcome.DoubleCharges);
            Assert.Equal(0, outcome.DuplicateEmails);
            Assert.Equal(outcome.Charged + outcome.Credited, outcome.Emails);
            Assert.True(outcome.FinanceReport);
            Assert.Equal(0, outcome.FailedJobs);
            Assert.NotNull(batch);
            Assert.True(batch.Sealed && batch.Pending == 0 && batch.Failed == 0 && batch.FinishedAt is not null, $"The batch did not finish cleanly: {batch}");
            Assert.All(status.Queues, q => Assert.Equal((0L, 0L, 0L), (q.Ready, q.Scheduled, q.InFlight)));
            Assert.True(
                status.DeadLetters == 0,
                $"{status.DeadLetters} dead letters, for example: {string.Join("; ", deadLetters.Select(d => $"{d.Reason} after {d.Attempts} attempts"))}");

            var killsWithWorkLeft = settledAtKill.Count(c => c < accounts);
            Assert.True(killsWithWorkLeft >= MinKills, $"Only {killsWithWorkLeft} kills happened while work remained (settled at each kill: {string.Join(", ", settledAtKill)}).");
            output.WriteLine($"{clock.Elapsed.TotalSeconds,6:F2}s done: {killsWithWorkLeft} kills with work left, {workers.Count} workers");
        }
        finally
        {
            foreach (var worker in workers)
            {
                worker.Dispose();
            }

            SqliteConnection.ClearAllPools();
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

    /// <summary>Polls until the close's completion callback has written the finance report.</summary>
    static async Task WaitForFinanceReportAsync(SqliteConnection db, WorkerProcess worker, WorkerLog log)
    {
        var waited = Stopwatch.StartNew();
        while (Count(db, "SELECT count(*) FROM billing_finance_reports WHERE period = '" + Period + "'") == 0)
        {
            if (worker.HasExited)
            {
                Assert.Fail($"Worker {worker.Number} exited on its own (exit code {worker.ExitCode}) with {Settled(db)} invoices settled.\n{log.Tail()}");
            }

            if (waited.Elapsed > FinishTimeout)
            {
                Assert.Fail($"No finance report after {FinishTimeout.TotalSeconds} s; {Settled(db)} invoices settled.\n{log.Tail()}");
            }

            await Task.Delay(PollDelay);
        }
    }

    static long Settled(SqliteConnection db) =>
        Count(db, "SELECT count(*) FROM billing_invoices WHERE period = '" + Period + "' AND status <> 'open'");

    static long Count(SqliteConnection db, string sql)
    {
        using var command = db.CreateCommand();
        command.CommandText = sql;
        return Convert.ToInt64(command.ExecuteScalar(), CultureInfo.InvariantCulture);
    }
}
