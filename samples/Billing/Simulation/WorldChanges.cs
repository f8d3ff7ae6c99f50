using Converge.Jobs;

namespace Converge.Samples.Billing.Simulation;

/// <summary>
/// Which accounts the world changes for between their invoice and their charge, chosen from the seed and the
/// account id alone, so every process (and every restart) agrees. <see cref="None"/> in production.
/// </summary>
public sealed class WorldChanges
{
    const ulong Salt = 0x574F524C44;

    readonly int _seed;

    public WorldChanges(int seed, double paidManually = 0.03, double partialCredit = 0.025, double fullCredit = 0.015, double cardRemoved = 0.02)
    {
        _seed = seed;
        PaidManually = paidManually;
        PartialCredit = partialCredit;
        FullCredit = fullCredit;
        CardRemoved = cardRemoved;
    }

    /// <summary>Nothing changes.</summary>
    public static WorldChanges None { get; } = new(0, 0, 0, 0, 0);

    public double PaidManually { get; }

    public double PartialCredit { get; }

    public double FullCredit { get; }

    public double CardRemoved { get; }

    public WorldChange For(long accountId)
    {
        var roll = Seeded.Unit(_seed, Salt, accountId);
        return (roll -= PaidManually) < 0 ? WorldChange.PaidManually
            : (roll -= PartialCredit) < 0 ? WorldChange.PartialCredit
            : (roll -= FullCredit) < 0 ? WorldChange.FullCredit
            : roll - CardRemoved < 0 ? WorldChange.CardRemoved
            : WorldChange.None;
    }
}

/// <summary>
/// Simulates the customer or support acting on an account after its invoice was computed (the invoice's "as of")
/// and before the charge runs: the change commits with this job, then the charge is enqueued, so the charge job is
/// certain to find the world different from what the invoice saw. The charge job knows nothing of this; it simply
/// re-reads.
/// </summary>
public sealed class CustomerActivityHandler(TimeProvider clock) : IJobHandler<CustomerActivityJob>
{
    public async Task ExecuteAsync(CustomerActivityJob job, JobContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(job);
        ArgumentNullException.ThrowIfNull(context);
        var invoiceId = BillingPeriod.InvoiceId(job.Period, job.AccountId);
        long amount;
        await using (var connection = await context.OpenReadConnectionAsync(cancellationToken))
        {
            amount = await connection.ScalarAsync("SELECT amount_cents FROM billing_invoices WHERE id = @id", cancellationToken, ("@id", invoiceId));
        }

        var now = clock.GetUtcNow().ToUnixTimeMilliseconds();
        switch (job.Change)
        {
            case WorldChange.PaidManually:
                context.Execute(
                    "INSERT INTO billing_payments (invoice_id, account_id, amount_cents, method, paid_at) VALUES (@id, @account, @amount, 'bank_transfer', @now) ON CONFLICT (invoice_id) DO NOTHING",
                    ("@id", invoiceId), ("@account", job.AccountId), ("@amount", amount), ("@now", now));
                context.Execute("UPDATE billing_invoices SET paid_cents = paid_cents + @amount WHERE id = @id", ("@id", invoiceId), ("@amount", amount));
                break;
            case WorldChange.PartialCredit or WorldChange.FullCredit:
                // A partial credit covers 40 % of the invoice; a full one all of it and 5.00 more, which stays as balance.
                var credit = job.Change == WorldChange.PartialCredit ? Math.Max(1, amount * 40 / 100) : amount + 500;
                context.Execute(
                    "INSERT INTO billing_credits (invoice_id, account_id, amount_cents, reason, applied_at) VALUES (@id, @account, @credit, 'goodwill', @now) ON CONFLICT (invoice_id) DO NOTHING",
                    ("@id", invoiceId), ("@account", job.AccountId), ("@credit", credit), ("@now", now));
                context.Execute("UPDATE billing_accounts SET credit_cents = credit_cents + @credit, updated_at = @now WHERE id = @account",
                    ("@account", job.AccountId), ("@credit", credit), ("@now", now));
                break;
            case WorldChange.CardRemoved:
                context.Execute("UPDATE billing_accounts SET card_token = NULL, updated_at = @now WHERE id = @account", ("@account", job.AccountId), ("@now", now));
                break;
        }

        // The charge keeps the invoice's "as of": what it was computed from is still the invoice's view.
        context.Enqueue(
            new ChargeInvoiceJob(job.Period, job.AccountId),
            new JobOptions { BatchId = context.BatchId, AsOf = context.AsOf, JobId = JobIds.For("charge", job.Period, job.AccountId) });
    }
}
