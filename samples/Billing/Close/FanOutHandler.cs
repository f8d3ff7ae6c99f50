using System.Globalization;
using Converge.Jobs;

namespace Converge.Samples.Billing.Close;

/// <summary>
/// Splits a range of account ids: a range larger than a chunk becomes at most <see cref="BillingOptions.MaxFanOut"/>
/// smaller fan-out jobs; a chunk becomes one invoice job per account. Everything it enqueues joins its batch and
/// commits with its completion, in one transaction, so a chunk is fanned out entirely or not at all.
/// </summary>
public sealed class FanOutHandler(BillingOptions billing) : IJobHandler<FanOutJob>
{
    /// <summary>The id of the fan-out job of a range: unique per period and range.</summary>
    public static Guid JobId(string period, long fromId, long toId) =>
        JobIds.For(string.Create(CultureInfo.InvariantCulture, $"fan-out:{period}:{fromId}-{toId}"));

    public async Task ExecuteAsync(FanOutJob job, JobContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(job);
        ArgumentNullException.ThrowIfNull(context);
        var size = job.ToId - job.FromId + 1;
        if (size <= 0)
        {
            return;
        }

        if (size > billing.ChunkSize)
        {
            var parts = Math.Min(billing.MaxFanOut, (size + billing.ChunkSize - 1) / billing.ChunkSize);
            var step = (size + parts - 1) / parts;
            var chunks = 0;
            for (var from = job.FromId; from <= job.ToId; from += step)
            {
                var to = Math.Min(job.ToId, from + step - 1);
                context.Enqueue(new FanOutJob(job.Period, from, to), new JobOptions { BatchId = context.BatchId, JobId = JobId(job.Period, from, to) });
                chunks++;
            }

            await context.ReportProgressAsync(100, $"accounts {job.FromId}-{job.ToId}: {chunks} chunks of up to {step}", cancellationToken);
            return;
        }

        // Ids may have gaps (closed accounts): enqueue only those that exist.
        List<long> ids;
        await using (var connection = await context.OpenReadConnectionAsync(cancellationToken))
        {
            ids = await connection.ReadAllAsync(
                "SELECT id FROM billing_accounts WHERE id BETWEEN @from AND @to ORDER BY id",
                r => r.Int64(0),
                cancellationToken,
                ("@from", job.FromId), ("@to", job.ToId));
        }

        foreach (var id in ids)
        {
            context.Enqueue(new InvoiceAccountJob(job.Period, id), new JobOptions { BatchId = context.BatchId, JobId = JobIds.For("invoice", job.Period, id) });
        }
    }
}
