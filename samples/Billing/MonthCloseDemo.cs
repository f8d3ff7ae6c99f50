using System.Data.Common;
using System.Diagnostics;
using System.Globalization;
using Converge.Jobs;
using Converge.Samples.Billing.Simulation;
using Converge.Storage;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.Samples.Billing;

/// <summary>What the month-close demo runs.</summary>
public sealed class MonthCloseSettings
{
    /// <summary>Accounts to seed when the database has none (an existing database keeps its accounts).</summary>
    public long Accounts { get; init; } = 10_000;

    /// <summary>
    /// The database file: new, or one a previous run left (the close then resumes). <c>null</c>: a new temporary
    /// file. Ignored when <see cref="PostgreSql"/> is set.
    /// </summary>
    public string? DbPath { get; init; }

    /// <summary>
    /// A PostgreSQL connection string: the close then runs in <see cref="Schema"/> of that database instead of a
    /// SQLite file. A schema that holds the billing tables already is resumed, like an existing file.
    /// </summary>
    public string? PostgreSql { get; init; }

    /// <summary>A RabbitMQ broker that carries the message queues (the store stays the outbox and inbox); <c>null</c>: none.</summary>
    public Uri? RabbitMq { get; init; }

    /// <summary>With <see cref="PostgreSql"/>: the schema for Converge's tables and the billing tables.</summary>
    public string Schema { get; init; } = "converge_billing";

    /// <summary>
    /// The folder of the simulated provider's ledger and the email service's sent mail (SQLite files every process
    /// of the run opens). <c>null</c>: beside the SQLite file, or on PostgreSQL a folder under the temporary folder
    /// named after the server, database and schema, so a resumed close finds them again.
    /// </summary>
    public string? SimulationFolder { get; init; }

    /// <summary>
    /// Worker processes that run the close, each a <c>serve</c> of this program on the same store; 0 runs it in
    /// this process. With workers, this process only seeds, triggers, watches and checks.
    /// </summary>
    public int Processes { get; init; }

    /// <summary>With <see cref="Processes"/>: kill a worker this many times with SIGKILL while the close runs, starting it again each time.</summary>
    public int Kills { get; init; }

    /// <summary>
    /// The command line that starts a worker process (a program and its first arguments), to which the worker's
    /// <c>serve</c> arguments are appended. Default (<c>null</c>): the dotnet host running this sample's assembly. An
    /// application that carries the sample, such as the <c>converge</c> tool, passes itself, so that its workers load
    /// with its dependencies.
    /// </summary>
    public IReadOnlyList<string>? WorkerCommand { get; init; }

    /// <summary>Lines about the worker processes: started, killed, and whatever they print. Called from several threads, one line at a time.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>The period to close ("yyyy-MM"); <c>null</c>: the month before the current one in the billing time zone.</summary>
    public string? Period { get; init; }

    /// <summary>The time zone, provider, email and seed settings.</summary>
    public BillingOptions Billing { get; init; } = new();

    /// <summary>
    /// Give up waiting for the finance report after this long (counted from the trigger), report what is still in
    /// flight and fail; running the demo again resumes the close. <c>null</c>: <see cref="DefaultDeadline"/> for the
    /// accounts in the store.
    /// </summary>
    public TimeSpan? Deadline { get; init; }

    /// <summary>The deadline when none is given: two minutes, and 5 ms more per account (10,000 accounts: 170 s).</summary>
    public static TimeSpan DefaultDeadline(long accounts) => TimeSpan.FromMinutes(2) + (TimeSpan.FromMilliseconds(5) * Math.Max(accounts, 0));

    /// <summary>How often progress is reported while the close runs.</summary>
    public TimeSpan ProgressInterval { get; init; } = TimeSpan.FromMilliseconds(500);
}

/// <summary>Where the demo stands: <c>seed</c> (accounts written), <c>close</c> (invoices settled), <c>check</c>.</summary>
/// <param name="Batch">The batch's counters while the close runs; <c>null</c> before it exists.</param>
public sealed record MonthCloseProgress(string Stage, long Done, long Total, JobBatchRecord? Batch, string? Note);

