using Converge.Jobs;

namespace Converge.Samples.Billing.Close;

/// <summary>
/// The close's completion callback (<see cref="JobBatchOptions.OnComplete"/>): runs once every job of the batch has
/// finished, totals the period's invoices and writes one finance_reports row for the period.
/// </summary>
public sealed class FinanceReportHandler(IJobClient jobs, TimeProvider clock) : IJobHandler<FinanceReportJob>
{
    public async Task ExecuteAsync(FinanceReportJob job, JobContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(job);
        ArgumentNullException.ThrowIfNull(context);
        var batch = await jobs.GetBatchAsync(BillingPeriod.BatchId(job.Period), cancellationToken);
        long[] totals;
        await using (var connection = await context.OpenReadConnectionAsync(cancellationToken))
        {
            totals = (await connection.ReadOneAsync(
                """
                SELECT count(*), coalesce(sum(amount_cents), 0),
                       count(*) FILTER (WHERE status = 'charged'), count(*) FILTER (WHERE status = 'credited'),
                       coalesce(sum(charged_cents), 0), coalesce(sum(credit_applied_cents), 0),
                       count(*) FILTER (WHERE status = 'skipped_already_paid'), coalesce(sum(amount_cents) FILTER (WHERE status = 'skipped_already_paid'), 0),
                       count(*) FILTER (WHERE status = 'held'), coalesce(sum(amount_cents) FILTER (WHERE status = 'held'), 0),
                       count(*) FILTER (WHERE status = 'open')
                FROM billing_invoices WHERE period = @period
                """,
                r => Enumerable.Range(0, 11).Select(r.Int64).ToArray(),
                cancellationToken,
                ("@period", job.Period)))!;
        }

        // One row per period: a second run of the callback (a redelivery) leaves the first.
        context.Execute(
            """
            INSERT INTO billing_finance_reports (period, invoices, invoiced_cents, charged, credited, collected_cents, credit_applied_cents,
                                                 skipped, skipped_cents, held, held_cents, still_open, failed_jobs, created_at)
            VALUES (@period, @invoices, @invoiced, @charged, @credited, @collected, @credit, @skipped, @skippedCents, @held, @heldCents, @open, @failed, @now)
            ON CONFLICT (period) DO NOTHING
            """,
            ("@period", job.Period), ("@invoices", totals[0]), ("@invoiced", totals[1]), ("@charged", totals[2]), ("@credited", totals[3]),
            ("@collected", totals[4]), ("@credit", totals[5]), ("@skipped", totals[6]), ("@skippedCents", totals[7]), ("@held", totals[8]),
            ("@heldCents", totals[9]), ("@open", totals[10]), ("@failed", batch?.Failed ?? 0), ("@now", clock.GetUtcNow().ToUnixTimeMilliseconds()));
    }
}
