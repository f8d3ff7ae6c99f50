using System.Data.Common;
using Converge.Contracts;
using Converge.Storage;

namespace Converge.Jobs;

/// <summary>
/// Turns job rows into records for every store that offers job storage (<see cref="IJobTransaction"/>): batches,
/// recurring schedules, and jobs as <see cref="JobInfo"/> wherever they are (queue, inbox, dead letters).
/// </summary>
public static class JobRows
{
    /// <summary>Reads a batch row: its nine own columns, then ten columns of each callback.</summary>
    public static JobBatchRecord ReadBatch(DbDataReader reader) => new()
    {
        Id = reader.GetString(0),
        Description = reader.IsDBNull(1) ? null : reader.GetString(1),
        Total = reader.GetInt64(2),
        Pending = reader.GetInt64(3),
        Succeeded = reader.GetInt64(4),
        Failed = reader.GetInt64(5),
        Sealed = reader.GetBoolean(6),
        CreatedAt = StoredRows.FromTicks(reader.GetInt64(7)),
        FinishedAt = reader.IsDBNull(8) ? null : StoredRows.FromTicks(reader.GetInt64(8)),
        OnSuccess = ReadCallback(reader, 9),
        OnComplete = ReadCallback(reader, 19),
    };

    /// <summary>Reads a recurring schedule: name, cron, time_zone, queue, message_type, body, priority, misfire, next_at, last_at.</summary>
    public static RecurringJobRecord ReadRecurring(DbDataReader reader) => new()
    {
        Name = reader.GetString(0),
        Cron = reader.GetString(1),
        TimeZone = reader.GetString(2),
        Queue = reader.GetString(3),
        MessageType = reader.GetString(4),
        Body = reader.GetFieldValue<byte[]>(5),
        Priority = reader.GetInt32(6),
        Misfire = ParseMisfire(reader.GetString(7)),
        NextAt = StoredRows.FromTicks(reader.GetInt64(8)),
        LastAt = reader.IsDBNull(9) ? null : StoredRows.FromTicks(reader.GetInt64(9)),
    };

    static OutgoingMessage? ReadCallback(DbDataReader reader, int first) =>
        reader.IsDBNull(first) ? null : new OutgoingMessage(reader.GetString(first), RowReader.ReadEnvelope(reader, first + 2), Priority: reader.GetInt32(first + 1));

    /// <summary>The stored text of <paramref name="misfire"/>.</summary>
    public static string MisfireText(MisfirePolicy misfire) => misfire switch
    {
        MisfirePolicy.Skip => "skip",
        MisfirePolicy.RunOnce => "run-once",
        _ => throw new ArgumentOutOfRangeException(nameof(misfire), misfire, "Unknown misfire policy."),
    };

    /// <summary>Parses a stored misfire policy; anything but <c>skip</c> is run-once.</summary>
    public static MisfirePolicy ParseMisfire(string text) => text == "skip" ? MisfirePolicy.Skip : MisfirePolicy.RunOnce;

    /// <summary>A job still on its queue: scheduled, enqueued, or processing under a live lease.</summary>
    public static JobInfo QueuedJob(QueueRow row, long nowTicks)
    {
        var history = StoredRows.ParseHistory(row.History);
        return new JobInfo
        {
            Id = row.Envelope.MessageId,
            Queue = row.Queue,
            Type = row.Envelope.MessageType,
            State = row.VisibleAt <= nowTicks ? JobState.Enqueued : row.Leased ? JobState.Processing : JobState.Scheduled,
            CorrelationId = row.Envelope.CorrelationId,
            EnqueuedAt = row.Envelope.SentAt,
            DueAt = StoredRows.FromTicksClamped(row.VisibleAt),
            AsOf = row.Envelope.AsOf,
            Priority = row.Priority,
            Attempts = row.Attempts,
            Error = history.Count > 0 ? history[^1].Error : null,
            BatchId = BatchOf(row.Envelope),
            Headers = row.Envelope.Headers,
            Body = row.Envelope.Body,
            History = history,
        };
    }

    /// <summary>A job its queue's inbox recorded as handled.</summary>
    public static JobInfo SucceededJob(Guid id, string queue, DateTimeOffset handledAt, string? type, string? correlationId, DateTimeOffset? sentAt, string? batchId) => new()
    {
        Id = id,
        Queue = queue,
        Type = type ?? "?",
        State = JobState.Succeeded,
        CorrelationId = correlationId,
        EnqueuedAt = sentAt ?? handledAt,
        FinishedAt = handledAt,
        BatchId = batchId,
        Body = null,
    };

    /// <summary>A job in the dead letters: dead, or cancelled.</summary>
    public static JobInfo DeadJob(DeadLetter letter) => new()
    {
        Id = letter.Envelope.MessageId,
        Queue = letter.Source,
        Type = letter.Envelope.MessageType,
        State = letter.Reason == DeadLetterReasons.Cancelled ? JobState.Cancelled : JobState.Dead,
        CorrelationId = letter.Envelope.CorrelationId,
        EnqueuedAt = letter.Envelope.SentAt,
        FinishedAt = letter.DeadLetteredAt,
        AsOf = letter.Envelope.AsOf,
        Priority = letter.Priority,
        Attempts = letter.Attempts,
        Error = letter.Reason,
        DeadLetterId = letter.Id,
        BatchId = BatchOf(letter.Envelope),
        Headers = letter.Envelope.Headers,
        Body = letter.Envelope.Body,
        History = letter.History,
    };

    /// <summary>The batch a job belongs to, from its <see cref="JobHeaders.Batch"/> header; <c>null</c> when none.</summary>
    public static string? BatchOf(Envelope envelope) => envelope.Headers.TryGetValue(JobHeaders.Batch, out var batch) ? batch : null;

    /// <summary>The newest <paramref name="max"/> of jobs found in several places, each dated by when it last moved.</summary>
    public static List<JobInfo> Newest(IEnumerable<JobInfo> found, int max) =>
        [.. found.OrderByDescending(job => job.FinishedAt ?? job.EnqueuedAt).Take(max)];

    /// <summary>
    /// Counts a job that a claim dead-lettered as an undecodable row (see <see cref="InvalidRows"/>) as failed in its
    /// batch, when its batch can be read; a batch that this finishes enqueues its callbacks in the same transaction.
    /// </summary>
    public static async ValueTask InvalidRowDeadLetteredAsync(IStoreTransaction transaction, QueuedMessage message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        ArgumentNullException.ThrowIfNull(message);
        if (BatchOf(message.Envelope) is { } batchId
            && transaction is IJobTransaction jobs
            && await jobs.RecordBatchOutcomesAsync(batchId, 0, 1, cancellationToken) is { } finished)
        {
            await EnqueueBatchCallbacksAsync(transaction, finished, cancellationToken);
        }
    }

    /// <summary>
    /// Enqueues the callbacks of a batch that a store call just finished (<see cref="IJobTransaction.RecordBatchOutcomesAsync"/>
    /// or <see cref="IJobTransaction.SealBatchAsync"/> returned it), in the same transaction. A store that finishes a
    /// batch itself (cancelling a waiting job) calls this.
    /// </summary>
    public static ValueTask EnqueueBatchCallbacksAsync(IStoreTransaction transaction, JobBatchRecord finished, CancellationToken cancellationToken) =>
        JobClient.EnqueueCallbacksAsync(transaction, finished, cancellationToken);
}
