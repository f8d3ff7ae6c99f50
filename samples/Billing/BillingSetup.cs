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
    public static string ProviderLedgerPath(string databasePath) => databasePath + ".provider.db";

    /// <summary>The email service's sent mail lives in its own file beside the store's database.</summary>
    public static string MailboxPath(string databasePath) => databasePath + ".email.db";

    /// <summary>
    /// Adds Converge on <paramref name="databasePath"/> with the month close, and the provider, email service and
    /// world changes the handlers use. <paramref name="configure"/> runs last (for example to turn consumers off in
    /// a process that only enqueues).
    /// </summary>
    public static IServiceCollection AddBilling(this IServiceCollection services, string databasePath, BillingOptions billing, Action<ConvergeOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(billing);
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton(billing);
        services.AddSingleton(sp => new PaymentProvider(
            new PaymentProviderOptions
            {
                LedgerPath = ProviderLedgerPath(databasePath),
                Latency = billing.ProviderLatency,
                CallsPerSecond = billing.ProviderCallsPerSecond,
                OutageEvery = billing.ProviderOutageEvery,
                OutageLength = billing.ProviderOutageLength,
                Seed = billing.Seed,
            },
            sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(sp => new EmailService(MailboxPath(databasePath), billing.EmailLatency, sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(billing.InjectWorldChanges ? new WorldChanges(billing.Seed) : WorldChanges.None);
        services.AddConverge(o =>
        {
            o.UseSqlite(databasePath);
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