/// <summary>
/// The demo's outcome, counted from the store's tables, the provider's ledger and the email service's store.
/// <c>Processes</c> is the number of worker processes, <c>Kills</c> how many times one was killed, <c>Store</c>
/// <c>sqlite</c> or <c>postgresql</c>. <c>DoubleCharges</c> counts accounts the provider's ledger shows charged more
/// than once for the period and <c>LostCharges</c> invoices that record a charge the ledger does not hold, whatever
/// the keys. When the close did not finish (<c>DeadlineReached</c>), <c>JobsNotFinished</c> (the close's batch) and
/// <c>MessagesQueued</c> (every queue, jobs included) say what was still under way. <c>DeadLetters</c> counts the
/// store's dead letters.
/// </summary>
public sealed record MonthCloseReport(
    string Period,
    long Accounts,
    long Invoiced,
    long Charged,
    long SkippedAlreadyPaid,
    long Credited,
    long Held,
    long StillOpen,
    long ChangedAfterAsOf,
    long Emails,
    IReadOnlyDictionary<string, long> EmailsByLanguage,
    long DoubleCharges,
    long DuplicateEmails,
    long ProviderReplays,
    long ProviderThrottled,
    long ProviderUnavailable,
    long Declined,
    IReadOnlyDictionary<string, long> HoldsByReason,
    long InvoicedCents,
    long CollectedCents,
    long CreditAppliedCents,
    bool FinanceReport,
    long FailedJobs,
    long Violations,
    IReadOnlyList<string> ViolationExamples,
    long SeededAccounts,
    bool Resumed,
    bool Finished,
    double Seconds,
    double AccountsPerSecond,
    string TimeZone,
    string Db,
    int Processes,
    int Kills,
    string Store,
    long LostCharges,
    long DeadLetters,
    long JobsNotFinished,
    long MessagesQueued,
    bool DeadlineReached,
    double DeadlineSeconds);

