using Converge.Storage;

namespace Converge.Jobs;

/// <summary>Optional settings of one enqueued job. Every property defaults to "decide for me".</summary>
public sealed record JobOptions
{
    /// <summary>The queue; default: the queue the job type is registered on (or routed to).</summary>
    public string? Queue { get; init; }

    /// <summary>The job id; default a new time-ordered id. Reusing an id makes enqueueing idempotent at the worker.</summary>
    public Guid? JobId { get; init; }

    /// <summary>Run after this delay; default now. Ignored when <see cref="RunAt"/> is set.</summary>
    public TimeSpan? Delay { get; init; }

    /// <summary>Run at this time; default now.</summary>
    public DateTimeOffset? RunAt { get; init; }

    /// <summary>
    /// Higher runs first within the queue; default 0. Lower priorities are not starved: a share of the jobs every
    /// worker claims are the longest-waiting ones whatever their priority (<see cref="Runtime.QueueOptions.OldestFirstEvery"/>).
    /// </summary>
    public int Priority { get; init; }

    /// <summary>
    /// A key that makes the job unique: while an earlier job with the same key was enqueued less than
    /// <see cref="UniqueFor"/> ago, this one is not enqueued and the earlier job's id is returned. Default none.
    /// </summary>
    public string? UniqueKey { get; init; }

    /// <summary>How long a <see cref="UniqueKey"/> holds; default 1 hour.</summary>
    public TimeSpan UniqueFor { get; init; } = TimeSpan.FromHours(1);

    /// <summary>The business transaction id; default: that of the job or message that enqueues it.</summary>
    public string? CorrelationId { get; init; }

    /// <summary>The moment of the state the job was computed from; the handler compares it with what it re-reads. Default none.</summary>
    public DateTimeOffset? AsOf { get; init; }

    /// <summary>The batch to add the job to (created with <see cref="IJobClient.StartBatchAsync"/>); default none.</summary>
    public string? BatchId { get; init; }

    /// <summary>Extra headers; default none.</summary>
    public IReadOnlyDictionary<string, string>? Headers { get; init; }
}

/// <summary>The outcome of enqueueing a job.</summary>
/// <param name="Id">The job's id, or, for a duplicate, the id of the job that holds its unique key.</param>
/// <param name="Duplicate"><c>true</c> when a job with the same unique key was enqueued within its window, so nothing was enqueued.</param>
public readonly record struct EnqueuedJob(Guid Id, bool Duplicate);

/// <summary>A new batch: its id and callbacks.</summary>
public sealed record JobBatchOptions
{
    /// <summary>The batch id: unique, chosen by you so a restarted process finds the same batch (for example <c>month-close:2026-12</c>).</summary>
    public required string Id { get; init; }

    /// <summary>A description for people; default none.</summary>
    public string? Description { get; init; }

    /// <summary>A job enqueued when every job of the batch succeeded; default none.</summary>
    public object? OnSuccess { get; init; }

    /// <summary>A job enqueued when every job of the batch finished, whether or not some failed; default none.</summary>
    public object? OnComplete { get; init; }

    /// <summary>Options of the callback jobs (queue, priority); default: the callback type's queue.</summary>
    public JobOptions? CallbackOptions { get; init; }
}

/// <summary>Settings of one recurring job.</summary>
public sealed class RecurringJobOptions
{
    /// <summary>The time zone the cron expression is read in (IANA or Windows id); default UTC. Daylight-saving gaps and overlaps are handled: a skipped time runs once right after the gap, a repeated time runs once.</summary>
    public string TimeZone { get; set; } = "UTC";

    /// <summary>What happens to occurrences missed while no process ran; default <see cref="MisfirePolicy.RunOnce"/>.</summary>
    public MisfirePolicy Misfire { get; set; } = MisfirePolicy.RunOnce;

    /// <summary>The queue; default the job type's queue.</summary>
    public string? Queue { get; set; }

    /// <summary>The priority of each occurrence; default 0.</summary>
    public int Priority { get; set; }
}
