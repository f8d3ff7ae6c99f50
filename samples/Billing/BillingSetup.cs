using Converge.Hosting;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Samples.Billing.Charging;
using Converge.Samples.Billing.Close;
using Converge.Samples.Billing.Invoicing;
using Converge.Samples.Billing.Receipts;
using Converge.Samples.Billing.Simulation;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Converge.Samples.Billing;

/// <summary>Wires the month close into Converge: job types, queues, the monthly schedule, and the simulated outside world.</summary>
public static class BillingSetup
{
    /// <summary>The name of the monthly schedule; <see cref="IJobClient.TriggerRecurringAsync"/> runs it now.</summary>
    public const string Schedule = "month-close";

    /// <summary>The payment provider's ledger lives in its own file beside the store's database.</summary>
    public static string ProviderLedgerPath(string databasePath) => BillingFiles.Beside(databasePath).ProviderLedger;

    /// <summary>The email service's sent mail lives in its own file beside the store's database.</summary>
    public static string MailboxPath(string databasePath) => BillingFiles.Beside(databasePath).Mailbox;

    /// <summary>
    /// Adds Converge on the SQLite file <paramref name="databasePath"/> with the month close, and the provider,
    /// email service and world changes the handlers use, their files beside the database. <paramref name="configure"/>
    /// runs last (for example to turn consumers off in a process that only enqueues).
    /// </summary>
    public static IServiceCollection AddBilling(this IServiceCollection services, string databasePath, BillingOptions billing, Action<ConvergeOptions>? configure = null) =>
        services.AddBilling(o => o.UseSqlite(databasePath), BillingFiles.Beside(databasePath), billing, configure);

