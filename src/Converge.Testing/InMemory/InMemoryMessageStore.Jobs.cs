using Converge.Contracts;
using Converge.Jobs;
using Converge.Storage;

namespace Converge.Testing.InMemory;

// Job storage: unique keys, job queues, batches, recurring schedules, cancellation and progress.
public sealed partial class InMemoryMessageStore
{
    /// <inheritdoc />
    public async ValueTask<int> PurgeExpiredUniqueKeysAsync(CancellationToken cancellationToken) =>
        await WriteAsync(t => ValueTask.FromResult(t.PurgeExpiredUniqueKeys()), cancellationToken);

    /// <inheritdoc />
    public async ValueTask<JobCancelOutcome> CancelJobAsync(Guid id, CancellationToken cancellationToken) =>
        await WriteAsync(t => t.CancelJobAsync(id, cancellationToken), cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<Guid>> ReadCancellationsAsync(IReadOnlyList<Guid> ids, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var cancellations = Committed.Cancellations;
        return ValueTask.FromResult<IReadOnlyList<Guid>>([.. ids.Where(cancellations.Contains)]);
    }

    /// <inheritdoc />
    public async ValueTask SaveJobProgressAsync(Guid id, int percent, string? note, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(percent);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(percent, 100);
        await WriteAsync(t => ValueTask.FromResult(t.SaveProgress(id, percent, note)), cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<JobBatchRecord?> GetBatchAsync(string id, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Committed.Batches.GetValueOrDefault(id));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<RecurringJobRecord>> ListRecurringJobsAsync(CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<RecurringJobRecord>>([.. Committed.Recurring.Values.OrderBy(static r => r.Name, StringComparer.Ordinal)]);
}

internal sealed partial class InMemoryStoreTransaction
{
    public int PurgeExpiredUniqueKeys()
    {
        var state = State;
        var now = Now;
        var expired = state.UniqueKeys.Where(pair => pair.Value.ExpiresAt <= now).Select(static pair => pair.Key).ToList();
        State = state with { UniqueKeys = state.UniqueKeys.RemoveRange(expired) };
        return expired.Count;
    }

    public ValueTask<Guid?> TryReserveUniqueKeyAsync(string key, Guid jobId, DateTimeOffset expiresAt, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var state = State;
        if (state.UniqueKeys.TryGetValue(key, out var holder) && holder.ExpiresAt > Now)
        {
            return ValueTask.FromResult<Guid?>(holder.JobId);
        }

        State = state with { UniqueKeys = state.UniqueKeys.SetItem(key, (jobId, expiresAt)) };
        return ValueTask.FromResult<Guid?>(null);
    }

    public ValueTask RegisterJobQueueAsync(string queue, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(queue);
        State = State with { JobQueues = State.JobQueues.Add(queue) };
        return ValueTask.CompletedTask;
    }

    public ValueTask<bool> CreateBatchAsync(JobBatchRecord batch, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var state = State;
        if (state.Batches.ContainsKey(batch.Id))
        {
            return ValueTask.FromResult(false);
        }

        var created = batch with { Total = 0, Pending = 0, Succeeded = 0, Failed = 0, Sealed = false, FinishedAt = null };
        State = state with { Batches = state.Batches.Add(batch.Id, created) };
        return ValueTask.FromResult(true);
    }

    public ValueTask AddToBatchAsync(string batchId, int count, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batchId);
        var state = State;
        if (!state.Batches.TryGetValue(batchId, out var batch) || batch.FinishedAt is not null)
        {
            throw new InvalidOperationException(batch is null
                ? $"There is no batch '{batchId}'. Start it with IJobClient.StartBatchAsync before adding jobs to it."
                : $"Batch '{batchId}' finished at {batch.FinishedAt:O}; a finished batch takes no more jobs. Start a new batch.");
        }

        State = state with { Batches = state.Batches.SetItem(batchId, batch with { Total = batch.Total + count, Pending = batch.Pending + count }) };
        return ValueTask.CompletedTask;
    }

    /// <summary>Counts outcomes into an unfinished batch; <c>false</c> when there is no such batch or it has finished.</summary>
    bool CountOutcomes(string batchId, int succeeded, int failed)
    {
        var state = State;
        if (!state.Batches.TryGetValue(batchId, out var batch) || batch.FinishedAt is not null)
        {
            return false;
        }

        var counted = batch with { Pending = batch.Pending - (succeeded + failed), Succeeded = batch.Succeeded + succeeded, Failed = batch.Failed + failed };
        State = state with { Batches = state.Batches.SetItem(batchId, counted) };
        return true;
    }

    /// <summary>Marks the batch finished if it is sealed and nothing is pending; the batch when this call finished it.</summary>
    JobBatchRecord? FinishBatch(string batchId)
    {
        var state = State;
        if (!state.Batches.TryGetValue(batchId, out var batch) || !batch.Sealed || batch.Pending > 0 || batch.FinishedAt is not null)
        {
            return null;
        }

        var finished = batch with { FinishedAt = Now };
        State = state with { Batches = state.Batches.SetItem(batchId, finished) };
        return finished;
    }

    public ValueTask<JobBatchRecord?> RecordBatchOutcomesAsync(string batchId, int succeeded, int failed, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batchId);

        // A finished batch keeps its counts: only a job retried before it finished was re-opened in it.
        return ValueTask.FromResult(CountOutcomes(batchId, succeeded, failed) ? FinishBatch(batchId) : null);
    }

    public ValueTask<JobBatchRecord?> SealBatchAsync(string batchId, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batchId);
        var state = State;
        if (!state.Batches.TryGetValue(batchId, out var batch))
        {
            return ValueTask.FromResult<JobBatchRecord?>(null);
        }

        State = state with { Batches = state.Batches.SetItem(batchId, batch with { Sealed = true }) };
        return ValueTask.FromResult(FinishBatch(batchId));
    }

    public ValueTask UpsertRecurringJobAsync(RecurringJobRecord schedule, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        var state = State;

        // An existing schedule keeps where it stands unless its cron expression or time zone changed.
        var stored = state.Recurring.TryGetValue(schedule.Name, out var existing)
            ? schedule with
            {
                NextAt = existing.Cron == schedule.Cron && existing.TimeZone == schedule.TimeZone ? existing.NextAt : schedule.NextAt,
                LastAt = existing.LastAt,
            }
            : schedule;
        State = state with { Recurring = state.Recurring.SetItem(schedule.Name, stored with { Body = schedule.Body.ToArray() }) };
        return ValueTask.CompletedTask;
    }

    public ValueTask<IReadOnlyList<RecurringJobRecord>> LoadDueRecurringJobsAsync(DateTimeOffset now, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<RecurringJobRecord>>([.. State.Recurring.Values
            .Where(r => r.NextAt <= now)
            .OrderBy(static r => r.NextAt)
            .ThenBy(static r => r.Name, StringComparer.Ordinal)]);

    public ValueTask<bool> AdvanceRecurringJobAsync(string name, DateTimeOffset expectedNextAt, DateTimeOffset nextAt, DateTimeOffset? lastAt, CancellationToken cancellationToken)
    {
        var state = State;
        if (!state.Recurring.TryGetValue(name, out var schedule) || schedule.NextAt != expectedNextAt)
        {
            return ValueTask.FromResult(false);
        }

        State = state with { Recurring = state.Recurring.SetItem(name, schedule with { NextAt = nextAt, LastAt = lastAt ?? schedule.LastAt }) };
        return ValueTask.FromResult(true);
    }

    public ValueTask<bool> RemoveRecurringJobAsync(string name, CancellationToken cancellationToken)
    {
        var state = State;
        if (!state.Recurring.ContainsKey(name))
        {
            return ValueTask.FromResult(false);
        }

        State = state with { Recurring = state.Recurring.Remove(name) };
        return ValueTask.FromResult(true);
    }

    public int SaveProgress(Guid id, int percent, string? note)
    {
        State = State with { Progress = State.Progress.SetItem(id, (percent, note)) };
        return 1;
    }

    public ValueTask ForgetJobStateAsync(IReadOnlyList<Guid> jobIds, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(jobIds);
        State = State with { Progress = State.Progress.RemoveRange(jobIds), Cancellations = State.Cancellations.Except(jobIds) };
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Cancels job <paramref name="id"/>: each waiting copy moves to the dead letters as cancelled and counts as a failure in
    /// its batch (enqueueing the batch's callbacks when that finishes it); a copy under a live lease is flagged for its worker.
    /// </summary>
    public async ValueTask<JobCancelOutcome> CancelJobAsync(Guid id, CancellationToken cancellationToken)
    {
        var now = Now;
        var rows = State.AllRows.Where(row => row.Envelope.MessageId == id).OrderBy(static row => row.Id).ToList();
        if (rows.Count == 0)
        {
            return JobCancelOutcome.NotFound;
        }

        var requested = false;
        foreach (var row in rows)
        {
            if (row.LeaseToken is not null && row.VisibleAt > now)
            {
                State = State with { Cancellations = State.Cancellations.Add(id) };
                requested = true;
                continue;
            }

            Remove(row);
            InsertDeadLetter(row.Queue, row.Envelope, row.Priority, DeadLetterReasons.Cancelled, null, row.Attempts, row.History, null);
            if (JobRows.BatchOf(row.Envelope) is { } batchId
                && await RecordBatchOutcomesAsync(batchId, 0, 1, cancellationToken) is { } finished)
            {
                await JobRows.EnqueueBatchCallbacksAsync(this, finished, cancellationToken);
            }
        }

        return requested ? JobCancelOutcome.Requested : JobCancelOutcome.Cancelled;
    }
}
