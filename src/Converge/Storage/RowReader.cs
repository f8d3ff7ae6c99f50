using System.Data.Common;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Sagas;

namespace Converge.Storage;

/// <summary>
/// Turns rows into records for every store: the stores' tables have the same columns in the same order, and their
/// readers differ only in type, so one reader of each row serves them all.
/// </summary>
internal static class RowReader
{
    /// <summary>Reads the eight envelope columns starting at <paramref name="first"/>.</summary>
    public static Envelope ReadEnvelope(DbDataReader reader, int first) => new()
    {
        MessageId = reader.GetGuid(first),
        MessageType = reader.GetString(first + 1),
        CorrelationId = reader.IsDBNull(first + 2) ? null : reader.GetString(first + 2),
        CausationId = reader.IsDBNull(first + 3) ? null : reader.GetGuid(first + 3),
        SentAt = StoredRows.FromTicks(reader.GetInt64(first + 4)),
        AsOf = reader.IsDBNull(first + 5) ? null : StoredRows.FromTicks(reader.GetInt64(first + 5)),
        Headers = StoredRows.ParseHeaders(reader.IsDBNull(first + 6) ? null : reader.GetString(first + 6)),
        Body = reader.IsDBNull(first + 7) ? Array.Empty<byte>() : reader.GetFieldValue<byte[]>(first + 7),
    };

    /// <summary>Reads the nineteen saga columns in schema order.</summary>
    public static SagaInstance ReadSaga(DbDataReader reader) => new()
    {
        TransactionId = reader.GetString(0),
        Definition = reader.GetString(1),
        Version = reader.GetInt32(2),
        State = SagaStates.Parse(reader.GetString(3)),
        StepIndex = reader.GetInt32(4),
        Awaiting = reader.IsDBNull(5) ? null : reader.GetGuid(5),
        StepAttempt = reader.GetInt32(6),
        Steps = StoredRows.ParseSteps(reader.GetString(7)),
        Data = reader.GetFieldValue<byte[]>(8),
        Failure = reader.IsDBNull(9) ? null : reader.GetString(9),
        ConcurrencyVersion = reader.GetInt64(10),
        StartedAt = StoredRows.FromTicks(reader.GetInt64(11)),
        UpdatedAt = StoredRows.FromTicks(reader.GetInt64(12)),
        FailedStep = reader.IsDBNull(13) ? null : reader.GetString(13),
        LastError = reader.IsDBNull(14) ? null : reader.GetString(14),
        StuckReason = reader.IsDBNull(15) ? null : reader.GetString(15),
        TimeoutId = reader.IsDBNull(16) ? null : reader.GetGuid(16),
        TimeoutAt = reader.IsDBNull(17) ? null : StoredRows.FromTicks(reader.GetInt64(17)),
        Queue = reader.IsDBNull(18) ? null : reader.GetString(18),
    };

    /// <summary>Reads a saga log entry: id, transaction_id, at, kind, step, message_id, message_type, detail, answers.</summary>
    public static SagaLogEntry ReadSagaLogEntry(DbDataReader reader) => new(
        reader.GetString(1),
        StoredRows.FromTicks(reader.GetInt64(2)),
        reader.GetString(3),
        reader.IsDBNull(4) ? null : reader.GetString(4),
        reader.IsDBNull(5) ? null : reader.GetGuid(5),
        reader.IsDBNull(6) ? null : reader.GetString(6),
        reader.IsDBNull(7) ? null : reader.GetString(7))
    { Id = reader.GetInt64(0), Answers = reader.IsDBNull(8) ? null : reader.GetGuid(8) };

    public static IReadOnlyList<AttemptRecord> ReadHistory(DbDataReader reader, int ordinal) =>
        StoredRows.ParseHistory(reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal));

    /// <summary>Reads a queue row as a job sees it: id, queue, priority, visible_at, attempts, lease_token, history, then the envelope.</summary>
    public static QueueRow ReadQueueRow(DbDataReader reader) => new(
        reader.GetInt64(0),
        reader.GetString(1),
        reader.GetInt32(2),
        reader.GetInt64(3),
        reader.GetInt32(4),
        !reader.IsDBNull(5),
        reader.IsDBNull(6) ? null : reader.GetString(6),
        ReadEnvelope(reader, 7));

    /// <summary>Reads a dead letter: id, source, priority, reason, exception, attempts, history, dead_lettered_at, log_position, then the envelope.</summary>
    public static DeadLetter ReadDeadLetter(DbDataReader reader) => new()
    {
        Id = reader.GetInt64(0),
        Source = reader.GetString(1),
        Priority = reader.GetInt32(2),
        Reason = reader.GetString(3),
        Exception = reader.IsDBNull(4) ? null : reader.GetString(4),
        Attempts = reader.GetInt32(5),
        History = ReadHistory(reader, 6),
        DeadLetteredAt = StoredRows.FromTicks(reader.GetInt64(7)),
        LogPosition = reader.IsDBNull(8) ? null : reader.GetInt64(8),
        Envelope = ReadEnvelope(reader, 9),
    };

    public static LogEvent ReadEvent(DbDataReader reader) =>
        new(reader.GetInt64(0), reader.GetString(1), reader.GetInt64(2), ReadEnvelope(reader, 3));

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
        Misfire = StoredRows.ParseMisfire(reader.GetString(7)),
        NextAt = StoredRows.FromTicks(reader.GetInt64(8)),
        LastAt = reader.IsDBNull(9) ? null : StoredRows.FromTicks(reader.GetInt64(9)),
    };

    static OutgoingMessage? ReadCallback(DbDataReader reader, int first) =>
        reader.IsDBNull(first) ? null : new OutgoingMessage(reader.GetString(first), ReadEnvelope(reader, first + 2), Priority: reader.GetInt32(first + 1));

    /// <summary>Reads a claimed queue row: id, priority, attempts, history, then the envelope.</summary>
    public static QueuedMessage ReadClaimed(DbDataReader reader, string queue, Guid leaseToken) => new()
    {
        Id = reader.GetInt64(0),
        Priority = reader.GetInt32(1),
        Attempt = reader.GetInt32(2),
        History = ReadHistory(reader, 3),
        Envelope = ReadEnvelope(reader, 4),
        Queue = queue,
        LeaseToken = leaseToken,
    };
}
