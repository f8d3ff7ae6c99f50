using Converge.Jobs;
using Converge.Samples.Billing.Simulation;

namespace Converge.Samples.Billing.Invoicing;

/// <summary>
/// Creates the invoice of one account for the period from its usage, stamped with the moment it was computed
/// ("as of"), and enqueues the charge with the same "as of". Both commit with this job's completion, once: an
/// invoice that exists always has its charge enqueued.
/// </summary>
public sealed class InvoiceAccountHandler(TimeProvider clock, WorldChanges worldChanges) : IJobHandler<InvoiceAccountJob>
{
    public async Task ExecuteAsync(InvoiceAccountJob job, JobContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(job);
        ArgumentNullException.ThrowIfNull(context);
        var invoiceId = BillingPeriod.InvoiceId(job.Period, job.AccountId);

        // Taken before the read: everything committed before this moment is in what the invoice is computed from.
        var asOf = clock.GetUtcNow();
        (long Usage, long Price)? account;
        bool invoiced;
        await using (var connection = await context.OpenReadConnectionAsync(cancellationToken))
        {
            account = await connection.ReadOneAsync<(long, long)?>(
                "SELECT usage_units, unit_price_cents FROM billing_accounts WHERE id = @id",
                r => (r.GetInt64(0), r.GetInt64(1)),
                cancellationToken,
                ("@id", job.AccountId));
            invoiced = await connection.ScalarAsync("SELECT count(*) FROM billing_invoices WHERE id = @id", cancellationToken, ("@id", invoiceId)) > 0;
        }

        if (account is not { } found || invoiced)
        {
            // Closed since the fan-out, or invoiced by an earlier close of the period (whose charge was enqueued with it).
            return;
        }

        context.Execute(
            """
            INSERT INTO billing_invoices (id, account_id, period, amount_cents, as_of, status)
            VALUES (@id, @account, @period, @amount, @asOf, 'open')
            ON CONFLICT (account_id, period) DO NOTHING
            """,
            ("@id", invoiceId), ("@account", job.AccountId), ("@period", job.Period), ("@amount", found.Usage * found.Price), ("@asOf", asOf.ToUnixTimeMilliseconds()));

        var next = new JobOptions { BatchId = context.BatchId, AsOf = asOf };
        if (worldChanges.For(job.AccountId) is var change and not WorldChange.None)
        {
            // The demo's injection: the world changes after this "as of" and before the charge reads it.
            context.Enqueue(new CustomerActivityJob(job.Period, job.AccountId, change), next with { JobId = JobIds.For("activity", job.Period, job.AccountId) });
            return;
        }

        context.Enqueue(new ChargeInvoiceJob(job.Period, job.AccountId), next with { JobId = JobIds.For("charge", job.Period, job.AccountId) });
    }
}