/// <summary>
/// The month close end to end: seeds the accounts, starts a host with the billing jobs (or worker processes that
/// run them, some of them killed along the way), triggers the close of the period, waits until its finance report
/// exists and checks the outcome. Run it again on the same file or schema after a crash and it resumes: the trigger
/// finds the first close, the batch and its jobs are where they were.
/// </summary>
public static class MonthCloseDemo
{
    public static async Task<MonthCloseReport> RunAsync(MonthCloseSettings settings, Action<MonthCloseProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var report = progress ?? (_ => { });
        var store = settings.PostgreSql is { } connectionString
            ? DemoStore.PostgreSql(connectionString, settings.Schema)
            : DemoStore.Sqlite(settings.DbPath ?? Path.Combine(Path.GetTempPath(), "converge-billing-" + Guid.NewGuid().ToString("N") + ".db"));
        store.RabbitMq = settings.RabbitMq;
        var resumed = store.IsPostgreSql ? await store.TableExistsAsync("billing_accounts", cancellationToken) : File.Exists(store.Path);
        var folder = settings.SimulationFolder ?? (store.IsPostgreSql ? store.DefaultSimulationFolder("billing") : null);
        var files = folder is null ? BillingFiles.Beside(store.Path!) : BillingFiles.In(folder);
        if (!resumed)
        {
            PrepareFiles(files, defaultLocation: settings.SimulationFolder is null);
        }

        var billing = settings.Billing;
#pragma warning disable RS0030 // The demo composes its host here, for the command line and the sample's program alike.
        var clock = TimeProvider.System;
#pragma warning restore RS0030
        var period = settings.Period ?? BillingPeriod.Previous(clock.GetUtcNow(), billing.Zone());
        BillingPeriod.Parse(period);
        var log = Serialized(settings.Log);

        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddBilling(store.Use, files, billing, o =>
        {
            Tune(o);
            if (settings.Processes > 0)
            {
                // The workers run the close; this process seeds, triggers and watches.
                o.RunConsumers = false;
                o.Jobs.RunScheduler = false;
            }
        });
        long seeded;
        bool finished;
        TimeSpan deadline;
        StoreStatus status;
        long jobsNotFinished;
        var kills = 0;
        var started = Stopwatch.GetTimestamp();
        var workers = new List<DemoWorker>();
        using (var host = builder.Build())
        {
            await host.StartAsync(cancellationToken);
            try
            {
                var messages = host.Services.GetRequiredService<IMessageStore>();
                await BillingTables.CreateAsync(messages, cancellationToken);
                report(new MonthCloseProgress("seed", 0, settings.Accounts, null, resumed ? $"resuming on {store.Describe()}" : null));
                seeded = await BillingTables.SeedAccountsAsync(
                    messages, settings.Accounts, billing.Seed, clock.GetUtcNow(), done => report(new MonthCloseProgress("seed", done, settings.Accounts, null, null)), cancellationToken);
                report(new MonthCloseProgress("seed", settings.Accounts, settings.Accounts, null, seeded == 0 ? "accounts already there" : null));

                var startWorker = (int number) => StartWorkerAsync(store, folder, billing, DemoWorker.Command(settings.WorkerCommand, typeof(MonthCloseDemo).Assembly), number, log, cancellationToken);
                for (var number = 1; number <= settings.Processes; number++)
                {
                    workers.Add(await startWorker(number));
                }

                var jobs = host.Services.GetRequiredService<IJobClient>();
                await using var connection = await messages.Database().OpenReadConnectionAsync(cancellationToken);
                var accounts = await connection.ScalarAsync("SELECT count(*) FROM billing_accounts", cancellationToken);
                if (!await FinanceReportExistsAsync(connection, period, cancellationToken))
                {
                    var trigger = await BillingSetup.TriggerCloseAsync(jobs, period, cancellationToken);
                    report(new MonthCloseProgress("close", 0, accounts, null, trigger.Duplicate ? $"the close of {period} was triggered before; resuming it" : $"closing {period}"));
                }

                // Kill points: shares of the accounts settled, so every kill lands while the close is under way.
                var random = new Random(billing.Seed);
                var killAt = new Queue<long>(Enumerable.Range(0, workers.Count > 0 ? settings.Kills : 0)
                    .Select(_ => (long)(accounts * (0.1 + (random.NextDouble() * 0.7))))
                    .Order());
                async Task<bool> KillAsync(long settled)
                {
                    while (killAt.TryPeek(out var point) && settled >= point)
                    {
                        killAt.Dequeue();
                        var index = random.Next(workers.Count);
                        var worker = workers[index];
                        var exitCode = await worker.KillAsync(cancellationToken);
                        kills++;
                        log($"kill {kills}: {worker.Name} (process {worker.Id}, exit code {exitCode}) at {settled:N0} of {accounts:N0} settled; starting it again");
                        await worker.DisposeAsync();
                        workers[index] = await startWorker(index + 1);
                    }

                    return killAt.Count > 0;
                }

                deadline = settings.Deadline ?? MonthCloseSettings.DefaultDeadline(accounts);
                finished = await WaitForFinanceReportAsync(connection, jobs, period, accounts, settings, deadline, report, killAt.Count > 0 ? KillAsync : null, cancellationToken);

                // What is still under way, before the workers stop: at the deadline, this is what did not finish.
                status = await messages.Queries().GetStatusAsync(cancellationToken);
                jobsNotFinished = (await jobs.GetBatchAsync(BillingPeriod.BatchId(period), cancellationToken))?.Pending ?? 0;
                if (!finished)
                {
                    log($"deadline: {deadline.TotalSeconds:0.#} s passed without the finance report; {jobsNotFinished} jobs of the close not finished, {Queued(status)} messages queued");
                }

                foreach (var worker in workers)
                {
                    await worker.StopAsync(TimeSpan.FromSeconds(30));
                }
            }
            finally
            {
                foreach (var worker in workers)
                {
                    await worker.DisposeAsync();
                }

                // A job that does not return must not hold the demo past its summary: stopping is bounded too.
                using var stopping = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                try
                {
                    await host.StopAsync(stopping.Token);
                }
                catch (OperationCanceledException)
                {
                    log("the demo's host did not stop within 30 s; leaving it to the process's end");
                }
            }
        }

        var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        report(new MonthCloseProgress("check", 0, 1, null, "checking every account against the provider's ledger and the sent mail"));
        Outcome outcome;
        await using (var connection = await store.OpenConnectionAsync(cancellationToken))
        {
            outcome = await CheckAsync(connection, files, period, cancellationToken);
        }

        var provider = PaymentProvider.ReadSummary(files.ProviderLedger);
        report(new MonthCloseProgress("check", 1, 1, null, null));
        return new MonthCloseReport(
            period,
            outcome.Accounts,
            outcome.Invoiced,
            outcome.Charged,
            outcome.SkippedAlreadyPaid,
            outcome.Credited,
            outcome.Held,
            outcome.StillOpen,
            outcome.ChangedAfterAsOf,
            outcome.Emails,
            outcome.EmailsByLanguage,
            outcome.DoubleCharges,
            outcome.DuplicateEmails,
            outcome.ProviderReplays,
            provider.Throttled,
            provider.Unavailable,
            outcome.Declined,
            outcome.HoldsByReason,
            outcome.InvoicedCents,
            outcome.CollectedCents,
            outcome.CreditAppliedCents,
            outcome.FinanceReport,
            outcome.FailedJobs,
            outcome.Violations.Count,
            [.. outcome.Violations.Take(10)],
            seeded,
            resumed,
            finished,
            Math.Round(seconds, 3),
            Math.Round(outcome.Invoiced / Math.Max(seconds, 0.001), 1),
            billing.TimeZone,
            store.Describe(),
            settings.Processes,
            kills,
            store.Kind,
            outcome.LostCharges,
            status.DeadLetters,
            jobsNotFinished,
            Queued(status),
            !finished,
            deadline.TotalSeconds);
    }

