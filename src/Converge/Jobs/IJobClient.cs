using System.Data.Common;
using Converge.Storage;

namespace Converge.Jobs;

/// <summary>
/// Enqueues, cancels and inspects background jobs. The overloads that take a <see cref="DbTransaction"/> are the
/// outbox: the job commits or rolls back with the caller's own writes. <c>AddConverge</c> registers it as a singleton:
/// inject it, or resolve it from the host's services.
/// </summary>
public interface IJobClient
{
    /// <summary>Enqueues <paramref name="job"/> in its own transaction.</summary>
    ValueTask<EnqueuedJob> EnqueueAsync<TJob>(TJob job, JobOptions? options = null, CancellationToken cancellationToken = default) where TJob : notnull;

    /// <summary>Enqueues <paramref name="job"/> inside the caller's open <paramref name="transaction"/> on the store's database.</summary>
    ValueTask<EnqueuedJob> EnqueueAsync<TJob>(TJob job, DbTransaction transaction, JobOptions? options = null, CancellationToken cancellationToken = default) where TJob : notnull;

    /// <summary>
    /// Creates a batch (or finds the one with the same id, returning <c>false</c>). Add jobs with
    /// <see cref="JobOptions.BatchId"/>, then <see cref="SealBatchAsync"/>: the callbacks fire once the batch is
    /// sealed and its last job finished. Jobs of the batch may add more jobs to it, even after it is sealed.
    /// </summary>
    ValueTask<bool> StartBatchAsync(JobBatchOptions batch, CancellationToken cancellationToken = default);

    /// <summary>Seals a batch: no more jobs come from outside it; it finishes when nothing is pending.</summary>
    ValueTask SealBatchAsync(string batchId, CancellationToken cancellationToken = default);

    /// <summary>The batch and its counters; <c>null</c> when unknown.</summary>
    ValueTask<JobBatchRecord?> GetBatchAsync(string batchId, CancellationToken cancellationToken = default);

    /// <summary>Cancels a job: a waiting job is removed (dead-lettered as <c>cancelled</c>), a running job's token fires.</summary>
    ValueTask<JobCancelOutcome> CancelAsync(Guid jobId, CancellationToken cancellationToken = default);

    /// <summary>The job, wherever it is; <c>null</c> when unknown.</summary>
    ValueTask<JobInfo?> GetAsync(Guid jobId, CancellationToken cancellationToken = default);

    /// <summary>Enqueues an occurrence of recurring job <paramref name="name"/> now, outside its schedule.</summary>
    /// <exception cref="InvalidOperationException">No recurring job has that name.</exception>
    ValueTask<EnqueuedJob> TriggerRecurringAsync(string name, CancellationToken cancellationToken = default);
}
