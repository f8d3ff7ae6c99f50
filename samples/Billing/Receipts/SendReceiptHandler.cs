using Converge.Jobs;
using Converge.Runtime;
using Converge.Samples.Billing.Simulation;

namespace Converge.Samples.Billing.Receipts;

/// <summary>
/// Sends the receipt of a charged or credited invoice in the account's language, stating the credit balance as of
/// the moment the charge job read it (this job's <see cref="JobContext.AsOf"/>), through the email service with
/// this job's idempotency key: a retry after a crash sends nothing twice.
/// </summary>
public sealed class SendReceiptHandler(EmailService email, BillingOptions billing, TimeProvider clock) : IJobHandler<SendReceiptJob>
{
    public async Task ExecuteAsync(SendReceiptJob job, JobContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(job);
        ArgumentNullException.ThrowIfNull(context);
        var invoiceId = BillingPeriod.InvoiceId(job.Period, job.AccountId);
        Row? row;
        await using (var connection = await context.OpenReadConnectionAsync(cancellationToken))
        {
            row = await connection.ReadOneAsync<Row?>(
                """
                SELECT a.name, a.email, a.language, a.card_last4, i.status, i.amount_cents, i.credit_applied_cents, i.charged_cents,
                       coalesce(i.balance_cents, 0), i.charged_as_of, i.receipt_id
                FROM billing_invoices i JOIN billing_accounts a ON a.id = i.account_id
                WHERE i.id = @id
                """,
                r => new Row(r.GetString(0), r.GetString(1), r.GetString(2), r.NullableString(3), r.GetString(4), r.GetInt64(5), r.GetInt64(6), r.GetInt64(7), r.GetInt64(8), r.NullableInt64(9), r.NullableString(10)),
                cancellationToken,
                ("@id", invoiceId));
        }

        if (row is null)
        {
            throw new HandlerFailureException($"Invoice {invoiceId} does not exist; there is no receipt to send.", nonRetryable: true);
        }

        if (row.Status is not (InvoiceStatus.Charged or InvoiceStatus.Credited) || row.ReceiptId is not null)
        {
            return;
        }

        var asOf = context.AsOf ?? (row.ChargedAsOf is { } read ? DateTimeOffset.FromUnixTimeMilliseconds(read) : context.EnqueuedAt);
        var (subject, body) = Receipt.Render(row.Language, new ReceiptData(
            row.Name, invoiceId, job.Period, row.AmountCents, row.CreditAppliedCents, row.ChargedCents, row.CardLast4, row.BalanceCents, asOf, billing.Zone(), billing.Currency));
        var sent = await email.SendAsync(new OutgoingEmail(context.IdempotencyKey, row.Email, row.Language, subject, body, invoiceId), cancellationToken);
        context.Execute("UPDATE billing_invoices SET receipt_id = @receipt, receipt_sent_at = @now WHERE id = @id",
            ("@id", invoiceId), ("@receipt", sent.Id), ("@now", clock.GetUtcNow().ToUnixTimeMilliseconds()));
    }

    sealed record Row(
        string Name,
        string Email,
        string Language,
        string? CardLast4,
        string Status,
        long AmountCents,
        long CreditAppliedCents,
        long ChargedCents,
        long BalanceCents,
        long? ChargedAsOf,
        string? ReceiptId);
}