    /// <summary>Messages and jobs on every queue: ready, scheduled or being handled.</summary>
    static long Queued(StoreStatus status) => status.Queues.Sum(q => q.Ready + q.Scheduled + q.InFlight);

    /// <summary>The demo's Converge settings: quick polling and retries, and short leases so a killed worker's jobs come back soon.</summary>
    public static void Tune(Converge.Runtime.ConvergeOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        o.PollInterval = TimeSpan.FromMilliseconds(50);
        o.LeaseDuration = TimeSpan.FromSeconds(5);
        o.Retry.InitialDelay = TimeSpan.FromMilliseconds(50);
        o.Retry.MaxDelay = TimeSpan.FromSeconds(2);
    }

    /// <summary>
    /// A new close needs new files for the simulated services: invoice ids repeat from run to run, and so would the
    /// idempotency keys the provider and the email service remember. Files in the default place belong to a store
    /// that is gone (a new run checked that), so they are removed; files in a folder the user named are theirs.
    /// </summary>
    static void PrepareFiles(BillingFiles files, bool defaultLocation)
    {
        if (File.Exists(files.ProviderLedger) || File.Exists(files.Mailbox))
        {
            if (!defaultLocation)
            {
                throw new ArgumentException(
                    $"{Path.GetDirectoryName(files.ProviderLedger)} already holds the simulated services' files of another close; name an empty folder, or the store that close ran on.");
            }

            foreach (var file in files.All())
            {
                File.Delete(file);
            }
        }

        Directory.CreateDirectory(Path.GetDirectoryName(files.ProviderLedger)!);
    }

