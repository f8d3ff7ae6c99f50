using System.Data.Common;
using Converge.Contracts;

namespace Converge.Storage;

/// <summary>
/// Turns rows into records for every store: the stores' tables have the same columns in the same order, and their
/// readers differ only in type, so one reader of each row serves them all.
/// </summary>
public static class RowReader
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

    /// <summary>Reads a stored attempt history (see <see cref="StoredRows.ParseHistory"/>) at <paramref name="ordinal"/>.</summary>
    public static IReadOnlyList<AttemptRecord> ReadHistory(DbDataReader reader, int ordinal) =>
        StoredRows.ParseHistory(reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal));

    /// <summary>Reads a queue row as a job sees it: id, queue, priority, visible_at, attempts, lease_token, history, then the envelope.</summary>
    /// <remarks>
    /// A row that cannot be decoded (see <see cref="ReadClaimed"/>) is read leniently rather than fail a listing: stand-ins
    /// for what does not decode, raw values in its headers, and no history when its history does not parse.
    /// </remarks>
    public static QueueRow ReadQueueRow(DbDataReader reader)
    {
        try
        {
            var row = new QueueRow(
                reader.GetInt64(0),
                reader.GetString(1),
                reader.GetInt32(2),
                reader.GetInt64(3),
                reader.GetInt32(4),
                !reader.IsDBNull(5),
                reader.IsDBNull(6) ? null : reader.GetString(6),
                ReadEnvelope(reader, 7));
            _ = StoredRows.ParseHistory(row.History);
            return row;
        }
        catch (Exception exception) when (exception is not DbException)
        {
            var lenient = new LenientReader(reader);
            var priority = lenient.Read(2, "priority", static (r, i) => r.GetInt32(i), 0);
            var attempts = lenient.Read(4, "attempts", static (r, i) => r.GetInt32(i), 0);
            var history = lenient.Read(6, "history", static (r, i) => StoredRows.ParseHistory(r.IsDBNull(i) ? null : r.GetString(i)) is { Count: > 0 } ? r.GetString(i) : null, null);
            return new QueueRow(reader.GetInt64(0), reader.GetString(1), priority, reader.GetInt64(3), attempts, !reader.IsDBNull(5), history, lenient.ReadEnvelope(7));
        }
    }

    /// <summary>
    /// Reads a dead letter: id, source, priority, reason, exception, attempts, history, dead_lettered_at, log_position,
    /// then the envelope, then (when selected) its ordering key.
    /// </summary>
    public static DeadLetter ReadDeadLetter(DbDataReader reader) => new()
    {
        OrderingKey = reader.FieldCount > DeadLetterOrderingKey && !reader.IsDBNull(DeadLetterOrderingKey) ? reader.GetString(DeadLetterOrderingKey) : null,
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

    /// <summary>The ordinal of a dead letter's ordering key, after its nine own columns and the eight of its envelope.</summary>
    public const int DeadLetterOrderingKey = 17;

    /// <summary>Reads a log event: position, stream, stream_version, then the envelope.</summary>
    public static LogEvent ReadEvent(DbDataReader reader) =>
        new(reader.GetInt64(0), reader.GetString(1), reader.GetInt64(2), ReadEnvelope(reader, 3));

    /// <summary>
    /// Reads a claimed queue row: id, priority, attempts, history, then the envelope. A row that cannot be decoded (a
    /// column holding what Converge never writes there) does not throw: it comes back with the reason, and with what
    /// could be read, for the store to dead-letter in the claim's transaction (see <see cref="ClaimedRow"/>).
    /// </summary>
    public static ClaimedRow ReadClaimed(DbDataReader reader, string queue, Guid leaseToken)
    {
        try
        {
            return new(new QueuedMessage
            {
                Id = reader.GetInt64(0),
                Priority = reader.GetInt32(1),
                Attempt = ClaimedAttempt(reader.GetInt32(2)),
                History = ReadHistory(reader, 3),
                Envelope = ReadEnvelope(reader, 4),
                Queue = queue,
                LeaseToken = leaseToken,
            }, null);
        }
        catch (Exception exception) when (exception is not DbException)
        {
            return ReadUndecodable(reader, queue, leaseToken);
        }
    }

    /// <summary>
    /// A claimed row's attempt count, which its claim has just raised: at least 1, and short of <see cref="int.MaxValue"/>,
    /// where a count that cannot grow any more stops (PostgreSQL's claim saturates rather than overflow).
    /// </summary>
    static int ClaimedAttempt(int attempt) =>
        attempt is >= 1 and < int.MaxValue
            ? attempt
            : throw new InvalidDataException($"The claimed attempt count is {attempt}; Converge counts attempts from 1 and never near int's largest value.");

    /// <summary>
    /// Reads a claimed row column by column, keeping each value that decodes and standing in for each that does not:
    /// its raw value goes into the headers (<see cref="InvalidRows.RawHeaderPrefix"/> + column) and its error into the
    /// problem.
    /// </summary>
    static ClaimedRow ReadUndecodable(DbDataReader reader, string queue, Guid leaseToken)
    {
        var lenient = new LenientReader(reader);
        var id = reader.GetInt64(0);
        var priority = lenient.Read(1, "priority", static (r, i) => r.GetInt32(i), 0);
        var attempt = lenient.Read(2, "attempts", static (r, i) => ClaimedAttempt(r.GetInt32(i)), 1);
        var history = lenient.Read(3, "history", static (r, i) => ReadHistory(r, i), []);
        var envelope = lenient.ReadEnvelope(4);
        var message = new QueuedMessage
        {
            Id = id,
            Priority = priority,
            Attempt = attempt,
            History = history,
            Envelope = envelope,
            Queue = queue,
            LeaseToken = leaseToken,
        };
        var problem = $"Queue row {id} of '{queue}' cannot be decoded, so it was dead-lettered as {DeadLetterReasons.InvalidRow}. "
            + $"The columns that could not be read are kept raw in the headers {InvalidRows.RawHeaderPrefix}COLUMN:{Environment.NewLine}"
            + string.Join(Environment.NewLine, lenient.Problems);
        return new(message, problem);
    }

    /// <summary>
    /// Reads a row column by column, keeping each value that decodes and standing in for each that does not: its raw
    /// value is kept for the envelope's headers (<see cref="InvalidRows.RawHeaderPrefix"/> + column) and its error in
    /// <see cref="Problems"/>. The envelope is read last, so that it carries the raw values of every column.
    /// </summary>
    sealed class LenientReader(DbDataReader reader)
    {
        readonly Dictionary<string, string> _raw = new(StringComparer.Ordinal);

        public List<string> Problems { get; } = [];

        public T Read<T>(int ordinal, string column, Func<DbDataReader, int, T> read, T standIn)
        {
            try
            {
                return read(reader, ordinal);
            }
            catch (Exception exception) when (exception is not DbException)
            {
                _raw[InvalidRows.RawHeaderPrefix + column] = InvalidRows.RawText(reader, ordinal);
                Problems.Add($"{column}: {exception.GetType().Name}: {exception.Message}");
                return standIn;
            }
        }

        /// <summary>The eight envelope columns starting at <paramref name="first"/>, with the raw values of every column that failed.</summary>
        public Envelope ReadEnvelope(int first)
        {
            var headers = Read(first + 6, "headers", static (r, i) => StoredRows.ParseHeaders(r.IsDBNull(i) ? null : r.GetString(i)), Envelope.EmptyHeaders);
            var messageId = Read(first, "message_id", static (r, i) => r.GetGuid(i), Guid.NewGuid());
            var messageType = Read(first + 1, "message_type", static (r, i) => r.GetString(i), InvalidRows.UnknownType);
            var correlationId = Read(first + 2, "correlation_id", static (r, i) => r.IsDBNull(i) ? null : r.GetString(i), null);
            var causationId = Read(first + 3, "causation_id", static (r, i) => r.IsDBNull(i) ? null : r.GetGuid(i), (Guid?)null);
            var sentAt = Read(first + 4, "sent_at", static (r, i) => StoredRows.FromTicks(r.GetInt64(i)), DateTimeOffset.UnixEpoch);
            var asOf = Read(first + 5, "as_of", static (r, i) => r.IsDBNull(i) ? null : StoredRows.FromTicks(r.GetInt64(i)), (DateTimeOffset?)null);
            var body = Read(first + 7, "body", static (r, i) => r.IsDBNull(i) ? Array.Empty<byte>() : r.GetFieldValue<byte[]>(i), []);
            if (Problems.Count == 0)
            {
                // Every column reads on its own: what failed was reading them together, which should not happen; keep the
                // row out of the way all the same rather than let it fail every read.
                Problems.Add("the row could not be read as a whole, though each column reads on its own");
            }

            var kept = new Dictionary<string, string>(headers, StringComparer.Ordinal);
            foreach (var (key, value) in _raw)
            {
                kept[key] = value;
            }

            return new Envelope
            {
                MessageId = messageId,
                MessageType = messageType,
                CorrelationId = correlationId,
                CausationId = causationId,
                SentAt = sentAt,
                AsOf = asOf,
                Headers = kept,
                Body = body,
            };
        }
    }
}
