using System.Diagnostics;
using Converge.Jobs;
using Converge.Samples.Billing.Simulation;
using Converge.Sqlite;
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

    /// <summary>The database file: new, or one a previous run left (the close then resumes). <c>null</c>: a new temporary file.</summary>
    public string? DbPath { get; init; }

    /// <summary>The period to close ("yyyy-MM"); <c>null</c>: the month before the current one in the billing time zone.</summary>
    public string? Period { get; init; }

    /// <summary>The time zone, provider, email and seed settings.</summary>
    public BillingOptions Billing { get; init; } = new();

    /// <summary>Give up waiting for the finance report after this long.</summary>
    public TimeSpan Deadline { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>How often progress is reported while the close runs.</summary>
    public TimeSpan ProgressInterval { get; init; } = TimeSpan.FromMilliseconds(500);
}

/// <summary>Where the demo stands: <c>seed</c> (accounts written), <c>close</c> (invoices settled), <c>check</c>.</summary>
/// <param name="Batch">The batch's counters while the close runs; <c>null</c> before it exists.</param>
public sealed record MonthCloseProgress(string Stage, long Done, long Total, JobBatchRecord? Batch, string? Note);

/// <summary>The demo's outcome, counted from the store's tables, the provider's ledger and the email service's store.</summary>
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
    string Db);