    /// <summary>
    /// Adds Converge on the store <paramref name="useStore"/> chooses (SQLite or PostgreSQL) with the month close,
    /// and the provider, email service and world changes the handlers use, with their files at <paramref name="files"/>.
    /// Every process of a close must use the same store and the same files. <paramref name="configure"/> runs last.
    /// </summary>
    public static IServiceCollection AddBilling(this IServiceCollection services, Action<ConvergeOptions> useStore, BillingFiles files, BillingOptions billing, Action<ConvergeOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(useStore);
        ArgumentNullException.ThrowIfNull(files);
        ArgumentNullException.ThrowIfNull(billing);
#pragma warning disable RS0030 // The registration's default clock; a test registers a fake one before.
        services.TryAddSingleton(TimeProvider.System);
#pragma warning restore RS0030
        services.AddSingleton(billing);
        services.AddSingleton(sp => new PaymentProvider(
            new PaymentProviderOptions
            {
                LedgerPath = files.ProviderLedger,
                Latency = billing.ProviderLatency,
                CallsPerSecond = billing.ProviderCallsPerSecond,
                OutageEvery = billing.ProviderOutageEvery,
                OutageLength = billing.ProviderOutageLength,
                Seed = billing.Seed,
            },
            sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(sp => new EmailService(files.Mailbox, billing.EmailLatency, sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(billing.InjectWorldChanges ? new WorldChanges(billing.Seed) : WorldChanges.None);
        services.AddConverge(o =>
        {
            useStore(o);
            Configure(o, billing);
            configure?.Invoke(o);
        });
        return services;
    }

    /// <summary>Registers the job types (every process needs them), their handlers and queues, and the schedule.</summary>
    public static void Configure(ConvergeOptions o, BillingOptions billing)
    {
        ArgumentNullException.ThrowIfNull(o);
        ArgumentNullException.ThrowIfNull(billing);
        o.Messages
            .Register<MonthCloseJob>("billing.month-close").Register<FanOutJob>("billing.fan-out")
            .Register<InvoiceAccountJob>("billing.invoice-account").Register<CustomerActivityJob>("billing.customer-activity")
            .Register<ChargeInvoiceJob>("billing.charge-invoice").Register<SendReceiptJob>("billing.send-receipt")
            .Register<FinanceReportJob>("billing.finance-report");

        o.Job<MonthCloseJob, MonthCloseHandler>(BillingQueues.Close)
            .Job<FanOutJob, FanOutHandler>(BillingQueues.Close)
            .Job<InvoiceAccountJob, InvoiceAccountHandler>(BillingQueues.Invoices)
            .Job<CustomerActivityJob, CustomerActivityHandler>(BillingQueues.Customers)
            .Job<ChargeInvoiceJob, ChargeInvoiceHandler>(BillingQueues.Charges)
            .Job<SendReceiptJob, SendReceiptHandler>(BillingQueues.Emails)
            .Job<FinanceReportJob, FinanceReportHandler>(BillingQueues.Reports);

        o.Queue(BillingQueues.Close, q => q.Concurrency = 4);
        o.Queue(BillingQueues.Invoices, q => q.Concurrency = 16);
        o.Queue(BillingQueues.Customers, q => q.Concurrency = 8);
        o.Queue(BillingQueues.Charges, q =>
        {
            // Charges wait on the provider: many at once per process, and no more starts per second, across every
            // process, than the provider accepts (kept a little under its limit, which retries also count against).
            q.Concurrency = billing.ChargeConcurrency;
            q.RateLimit = new RateLimit(billing.ProviderCallsPerSecond * 0.9, Math.Max(1, billing.ProviderCallsPerSecond / 20));
        });
        o.Queue(BillingQueues.Emails, q => q.Concurrency = 32);
        o.Queue(BillingQueues.Reports, q => q.Concurrency = 1);

        // A charge gives up on an unreachable provider after ChargeAttempts and holds the account; the store's
        // own retry limit stays above that so the charge job, not the dead-letter queue, has the last word.
        o.Retry.MaxAttempts = Math.Max(o.Retry.MaxAttempts, billing.ChargeAttempts + 2);

        if (billing.ScheduleMonthly)
        {
            // 00:00 on the first of every month in the billing time zone; the job closes the month that just ended.
            o.AddRecurringJob(Schedule, "0 0 1 * *", new MonthCloseJob(null), r =>
            {
                r.TimeZone = billing.TimeZone;
                r.Misfire = MisfirePolicy.RunOnce;
            });
        }
    }

    /// <summary>Enqueues the close of <paramref name="period"/> now, at most once per period (a second call finds the first).</summary>
    public static ValueTask<EnqueuedJob> TriggerCloseAsync(IJobClient jobs, string period, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(jobs);
        BillingPeriod.Parse(period);
        return jobs.EnqueueAsync(
            new MonthCloseJob(period),
            new JobOptions { UniqueKey = BillingPeriod.BatchId(period), UniqueFor = TimeSpan.FromDays(62) },
            cancellationToken);
    }
}

/// <summary>
/// The simulated outside services' own SQLite files: the payment provider's ledger and the email service's sent
/// mail. They are not the store's: they stand for systems the close calls, so they stay SQLite files whichever
/// store the close runs on, and every process of a run opens the same two (one machine).
/// </summary>
/// <param name="ProviderLedger">The payment provider's ledger.</param>
/// <param name="Mailbox">The email service's sent mail.</param>
public sealed record BillingFiles(string ProviderLedger, string Mailbox)
{
    /// <summary>Beside a SQLite store: <c>FILE.provider.db</c> and <c>FILE.email.db</c>.</summary>
    public static BillingFiles Beside(string databasePath) => new(databasePath + ".provider.db", databasePath + ".email.db");

    /// <summary>In <paramref name="folder"/>: <c>provider.db</c> and <c>email.db</c>.</summary>
    public static BillingFiles In(string folder) => new(Path.Combine(folder, "provider.db"), Path.Combine(folder, "email.db"));

    /// <summary>Every file, with SQLite's write-ahead log and shared-memory files.</summary>
    public IEnumerable<string> All() =>
        new[] { ProviderLedger, Mailbox }.SelectMany(f => new[] { f, f + "-wal", f + "-shm" });
}
