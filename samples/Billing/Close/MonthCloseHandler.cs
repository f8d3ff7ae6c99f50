using System.Globalization;
using Converge.Jobs;

namespace Converge.Samples.Billing.Close;

/// <summary>
/// Starts the close of a period: creates the batch <c>month-close:PERIOD</c> (its completion callback writes the
/// finance report), puts the root fan-out job into it and seals it. Safe to run again at any point, by the
/// schedule, by hand, or after a crash: the batch, the root fan-out (its unique key) and every job below it
/// (deterministic ids) are found rather than made twice.
/// </summary>
public sealed class MonthCloseHandler(IJobClient jobs, BillingOptions billing) : IJobHandler<MonthCloseJob>
{
    /// <summary>Longer than any close takes, shorter than the gap to the next close of the same period (never).</summary>
    static readonly TimeSpan KeyWindow = TimeSpan.FromDays(62);

    public async Task ExecuteAsync(MonthCloseJob job, JobContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(job);
        ArgumentNullException.ThrowIfNull(context);

        // The schedule fires at 00:00 on the first in the billing time zone and closes the month that just ended.
        var period = job.Period ?? BillingPeriod.Previous(context.AsOf ?? context.EnqueuedAt, billing.Zone());
        BillingPeriod.Parse(period);
        var batchId = BillingPeriod.BatchId(period);
        await jobs.StartBatchAsync(
            new JobBatchOptions { Id = batchId, Description = $"Month close {period}", OnComplete = new FinanceReportJob(period) },
            cancellationToken);
        var batch = await jobs.GetBatchAsync(batchId, cancellationToken)
            ?? throw new InvalidOperationException($"Batch {batchId} was started but cannot be read back.");
        if (batch.Sealed)
        {
            await context.ReportProgressAsync(100, $"{batchId} is already under way ({batch.Succeeded + batch.Failed} of {batch.Total} jobs done)", cancellationToken);
            return;
        }

        (long First, long Last, long Count) accounts;
        await using (var connection = await context.OpenReadConnectionAsync(cancellationToken))
        {
            accounts = (await connection.ReadOneAsync<(long, long, long)?>(
                "SELECT coalesce(min(id), 0), coalesce(max(id), 0), count(*) FROM billing_accounts",
                r => (r.Int64(0), r.Int64(1), r.Int64(2)),
                cancellationToken)) ?? default;
        }

        await context.ReportProgressAsync(10, $"{batchId}: {accounts.Count.ToString("N0", CultureInfo.InvariantCulture)} accounts to close", cancellationToken);
        if (accounts.Count > 0)
        {
            // Committed now, in its own transaction, so it is in the batch before the seal below. The unique key
            // makes a second run of this job (or a second trigger) find it instead of adding another.
            await jobs.EnqueueAsync(
                new FanOutJob(period, accounts.First, accounts.Last),
                new JobOptions
                {
                    BatchId = batchId,
                    JobId = FanOutHandler.JobId(period, accounts.First, accounts.Last),
                    UniqueKey = batchId + ":fan-out",
                    UniqueFor = KeyWindow,
                },
                cancellationToken);
        }

        // Why sealing now, while the fan-out has barely started, cannot finish the batch early:
        // - the root fan-out job is in the batch and committed above, so the batch has a pending job when sealed;
        // - every job of the batch adds its follow-ups (chunks, invoices, charges, receipts) with BatchId =
        //   context.BatchId through context.Enqueue, which commits them in the same transaction that records the
        //   job itself as done. Pending goes from n to n - 1 + children in one step and never passes through 0
        //   while work is left.
        // So the batch finishes exactly when the last job of the last account finishes, and FinanceReportJob runs
        // once, after all of it. What would break it: sealing before the root fan-out committed (this job's own
        // context.Enqueue commits only when this job returns, after the seal), or a job adding children outside
        // its completion (IJobClient.EnqueueAsync from inside a job of the batch).
        await jobs.SealBatchAsync(batchId, cancellationToken);
        await context.ReportProgressAsync(100, $"{batchId}: fanned out and sealed", cancellationToken);
    }
}