    /// <summary>Starts worker <paramref name="number"/>: <c>serve</c> of <paramref name="command"/> on the same store and files, and waits until it serves.</summary>
    static async Task<DemoWorker> StartWorkerAsync(DemoStore store, string? folder, BillingOptions billing, IReadOnlyList<string> command, int number, Action<string> log, CancellationToken cancellationToken)
    {
        var name = "worker " + number.ToString(CultureInfo.InvariantCulture);
        List<string> arguments = ["serve", .. store.WorkerArguments()];
        if (folder is not null)
        {
            arguments.AddRange(["--sim-dir", folder]);
        }

        arguments.Add(billing.ProviderLatency.TotalMilliseconds.ToString(CultureInfo.InvariantCulture));
        arguments.Add(billing.Seed.ToString(CultureInfo.InvariantCulture));

        // Retries after a 429 or 503 are the demo working as meant; only errors are worth a line.
        arguments.AddRange(["--log-level", "error"]);
        var worker = await DemoWorker.StartAsync(name, command, arguments, store, log, cancellationToken);
        log($"{name}: process {worker.Id}");
        return worker;
    }

    /// <summary>Lines from several threads (the workers' output readers) one at a time.</summary>
    static Action<string> Serialized(Action<string>? log)
    {
        if (log is null)
        {
            return _ => { };
        }

        var gate = new Lock();
        return line =>
        {
            lock (gate)
            {
                log(line);
            }
        };
    }

    /// <summary>
    /// Polls until the finance report exists (true) or the deadline passes (false), reporting progress. While kills
    /// are planned, <paramref name="kill"/> gets the settled count at every poll, which is then more frequent, so a
    /// kill lands close to its point; it answers whether more kills are planned.
    /// </summary>
    static async Task<bool> WaitForFinanceReportAsync(
        DbConnection connection, IJobClient jobs, string period, long accounts, MonthCloseSettings settings, TimeSpan deadline, Action<MonthCloseProgress> report,
        Func<long, Task<bool>>? kill, CancellationToken cancellationToken)
    {
        var waited = Stopwatch.StartNew();
        var batchId = BillingPeriod.BatchId(period);
        var reported = Stopwatch.StartNew();
        var first = true;
        while (true)
        {
            var done = await FinanceReportExistsAsync(connection, period, cancellationToken);
            var settled = await connection.ScalarAsync(
                "SELECT count(*) FROM billing_invoices WHERE period = @period AND status <> 'open'", cancellationToken, ("@period", period));
            if (done || first || reported.Elapsed >= settings.ProgressInterval)
            {
                var batch = await jobs.GetBatchAsync(batchId, cancellationToken);
                report(new MonthCloseProgress("close", settled, accounts, batch, done ? "finance report written" : null));
                reported.Restart();
                first = false;
            }

            if (done)
            {
                return true;
            }

            if (waited.Elapsed > deadline)
            {
                return false;
            }

            if (kill is not null && !await kill(settled))
            {
                kill = null;
            }

            await Task.Delay(kill is null ? settings.ProgressInterval : TimeSpan.FromMilliseconds(50), cancellationToken);
        }
    }

    static async Task<bool> FinanceReportExistsAsync(DbConnection connection, string period, CancellationToken cancellationToken) =>
        await connection.ScalarAsync("SELECT count(*) FROM billing_finance_reports WHERE period = @period", cancellationToken, ("@period", period)) > 0;

    /// <summary>The outcome of a close as the databases record it, and every rule it breaks.</summary>
    public sealed record Outcome(
        long Accounts,
        long Invoiced,
        long Charged,
        long SkippedAlreadyPaid,
        long Credited,
        long Held,
        long StillOpen,
        long ChangedAfterAsOf,
        long Emails,
        IReadOnlyDictionary<string, long> EmailsByLanguage,
        long DoubleCharges,
        long LostCharges,
        long DuplicateEmails,
        long ProviderReplays,
        long Declined,
        IReadOnlyDictionary<string, long> HoldsByReason,
        long InvoicedCents,
        long CollectedCents,
        long CreditAppliedCents,
        bool FinanceReport,
        long FailedJobs,
        IReadOnlyList<string> Violations);

