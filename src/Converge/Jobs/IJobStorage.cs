namespace Converge.Jobs;

/// <summary>
/// Optional job storage outside a transaction, on the same object as the store: cancellation requests and progress of
/// running jobs. The job capability (<c>AddJobs</c>) needs it, with <see cref="IJobTransaction"/>, and says so at
/// start-up when the store lacks them. Tested by the job conformance facts in Converge.Testing.
/// </summary>
public interface IJobStore
{
    /// <summary>
    /// Cancels job <paramref name="id"/>: a waiting job moves to the dead letters with reason
    /// <c>DeadLetterReasons.Cancelled</c> (counted as failed in its batch); a running one is flagged for its worker,
    /// which <see cref="ReadCancellationsAsync"/> tells.
    /// </summary>
    ValueTask<JobCancelOutcome> CancelJobAsync(Guid id, CancellationToken cancellationToken);

    /// <summary>Which of <paramref name="ids"/> have a pending cancellation request.</summary>
    ValueTask<IReadOnlyList<Guid>> ReadCancellationsAsync(IReadOnlyList<Guid> ids, CancellationToken cancellationToken);

    /// <summary>Stores the progress of a running job (0 to 100, with an optional note) in its own short transaction.</summary>
    ValueTask SaveJobProgressAsync(Guid id, int percent, string? note, CancellationToken cancellationToken);

    /// <summary>
    /// Deletes unique-key reservations that have expired (they hold nothing back any more), in short transactions;
    /// returns how many. The host calls it with the inbox clean-up.
    /// </summary>
    ValueTask<int> PurgeExpiredUniqueKeysAsync(CancellationToken cancellationToken);
}

/// <summary>
/// Optional job storage inside a transaction, on the same object as the store's <c>IStoreTransaction</c>: unique keys,
/// batches and recurring schedules, written with the jobs they concern.
/// </summary>
public interface IJobTransaction
{
    /// <summary>
    /// Reserves <paramref name="key"/> for job <paramref name="jobId"/> until <paramref name="expiresAt"/>. Returns
    /// <c>null</c> when reserved, or the id of the job that holds an unexpired reservation (then do not enqueue).
    /// </summary>
    ValueTask<Guid?> TryReserveUniqueKeyAsync(string key, Guid jobId, DateTimeOffset expiresAt, CancellationToken cancellationToken);

    /// <summary>Records that <paramref name="queue"/> is a job queue (idempotent), so that job listings show its jobs.</summary>
    ValueTask RegisterJobQueueAsync(string queue, CancellationToken cancellationToken);

    /// <summary>Creates a batch, open for jobs; <c>false</c> when one with its id exists (then nothing changes).</summary>
    ValueTask<bool> CreateBatchAsync(JobBatchRecord batch, CancellationToken cancellationToken);

    /// <summary>
    /// Counts <paramref name="count"/> more jobs into batch <paramref name="batchId"/> (total and pending); a negative
    /// count takes copies out again (a job id enqueued twice runs once).
    /// </summary>
    /// <exception cref="InvalidOperationException">The batch does not exist or has finished.</exception>
    ValueTask AddToBatchAsync(string batchId, int count, CancellationToken cancellationToken);

    /// <summary>
    /// Records finished jobs of a batch (<paramref name="succeeded"/> and <paramref name="failed"/>; a negative
    /// <paramref name="failed"/> with positive pending re-opens a failure that is being retried). Returns the batch
    /// when this call finished it (sealed and nothing pending); the caller then enqueues its callbacks.
    /// </summary>
    ValueTask<JobBatchRecord?> RecordBatchOutcomesAsync(string batchId, int succeeded, int failed, CancellationToken cancellationToken);

    /// <summary>
    /// Holds the count of <see cref="RecordBatchOutcomesAsync"/> to be made with the commit, and returns <c>true</c>; or
    /// returns <c>false</c> (the default) when the store does not hold counts, and then the caller records them at once.
    /// A store that holds a count makes it in the commit's round trip, and when that finishes the batch, it enqueues the
    /// batch's callbacks on its own queues in the same statement (the success callback when none failed, and the
    /// completion callback), as the caller would: the batch's row, which every job of the batch updates, is then
    /// locked for the commit only. A held count is undone with the transaction or with a savepoint rolled back to.
    /// After <c>true</c> the caller neither counts these outcomes again nor enqueues the callbacks itself.
    /// </summary>
    ValueTask<bool> TryHoldBatchOutcomesAsync(string batchId, int succeeded, int failed, CancellationToken cancellationToken) => ValueTask.FromResult(false);

    /// <summary>Seals a batch: it finishes once nothing is pending. Returns the batch when sealing finished it.</summary>
    ValueTask<JobBatchRecord?> SealBatchAsync(string batchId, CancellationToken cancellationToken);

    /// <summary>
    /// Stores a recurring schedule. An existing one keeps where it stands (<see cref="RecurringJobRecord.NextAt"/>)
    /// unless its cron expression or time zone changed; everything else is replaced.
    /// </summary>
    ValueTask UpsertRecurringJobAsync(RecurringJobRecord schedule, CancellationToken cancellationToken);

    /// <summary>Recurring schedules whose next occurrence is at or before <paramref name="now"/>.</summary>
    ValueTask<IReadOnlyList<RecurringJobRecord>> LoadDueRecurringJobsAsync(DateTimeOffset now, CancellationToken cancellationToken);

    /// <summary>
    /// Moves schedule <paramref name="name"/> from <paramref name="expectedNextAt"/> to <paramref name="nextAt"/>;
    /// <c>false</c> when another process moved it first (then roll back: it enqueued those occurrences).
    /// </summary>
    ValueTask<bool> AdvanceRecurringJobAsync(string name, DateTimeOffset expectedNextAt, DateTimeOffset nextAt, DateTimeOffset? lastAt, CancellationToken cancellationToken);

    /// <summary>Removes a recurring schedule; <c>false</c> when there was none.</summary>
    ValueTask<bool> RemoveRecurringJobAsync(string name, CancellationToken cancellationToken);

    /// <summary>Deletes the progress and cancellation records of finished jobs.</summary>
    ValueTask ForgetJobStateAsync(IReadOnlyList<Guid> jobIds, CancellationToken cancellationToken);
}

/// <summary>Optional read-only job queries for the CLI and the dashboard, on the same object as the store.</summary>
public interface IJobQueries
{
    /// <summary>The job <paramref name="id"/> wherever it is (queue, inbox, dead letters); <c>null</c> when unknown.</summary>
    ValueTask<JobInfo?> GetJobAsync(Guid id, CancellationToken cancellationToken);

    /// <summary>Jobs matching <paramref name="query"/>, newest first, from the queues registered as job queues.</summary>
    ValueTask<IReadOnlyList<JobInfo>> ListJobsAsync(JobQuery query, CancellationToken cancellationToken);

    /// <summary>The batch <paramref name="id"/>; <c>null</c> when unknown.</summary>
    ValueTask<JobBatchRecord?> GetBatchAsync(string id, CancellationToken cancellationToken);

    /// <summary>Every recurring schedule, by name.</summary>
    ValueTask<IReadOnlyList<RecurringJobRecord>> ListRecurringJobsAsync(CancellationToken cancellationToken);
}