/// <summary>
/// The month close end to end in one process: seeds the accounts, starts a host with the billing jobs, triggers the
/// close of the period, waits until its finance report exists and checks the outcome. Run it again on the same file
/// after a crash and it resumes: the trigger finds the first close, the batch and its jobs are where they were.
/// </summary>
public static class MonthCloseDemo
{
    public static async Task<MonthCloseReport> RunAsync(MonthCloseSettings settings, Action<MonthCloseProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var report = progress ?? (_ => { });
        var path = Path.GetFullPath(settings.DbPath ?? Path.Combine(Path.GetTempPath(), "converge-billing-" + Guid.NewGuid().ToString("N") + ".db"));
        var resumed = File.Exists(path);
        var billing = settings.Billing;
        var clock = TimeProvider.System;
        var period = settings.Period ?? BillingPeriod.Previous(clock.GetUtcNow(), billing.Zone());
        BillingPeriod.Parse(period);

        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddBilling(path, billing, Tune);
        long providerThrottled, providerUnavailable, seeded;
        bool finished;
        var started = Stopwatch.GetTimestamp();
        using (var host = builder.Build())
        {
            await host.StartAsync(cancellationToken);
            try
            {
                var store = host.Services.GetRequiredService<IMessageStore>();
                await BillingTables.CreateAsync(store, cancellationToken);
                report(new MonthCloseProgress("seed", 0, settings.Accounts, null, resumed ? "resuming on an existing database" : null));
                seeded = await BillingTables.SeedAccountsAsync(
                    store, settings.Accounts, billing.Seed, clock.GetUtcNow(), done => report(new MonthCloseProgress("seed", done, settings.Accounts, null, null)), cancellationToken);
                report(new MonthCloseProgress("seed", settings.Accounts, settings.Accounts, null, seeded == 0 ? "accounts already there" : null));

                var jobs = host.Services.GetRequiredService<IJobClient>();
                await using var connection = ((SqliteMessageStore)store).OpenConnection();
                var accounts = await connection.ScalarAsync("SELECT count(*) FROM billing_accounts", cancellationToken);
                if (!await FinanceReportExistsAsync(connection, period, cancellationToken))
                {
                    var trigger = await BillingSetup.TriggerCloseAsync(jobs, period, cancellationToken);
                    report(new MonthCloseProgress("close", 0, accounts, null, trigger.Duplicate ? $"the close of {period} was triggered before; resuming it" : $"closing {period}"));
                }

                finished = await WaitForFinanceReportAsync(connection, jobs, period, accounts, settings, report, cancellationToken);
            }
            finally
            {
                await host.StopAsync(CancellationToken.None);
            }

            var provider = host.Services.GetRequiredService<PaymentProvider>();
            (providerThrottled, providerUnavailable) = (provider.Throttled, provider.Unavailable);
        }

        var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        report(new MonthCloseProgress("check", 0, 1, null, "checking every account against the provider's ledger and the sent mail"));
        var outcome = await CheckAsync(path, period, cancellationToken);
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
            providerThrottled,
            providerUnavailable,
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
            path);
    }

    /// <summary>The demo's Converge settings: quick polling and retries, and short leases so a killed worker's jobs come back soon.</summary>
    public static void Tune(Converge.Runtime.ConvergeOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        o.PollInterval = TimeSpan.FromMilliseconds(50);
        o.LeaseDuration = TimeSpan.FromSeconds(5);
        o.Retry.InitialDelay = TimeSpan.FromMilliseconds(50);
        o.Retry.MaxDelay = TimeSpan.FromSeconds(2);
    }

    static async Task<bool> WaitForFinanceReportAsync(
        SqliteConnection connection, IJobClient jobs, string period, long accounts, MonthCloseSettings settings, Action<MonthCloseProgress> report, CancellationToken cancellationToken)
    {
        var waited = Stopwatch.StartNew();
        var batchId = BillingPeriod.BatchId(period);
        while (true)
        {
            var done = await FinanceReportExistsAsync(connection, period, cancellationToken);
            var batch = await jobs.GetBatchAsync(batchId, cancellationToken);
            var settled = await connection.ScalarAsync(
                "SELECT count(*) FROM billing_invoices WHERE period = @period AND status <> 'open'", cancellationToken, ("@period", period));
            report(new MonthCloseProgress("close", settled, accounts, batch, done ? "finance report written" : null));
            if (done)
            {
                return true;
            }

            if (waited.Elapsed > settings.Deadline)
            {
                return false;
            }

            await Task.Delay(settings.ProgressInterval, cancellationToken);
        }
    }

    static async Task<bool> FinanceReportExistsAsync(SqliteConnection connection, string period, CancellationToken cancellationToken) =>
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
    /// Checks the close of <paramref name="period"/> on the database at <paramref name="databasePath"/> against the
    /// provider's ledger and the email service's store (attached read-only beside it): every account settled exactly
    /// once (one invoice, in a final state), charged amounts match the ledger with one charge per invoice, one
    /// receipt per charged or credited invoice and none for the others, held invoices have a hold and an account
    /// on hold, skipped invoices were paid, no credit below zero, and the finance report agrees with the invoices.
    /// Run it when no process works on the files.
    /// </summary>
    public static async Task<Outcome> CheckAsync(string databasePath, string period, CancellationToken cancellationToken)
    {
        await using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = databasePath, Pooling = false }.ToString());
        await connection.OpenAsync(cancellationToken);
        var ledgerPath = BillingSetup.ProviderLedgerPath(databasePath);
        var mailboxPath = BillingSetup.MailboxPath(databasePath);
        var ledger = PaymentProvider.ReadSummary(ledgerPath);
        var mailbox = EmailService.ReadSummary(mailboxPath);

        // Attach the outside services' files, or empty stand-ins when a service never ran.
        await AttachAsync(connection, ledgerPath, "provider", "CREATE TABLE IF NOT EXISTS provider.charges (reference TEXT, status TEXT, amount_cents INTEGER, replays INTEGER)", cancellationToken);
        await AttachAsync(connection, mailboxPath, "mail", "CREATE TABLE IF NOT EXISTS mail.emails (reference TEXT, language TEXT, replays INTEGER)", cancellationToken);

        var violations = new List<string>();
        var p = ("@period", (object?)period);
        var prefix = ("@prefix", (object?)("INV-" + period + "-%"));

        async Task Rule(string sql, Func<System.Data.Common.DbDataReader, string> describe, params (string, object?)[] parameters)
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
            r => $"account {r.GetInt64(0)}: {r.GetInt64(1)} invoices for the period, expected 1",
            p);
        await Rule(
            "SELECT id, status FROM billing_invoices WHERE period = @period AND status NOT IN ('charged', 'credited', 'skipped_already_paid', 'held')",
            r => $"{r.GetString(0)}: never settled (status {r.GetString(1)})",
            p);
        await Rule(
            """
            WITH ledger AS (SELECT reference, count(*) AS n, sum(amount_cents) AS cents FROM provider.charges WHERE status = 'succeeded' AND reference LIKE @prefix GROUP BY reference)
            SELECT i.id, i.status, i.charged_cents, coalesce(l.n, 0), coalesce(l.cents, 0)
            FROM billing_invoices i LEFT JOIN ledger l ON l.reference = i.id
            WHERE i.period = @period AND (coalesce(l.n, 0) <> (i.charged_cents > 0) OR coalesce(l.cents, 0) <> i.charged_cents)
            """,
            r => $"{r.GetString(0)}: {r.GetString(1)} with {r.GetInt64(2)} charged, but the provider's ledger holds {r.GetInt64(3)} charge(s) of {r.GetInt64(4)} in total",
            p, prefix);
        await Rule(
            """
            SELECT i.id, i.status, i.charged_cents, i.credit_applied_cents FROM billing_invoices i
            WHERE i.period = @period AND (
                (i.status = 'charged' AND i.credit_applied_cents <> 0)
                OR (i.status = 'credited' AND (i.credit_applied_cents <= 0 OR i.charged_cents + i.credit_applied_cents + i.paid_cents <> i.amount_cents))
                OR (i.status = 'charged' AND i.charged_cents + i.paid_cents <> i.amount_cents)
                OR (i.status IN ('skipped_already_paid', 'held') AND (i.charged_cents <> 0 OR i.credit_applied_cents <> 0)))
            """,
            r => $"{r.GetString(0)}: {r.GetString(1)} but charged {r.GetInt64(2)} and credited {r.GetInt64(3)}",
            p);
        await Rule(
            """
            WITH mail AS (SELECT reference, count(*) AS n FROM mail.emails WHERE reference LIKE @prefix GROUP BY reference)
            SELECT i.id, i.status, coalesce(m.n, 0) FROM billing_invoices i LEFT JOIN mail m ON m.reference = i.id
            WHERE i.period = @period AND coalesce(m.n, 0) <> (i.status IN ('charged', 'credited'))
            """,
            r => $"{r.GetString(0)}: {r.GetString(1)} with {r.GetInt64(2)} receipt(s) sent",
            p, prefix);
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
            r => $"{r.GetString(0)}: skipped as paid, but only {r.GetInt64(1)} of {r.GetInt64(2)} was paid",
            p);
        await Rule("SELECT id, credit_cents FROM billing_accounts WHERE credit_cents < 0", r => $"account {r.GetInt64(0)}: credit {r.GetInt64(1)} below zero");
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
        if (ledger.DoubleCharges > 0)
        {
            violations.Add($"the provider's ledger shows {ledger.DoubleCharges} invoice(s) charged more than once");
        }

        if (mailbox.DuplicateEmails > 0)
        {
            violations.Add($"the email service sent {mailbox.DuplicateEmails} duplicate email(s)");
        }

        var counts = (await connection.ReadOneAsync(
            """
            SELECT (SELECT count(*) FROM billing_accounts), count(*),
                   coalesce(sum(status = 'charged'), 0), coalesce(sum(status = 'skipped_already_paid'), 0), coalesce(sum(status = 'credited'), 0),
                   coalesce(sum(status = 'held'), 0), coalesce(sum(status = 'open'), 0), coalesce(sum(changed_after_as_of), 0),
                   coalesce(sum(amount_cents), 0), coalesce(sum(charged_cents), 0), coalesce(sum(credit_applied_cents), 0),
                   (SELECT count(*) FROM billing_finance_reports WHERE period = @period),
                   coalesce((SELECT failed_jobs FROM billing_finance_reports WHERE period = @period), 0),
                   (SELECT count(*) FROM provider.charges WHERE status = 'declined' AND reference LIKE @prefix),
                   (SELECT coalesce(sum(replays), 0) FROM provider.charges WHERE reference LIKE @prefix)
            FROM billing_invoices WHERE period = @period
            """,
            r => Enumerable.Range(0, 15).Select(r.GetInt64).ToArray(),
            cancellationToken,
            p, prefix))!;
        var byLanguage = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var (language, count) in await connection.ReadAllAsync(
            "SELECT language, count(*) FROM mail.emails WHERE reference LIKE @prefix GROUP BY language", r => (r.GetString(0), r.GetInt64(1)), cancellationToken, prefix))
        {
            byLanguage[language] = count;
        }

        var holds = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var (reason, count) in await connection.ReadAllAsync(
            "SELECT h.reason, count(*) FROM billing_holds h JOIN billing_invoices i ON i.id = h.invoice_id WHERE i.period = @period GROUP BY h.reason",
            r => (r.GetString(0), r.GetInt64(1)), cancellationToken, p))
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
            DoubleCharges: ledger.DoubleCharges,
            DuplicateEmails: mailbox.DuplicateEmails,
            ProviderReplays: counts[14],
            Declined: counts[13],
            HoldsByReason: holds,
            InvoicedCents: counts[8],
            CollectedCents: counts[9],
            CreditAppliedCents: counts[10],
            FinanceReport: counts[11] > 0,
            FailedJobs: counts[12],
            Violations: counts[11] > 0 ? violations : [.. violations, $"no finance report for {period}: the batch did not finish"]);
    }

    static async Task AttachAsync(SqliteConnection connection, string path, string schema, string standIn, CancellationToken cancellationToken)
    {
        if (File.Exists(path))
        {
            await using var attach = connection.Command($"ATTACH DATABASE @path AS {schema}", ("@path", path));
            await attach.ExecuteNonQueryAsync(cancellationToken);
            return;
        }

        await using var memory = connection.Command($"ATTACH DATABASE ':memory:' AS {schema}");
        await memory.ExecuteNonQueryAsync(cancellationToken);
        await using var create = connection.Command(standIn);
        await create.ExecuteNonQueryAsync(cancellationToken);
    }
}
