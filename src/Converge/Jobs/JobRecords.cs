using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;

namespace Converge.Jobs;

/// <summary>The life-cycle states of a job, as read back from the store.</summary>
public enum JobState
{
    /// <summary>Waiting for its due time.</summary>
    Scheduled,

    /// <summary>Visible, waiting for a worker.</summary>
    Enqueued,

    /// <summary>Claimed by a worker under a lease.</summary>
    Processing,

    /// <summary>Finished; its effects committed (recorded in the inbox).</summary>
    Succeeded,

    /// <summary>Failed for good: in the dead letters, where <c>converge jobs retry</c> puts it back.</summary>
    Dead,

    /// <summary>Cancelled before it finished: in the dead letters with reason <c>cancelled</c>.</summary>
    Cancelled,
}

/// <summary>A job as the store sees it.</summary>
public sealed record JobInfo
{
    /// <summary>The job id (its message id).</summary>
    public required Guid Id { get; init; }

    /// <summary>The queue it runs on.</summary>
    public required string Queue { get; init; }

    /// <summary>The registered type name of the job.</summary>
    public required string Type { get; init; }

    /// <summary>Its state.</summary>
    public required JobState State { get; init; }

    /// <summary>The business transaction id, if any.</summary>
    public string? CorrelationId { get; init; }

    /// <summary>When it was enqueued.</summary>
    public DateTimeOffset EnqueuedAt { get; init; }

    /// <summary>When it becomes (or became) visible; for a job in progress, when its lease ends.</summary>
    public DateTimeOffset? DueAt { get; init; }

    /// <summary>When it finished (succeeded, died or was cancelled).</summary>
    public DateTimeOffset? FinishedAt { get; init; }

    /// <summary>The state of the world it was computed from, if the sender said.</summary>
    public DateTimeOffset? AsOf { get; init; }

    /// <summary>Its priority (higher first).</summary>
    public int Priority { get; init; }

    /// <summary>Delivery attempts so far.</summary>
    public int Attempts { get; init; }

    /// <summary>The last reported progress, 0 to 100; <c>null</c> when never reported.</summary>
    public int? Progress { get; init; }

    /// <summary>The note that came with the last progress report.</summary>
    public string? ProgressNote { get; init; }

    /// <summary>For a dead or cancelled job, the reason; for a retrying one, the last error.</summary>
    public string? Error { get; init; }

    /// <summary>The dead-letter id, for <c>converge jobs retry</c>.</summary>
    public long? DeadLetterId { get; init; }

    /// <summary>The batch it belongs to, if any.</summary>
    public string? BatchId { get; init; }

    /// <summary>Headers it was sent with.</summary>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();

    /// <summary>The serialized job (JSON with the default serializer); <c>null</c> once succeeded (the inbox keeps no body).</summary>
    public ReadOnlyMemory<byte>? Body { get; init; }

    /// <summary>Earlier failed attempts, oldest first.</summary>
    public IReadOnlyList<AttemptRecord> History { get; init; } = [];

    /// <summary>
    /// Where this job stands in a listing (<c>IJobQueries.ListJobsAsync</c>): pass it as <see cref="JobQuery.After"/>
    /// to list the jobs after it. Set by listings only; <c>null</c> on a job read by id. Opaque.
    /// </summary>
    public string? Cursor { get; init; }
}

/// <summary>
/// Which jobs to list, newest first: a waiting or running job by when it was sent, a finished one by when it finished.
/// Keyset-paged: pass the <see cref="JobInfo.Cursor"/> of the last job of a page as <see cref="After"/> for the next.
/// </summary>
public sealed record JobQuery
{
    /// <summary>Only this queue; <c>null</c> for every queue.</summary>
    public string? Queue { get; init; }

    /// <summary>Only this state; <c>null</c> for every state.</summary>
    public JobState? State { get; init; }

    /// <summary>
    /// Only this batch; <c>null</c> for any. Succeeded jobs are matched too: the inbox record keeps the batch id.
    /// </summary>
    public string? BatchId { get; init; }

