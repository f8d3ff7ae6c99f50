using Converge.Contracts;
using Converge.Jobs;
using Converge.Storage;

namespace Converge.Testing.InMemory;

// Read-only queries for tools: status counts, the flow of a business transaction, job lookups and listings. Each reads
// one committed state, so a job moving between the queue, the inbox and the dead letters is seen in one place.
public sealed partial class InMemoryMessageStore
{
    /// <inheritdoc />
    public ValueTask<StoreStatus> GetStatusAsync(CancellationToken cancellationToken)
    {
        var state = Committed;
        var now = Now;
        var strandedAfter = now + InvalidRows.StrandedAfter;
        var deadLetters = state.DeadLetters.Values.GroupBy(static letter => letter.Source, StringComparer.Ordinal)
            .ToDictionary(static g => g.Key, static g => g.LongCount(), StringComparer.Ordinal);
        var queues = state.Queues.Select(pair => new QueueStatus(
                pair.Key,
                pair.Value.Values.LongCount(row => row.VisibleAt <= now),
                pair.Value.Values.LongCount(row => row.LeaseToken is null && row.VisibleAt > now && row.VisibleAt <= strandedAfter),
                pair.Value.Values.LongCount(row => row.LeaseToken is not null && row.VisibleAt > now),
                deadLetters.GetValueOrDefault(pair.Key))
            {
                Stranded = pair.Value.Values.LongCount(row => row.VisibleAt > strandedAfter),
                OldestReadyAt = pair.Value.Values.Where(row => row.VisibleAt <= now).Select(static row => (DateTimeOffset?)row.VisibleAt).Min(),
            })
            .ToList();
        foreach (var (source, count) in deadLetters)
        {
            if (!source.StartsWith("log:", StringComparison.Ordinal) && !state.Queues.ContainsKey(source))
            {
                queues.Add(new QueueStatus(source, 0, 0, 0, count));
            }
        }

        queues.Sort(static (a, b) => string.CompareOrdinal(a.Queue, b.Queue));
        long head = state.Log.Count;
        var groups = state.Groups.Values
            .OrderBy(static g => g.Name, StringComparer.Ordinal)
            .Select(g => new ConsumerGroupStatus(g.Name, g.Position, head - g.Position, g.FailedAttempts, g.LastError, g.Paused))
            .ToList();
        var held = state.DeadLetters.Values
            .Where(static letter => letter.LogPosition is null && letter.OrderingKey is not null)
            .GroupBy(static letter => (letter.Source, Key: letter.OrderingKey!))
            .OrderBy(static g => g.Key.Source, StringComparer.Ordinal)
            .ThenBy(static g => g.Key.Key, StringComparer.Ordinal)
            .Select(g => new HeldKeyStatus(g.Key.Source, g.Key.Key, g.LongCount(), state.RowsOf(g.Key.Source).Values.LongCount(row => row.OrderingKey == g.Key.Key)))
            .ToList();
        return ValueTask.FromResult(new StoreStatus(queues, deadLetters.Values.Sum(), head, groups, state.Inbox.Count) { HeldKeys = held });
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<FlowItem>> ReadFlowAsync(string correlationId, CancellationToken cancellationToken)
    {
        var state = Committed;
        var items = new List<FlowItem>();
        items.AddRange(state.Inbox.Values.Where(row => row.CorrelationId == correlationId)
            .Select(static row => new FlowItem(row.MessageId, row.MessageType, row.CausationId, row.SentAt, "queue:" + row.Consumer, "handled", row.HandledAt)));
        items.AddRange(state.AllRows.Where(row => row.Envelope.CorrelationId == correlationId)
            .Select(static row => new FlowItem(row.Envelope.MessageId, row.Envelope.MessageType, row.Envelope.CausationId, row.Envelope.SentAt, "queue:" + row.Queue, "pending", null)));
        items.AddRange(state.DeadLetters.Values.Where(letter => letter.Envelope.CorrelationId == correlationId)
            .Select(static letter => new FlowItem(letter.Envelope.MessageId, letter.Envelope.MessageType, letter.Envelope.CausationId, letter.Envelope.SentAt, "dead-letters:" + letter.Source, "dead-lettered", null)));
        items.AddRange(state.Log.Where(e => e.Envelope.CorrelationId == correlationId)
            .Select(static e => new FlowItem(e.Envelope.MessageId, e.Envelope.MessageType, e.Envelope.CausationId, e.Envelope.SentAt, "log:" + e.Stream, "appended", null)));
        return ValueTask.FromResult<IReadOnlyList<FlowItem>>(items);
    }

    /// <inheritdoc />
    public ValueTask<JobInfo?> GetJobAsync(Guid id, CancellationToken cancellationToken)
    {
        var state = Committed;
        var now = Now;
        var job = state.AllRows.Where(row => row.Envelope.MessageId == id).OrderBy(static row => row.Id).FirstOrDefault() is { } row
            ? QueuedJob(row, now)
            : state.Inbox.Values.Where(inbox => inbox.MessageId == id).OrderByDescending(static inbox => inbox.HandledAt).FirstOrDefault() is { } handled
                ? SucceededJob(handled)
                : state.DeadLetters.Values.Reverse().FirstOrDefault(letter => letter.Envelope.MessageId == id && letter.LogPosition is null) is { } letter
                    ? JobRows.DeadJob(letter)
                    : null;
        return ValueTask.FromResult(job is null ? null : WithProgress(state, job));
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<JobInfo>> ListJobsAsync(JobQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (query.Max <= 0)
        {
            return ValueTask.FromResult<IReadOnlyList<JobInfo>>([]);
        }

        var state = Committed;
        var now = Now;
        var jobQueues = state.JobQueues;
        bool InQueue(string queue) => (query.Queue is null || queue == query.Queue) && jobQueues.Contains(queue);
        bool InBatch(string? batch) => query.BatchId is null || batch == query.BatchId;

        // Each source lists its newest after the cursor; the merge keeps the newest of all. A waiting or running job
        // counts from when it was sent, a finished one from when it finished.
        var after = query.After is { } cursor ? JobListPosition.Parse(cursor) : new JobListPosition(long.MaxValue, JobListPosition.QueueSource + 1, 0, "", Guid.Empty);
        bool IsAfterCursor(JobListPosition position) => JobListPosition.Compare(after, position, static (a, b) => a.CompareTo(b)) < 0;
        var found = new List<(JobInfo, JobListPosition)>();
        if (query.State is null or JobState.Scheduled or JobState.Enqueued or JobState.Processing)
        {
            found.AddRange(state.AllRows
                .Where(row => InQueue(row.Queue) && InBatch(JobRows.BatchOf(row.Envelope)) && query.State switch
                {
                    JobState.Scheduled => row.LeaseToken is null && row.VisibleAt > now,
                    JobState.Enqueued => row.VisibleAt <= now,
                    JobState.Processing => row.LeaseToken is not null && row.VisibleAt > now,
                    _ => true,
                })
                .Select(row => (Job: QueuedJob(row, now), Position: new JobListPosition(row.Envelope.SentAt.UtcTicks, JobListPosition.QueueSource, row.Id, "", Guid.Empty)))
                .Where(found => IsAfterCursor(found.Position)));
        }

        if (query.State is null or JobState.Dead or JobState.Cancelled)
        {
            found.AddRange(state.DeadLetters.Values
                .Where(letter => letter.LogPosition is null && InQueue(letter.Source) && InBatch(JobRows.BatchOf(letter.Envelope)) && query.State switch
                {
                    JobState.Cancelled => letter.Reason == DeadLetterReasons.Cancelled,
                    JobState.Dead => letter.Reason != DeadLetterReasons.Cancelled,
                    _ => true,
                })
                .Select(letter => (Job: JobRows.DeadJob(letter), Position: new JobListPosition(letter.DeadLetteredAt.UtcTicks, JobListPosition.DeadLetterSource, letter.Id, "", Guid.Empty)))
                .Where(found => IsAfterCursor(found.Position)));
        }

        if (query.State is null or JobState.Succeeded)
        {
            found.AddRange(state.Inbox.Values
                .Where(row => InQueue(row.Consumer) && InBatch(row.BatchId))
                .Select(row => (Job: SucceededJob(row), Position: new JobListPosition(row.HandledAt.UtcTicks, JobListPosition.InboxSource, 0, row.Consumer, row.MessageId)))
                .Where(found => IsAfterCursor(found.Position)));
        }

        return ValueTask.FromResult<IReadOnlyList<JobInfo>>([.. JobListPosition.Newest(found, query.Max, static (a, b) => a.CompareTo(b)).Select(job => WithProgress(state, job))]);
    }

    static JobInfo QueuedJob(MemoryQueueRow row, DateTimeOffset now) =>
        JobRows.QueuedJob(new QueueRow(row.Id, row.Queue, row.Priority, row.VisibleAt.UtcTicks, row.Attempts, row.LeaseToken is not null, StoredRows.WriteHistory(row.History, null), row.Envelope), now.UtcTicks);

    static JobInfo SucceededJob(MemoryInboxRow row) =>
        JobRows.SucceededJob(row.MessageId, row.Consumer, row.HandledAt, row.MessageType, row.CorrelationId, row.SentAt, row.BatchId);

    static JobInfo WithProgress(InMemoryState state, JobInfo job) =>
        state.Progress.TryGetValue(job.Id, out var progress) ? job with { Progress = progress.Percent, ProgressNote = progress.Note } : job;
}