    /// <summary>
    /// Checks the close of <paramref name="period"/> on the SQLite database at <paramref name="databasePath"/>, with the
    /// provider's ledger and the email service's store beside it; see <see cref="CheckAsync(DbConnection, BillingFiles, string, CancellationToken)"/>.
    /// </summary>
    public static async Task<Outcome> CheckAsync(string databasePath, string period, CancellationToken cancellationToken)
    {
        await using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = databasePath, Pooling = false }.ToString());
        await connection.OpenAsync(cancellationToken);
        return await CheckAsync(connection, BillingFiles.Beside(databasePath), period, cancellationToken);
    }

    /// <summary>
    /// Checks the close of <paramref name="period"/> on the store <paramref name="connection"/> opens (SQLite or
    /// PostgreSQL) against the provider's ledger and the email service's store in <paramref name="files"/>: every
    /// account settled exactly once (one invoice, in a final state), charged amounts match the ledger with one
    /// charge per invoice, one receipt per charged or credited invoice and none for the others, held invoices have
    /// a hold and an account on hold, skipped invoices were paid, no credit below zero, and the finance report
    /// agrees with the invoices. A double charge is an account charged more than once for the period and a lost
    /// charge an invoice that records a charge the ledger does not hold, both counted from the provider's ledger
    /// whatever keys the charges came with. Run it when no process works on the files.
    /// </summary>
    public static async Task<Outcome> CheckAsync(DbConnection connection, BillingFiles files, string period, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(files);
        var mailbox = EmailService.ReadSummary(files.Mailbox);
        var prefix = "INV-" + period + "-";

        // The outside services keep their own files, so they are read into memory per account and set against the
        // invoices as these are read, rather than joined in SQL. Charges are counted per account and period, as the
        // provider's ledger records them, whatever key or reference they came with: an invoice created twice under
        // another id, or a charge job enqueued again under another key, still shows as a second charge.
        var charges = new Dictionary<long, (long Count, long Cents)>();
        var emails = new Dictionary<long, long>();
        var byLanguage = new SortedDictionary<string, long>(StringComparer.Ordinal);
        long declined = 0, replays = 0;
        await using (var provider = await OpenOutsideAsync(files.ProviderLedger, cancellationToken))
        {
            if (provider is not null)
            {
                foreach (var (account, succeeded, cents, declines, replayed) in await provider.ReadAllAsync(
                    """
                    SELECT account_id, count(*) FILTER (WHERE status = 'succeeded'), coalesce(sum(amount_cents) FILTER (WHERE status = 'succeeded'), 0),
                           count(*) FILTER (WHERE status = 'declined'), coalesce(sum(replays), 0)
                    FROM charges WHERE period = @period GROUP BY account_id
                    """,
                    r => (r.Int64(0), r.Int64(1), r.Int64(2), r.Int64(3), r.Int64(4)),
                    cancellationToken,
                    ("@period", period)))
                {
                    if (succeeded > 0)
                    {
                        charges[account] = (succeeded, cents);
                    }

                    declined += declines;
                    replays += replayed;
                }
            }
        }

        await using (var mail = await OpenOutsideAsync(files.Mailbox, cancellationToken))
        {
            if (mail is not null)
            {
                foreach (var (reference, language, count) in await mail.ReadAllAsync(
                    "SELECT reference, language, count(*) FROM emails WHERE reference LIKE @prefix GROUP BY reference, language",
                    r => (r.GetString(0), r.GetString(1), r.Int64(2)),
                    cancellationToken,
                    ("@prefix", prefix + "%")))
                {
                    var account = AccountOf(reference);
                    emails[account] = emails.GetValueOrDefault(account) + count;
                    byLanguage[language] = byLanguage.GetValueOrDefault(language) + count;
                }
            }
        }

        var violations = new List<string>();
        var p = ("@period", (object?)period);

        async Task Rule(string sql, Func<DbDataReader, string> describe, params (string, object?)[] parameters)
        {
            foreach (var violation in await connection.ReadAllAsync(sql, describe, cancellationToken, parameters))
            {
                violations.Add(violation);
            }
        }

        await Rule(
            """
            SELECT a.id, (SELECT count(*) FROM billing_invoices i WHERE i.account_id = a.id AND i.period = @period)
            FROM billing_accounts a
            WHERE (SELECT count(*) FROM billing_invoices i WHERE i.account_id = a.id AND i.period = @period) <> 1
            """,
            r => $"account {r.Int64(0)}: {r.Int64(1)} invoices for the period, expected 1",
            p);
        await Rule(
            "SELECT id, status FROM billing_invoices WHERE period = @period AND status NOT IN ('charged', 'credited', 'skipped_already_paid', 'held')",
            r => $"{r.GetString(0)}: never settled (status {r.GetString(1)})",
            p);

        // Every invoice against the provider's ledger and the sent mail: one charge of exactly what the invoice
        // records as charged (none when nothing was), one receipt per charged or credited invoice and none otherwise.
        var invoiced = new HashSet<long>();
        long lost = 0;
        foreach (var violation in await connection.ReadAllAsync(
            "SELECT id, account_id, status, charged_cents FROM billing_invoices WHERE period = @period",
            r =>
            {
                var (id, account, status, charged) = (r.GetString(0), r.Int64(1), r.GetString(2), r.Int64(3));
                invoiced.Add(account);
                var (count, cents) = charges.GetValueOrDefault(account);
                lost += charged > 0 && count == 0 ? 1 : 0;
                var sent = emails.GetValueOrDefault(account);
                var receipts = status is InvoiceStatus.Charged or InvoiceStatus.Credited ? 1 : 0;
                return count != (charged > 0 ? 1 : 0) || cents != charged
                    ? $"{id}: {status} with {charged} charged, but the provider's ledger holds {count} charge(s) of {cents} in total"
                    : sent != receipts ? $"{id}: {status} with {sent} receipt(s) sent" : null;
            },
            cancellationToken,
            p))
        {
            if (violation is not null)
            {
                violations.Add(violation);
            }
        }

        foreach (var account in charges.Keys.Where(a => !invoiced.Contains(a)).Order().Take(10))
        {
            violations.Add($"{BillingPeriod.InvoiceId(period, account)}: charged at the provider, but there is no such invoice");
        }

        await Rule(
            """
            SELECT i.id, i.status, i.charged_cents, i.credit_applied_cents FROM billing_invoices i
            WHERE i.period = @period AND (
                (i.status = 'charged' AND i.credit_applied_cents <> 0)
                OR (i.status = 'credited' AND (i.credit_applied_cents <= 0 OR i.charged_cents + i.credit_applied_cents + i.paid_cents <> i.amount_cents))
                OR (i.status = 'charged' AND i.charged_cents + i.paid_cents <> i.amount_cents)
                OR (i.status IN ('skipped_already_paid', 'held') AND (i.charged_cents <> 0 OR i.credit_applied_cents <> 0)))
            """,
            r => $"{r.GetString(0)}: {r.GetString(1)} but charged {r.Int64(2)} and credited {r.Int64(3)}",
            p);
        await Rule(
            """
            SELECT i.id, h.invoice_id IS NOT NULL, a.status FROM billing_invoices i
            JOIN billing_accounts a ON a.id = i.account_id LEFT JOIN billing_holds h ON h.invoice_id = i.id
            WHERE i.period = @period AND i.status = 'held' AND (h.invoice_id IS NULL OR a.status <> 'on_hold')
            """,
            r => $"{r.GetString(0)}: held, but {(r.GetBoolean(1) ? "" : "no hold is recorded and ")}the account is {r.GetString(2)}",
            p);
        await Rule(
            "SELECT id, paid_cents, amount_cents FROM billing_invoices WHERE period = @period AND status = 'skipped_already_paid' AND paid_cents < amount_cents",
            r => $"{r.GetString(0)}: skipped as paid, but only {r.Int64(1)} of {r.Int64(2)} was paid",
            p);
        await Rule("SELECT id, credit_cents FROM billing_accounts WHERE credit_cents < 0", r => $"account {r.Int64(0)}: credit {r.Int64(1)} below zero");
        await Rule(
            """
            SELECT f.period FROM billing_finance_reports f
            WHERE f.period = @period AND (
                f.invoices <> (SELECT count(*) FROM billing_invoices WHERE period = @period)
                OR f.invoiced_cents <> (SELECT coalesce(sum(amount_cents), 0) FROM billing_invoices WHERE period = @period)
                OR f.collected_cents <> (SELECT coalesce(sum(charged_cents), 0) FROM billing_invoices WHERE period = @period)
                OR f.still_open <> 0)
            """,
            r => $"finance report {r.GetString(0)}: its totals disagree with the invoices, or it counted open invoices",
            p);
        var doubleCharges = charges.Values.LongCount(c => c.Count > 1);
        if (doubleCharges > 0)
        {
            violations.Add($"the provider's ledger shows {doubleCharges} account(s) charged more than once for {period}");
        }

        if (mailbox.DuplicateEmails > 0)
        {
            violations.Add($"the email service sent {mailbox.DuplicateEmails} duplicate email(s)");
        }

        var counts = (await connection.ReadOneAsync(
            """
            SELECT (SELECT count(*) FROM billing_accounts), count(*),
                   count(*) FILTER (WHERE status = 'charged'), count(*) FILTER (WHERE status = 'skipped_already_paid'), count(*) FILTER (WHERE status = 'credited'),
                   count(*) FILTER (WHERE status = 'held'), count(*) FILTER (WHERE status = 'open'), coalesce(sum(changed_after_as_of), 0),
                   coalesce(sum(amount_cents), 0), coalesce(sum(charged_cents), 0), coalesce(sum(credit_applied_cents), 0),
                   (SELECT count(*) FROM billing_finance_reports WHERE period = @period),
                   coalesce((SELECT failed_jobs FROM billing_finance_reports WHERE period = @period), 0)
            FROM billing_invoices WHERE period = @period
            """,
            r => Enumerable.Range(0, 13).Select(r.Int64).ToArray(),
            cancellationToken,
            p))!;

        var holds = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var (reason, count) in await connection.ReadAllAsync(
            "SELECT h.reason, count(*) FROM billing_holds h JOIN billing_invoices i ON i.id = h.invoice_id WHERE i.period = @period GROUP BY h.reason",
            r => (r.GetString(0), r.Int64(1)), cancellationToken, p))
        {
            holds[reason] = count;
        }

        return new Outcome(
            Accounts: counts[0],
            Invoiced: counts[1],
            Charged: counts[2],
            SkippedAlreadyPaid: counts[3],
            Credited: counts[4],
            Held: counts[5],
            StillOpen: counts[6],
            ChangedAfterAsOf: counts[7],
            Emails: byLanguage.Values.Sum(),
            EmailsByLanguage: byLanguage,
            DoubleCharges: doubleCharges,
            LostCharges: lost,
            DuplicateEmails: mailbox.DuplicateEmails,
            ProviderReplays: replays,
            Declined: declined,
            HoldsByReason: holds,
            InvoicedCents: counts[8],
            CollectedCents: counts[9],
            CreditAppliedCents: counts[10],
            FinanceReport: counts[11] > 0,
            FailedJobs: counts[12],
            Violations: counts[11] > 0 ? violations : [.. violations, $"no finance report for {period}: the batch did not finish"]);
    }

    /// <summary>The account id an invoice id ends in (see <see cref="BillingPeriod.InvoiceId"/>).</summary>
    static long AccountOf(string invoiceId) => long.Parse(invoiceId.AsSpan(invoiceId.LastIndexOf('-') + 1), CultureInfo.InvariantCulture);

    /// <summary>Opens a simulated service's file read-only, or returns <c>null</c> when the service never ran.</summary>
    static async Task<SqliteConnection?> OpenOutsideAsync(string path, CancellationToken cancellationToken)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString());
        await connection.OpenAsync(cancellationToken);
        return connection;
    }
}