    /// <summary>At most this many, newest first. Default 50.</summary>
    public int Max { get; init; } = 50;

    /// <summary>
    /// Only jobs after (older than) this position: the <see cref="JobInfo.Cursor"/> of the last job of the previous
    /// page. <c>null</c> (default) starts with the newest.
    /// </summary>
    /// <exception cref="FormatException">On query, when the text is not a job cursor.</exception>
    public string? After { get; init; }
}

/// <summary>A batch of jobs and its counters.</summary>
public sealed record JobBatchRecord
{
    /// <summary>The batch id, chosen by the caller (for example <c>month-close:2026-12</c>).</summary>
    public required string Id { get; init; }

    /// <summary>A description for people.</summary>
    public string? Description { get; init; }

    /// <summary>Jobs added so far.</summary>
    public long Total { get; init; }

    /// <summary>Jobs added and not yet finished.</summary>
    public long Pending { get; init; }

    /// <summary>Jobs that succeeded.</summary>
    public long Succeeded { get; init; }

    /// <summary>Jobs that died or were cancelled.</summary>
    public long Failed { get; init; }

    /// <summary>Whether the batch is closed to new jobs from outside it (jobs of the batch may still add to it).</summary>
    public bool Sealed { get; init; }

    /// <summary>When the batch was created.</summary>
    public DateTimeOffset CreatedAt { get; init; }

    /// <summary>When its last job finished after it was sealed; <c>null</c> while running.</summary>
    public DateTimeOffset? FinishedAt { get; init; }

    /// <summary>Enqueued when the batch finishes with no failures.</summary>
    public OutgoingMessage? OnSuccess { get; init; }

    /// <summary>Enqueued when the batch finishes, whatever the failures.</summary>
    public OutgoingMessage? OnComplete { get; init; }
}

/// <summary>A recurring job's schedule as stored: the template job and where the schedule stands.</summary>
public sealed record RecurringJobRecord
{
    /// <summary>The schedule's unique name.</summary>
    public required string Name { get; init; }

    /// <summary>The cron expression (five fields, or six with seconds first).</summary>
    public required string Cron { get; init; }

    /// <summary>The IANA or Windows time-zone id the expression is read in.</summary>
    public required string TimeZone { get; init; }

    /// <summary>The queue each occurrence is enqueued on.</summary>
    public required string Queue { get; init; }

    /// <summary>The registered type name of the job.</summary>
    public required string MessageType { get; init; }

    /// <summary>The serialized job each occurrence carries.</summary>
    public required ReadOnlyMemory<byte> Body { get; init; }

    /// <summary>The priority of each occurrence.</summary>
    public int Priority { get; init; }

    /// <summary>What happens to occurrences missed during downtime.</summary>
    public MisfirePolicy Misfire { get; init; }

    /// <summary>The next occurrence not yet enqueued.</summary>
    public required DateTimeOffset NextAt { get; init; }

    /// <summary>The last occurrence enqueued; <c>null</c> before the first.</summary>
    public DateTimeOffset? LastAt { get; init; }
}

/// <summary>What a cancellation request found.</summary>
public enum JobCancelOutcome
{
    /// <summary>No such job is waiting or running.</summary>
    NotFound,

    /// <summary>It was waiting; it is now in the dead letters with reason <c>cancelled</c>.</summary>
    Cancelled,

    /// <summary>It is running; its worker is asked to stop (its cancellation token fires).</summary>
    Requested,
}

/// <summary>Header names Converge's job runtime writes.</summary>
public static class JobHeaders
{
    /// <summary>The id of the batch a job belongs to.</summary>
    public const string Batch = "converge-batch";

    /// <summary>The unique key a job was enqueued under.</summary>
    public const string UniqueKey = "converge-unique";

    /// <summary>The recurring schedule that enqueued the job.</summary>
    public const string Recurring = "converge-recurring";
}
