using Converge.Contracts;
using Converge.Storage;
using Npgsql;
using NpgsqlTypes;

namespace Converge.PostgreSql;

/// <summary>Maps envelopes and records to parameters, and rows back.</summary>
internal static class PostgreSqlMapping
{
    public static NpgsqlCommand With(this NpgsqlCommand command, string name, object? value)
    {
        command.Parameters.AddWithValue(name, value ?? DBNull.Value);
        return command;
    }

    /// <summary>Binds a value whose type PostgreSQL cannot infer when it is null.</summary>
    public static NpgsqlCommand With(this NpgsqlCommand command, string name, NpgsqlDbType type, object? value)
    {
        command.Parameters.Add(new NpgsqlParameter(name, type) { Value = value ?? DBNull.Value });
        return command;
    }

    public static NpgsqlCommand WithEnvelope(this NpgsqlCommand command, Envelope envelope) => command
        .With("message_id", envelope.MessageId)
        .With("message_type", envelope.MessageType)
        .With("correlation_id", NpgsqlDbType.Text, envelope.CorrelationId)
        .With("causation_id", NpgsqlDbType.Uuid, envelope.CausationId)
        .With("sent_at", envelope.SentAt.UtcTicks)
        .With("as_of", NpgsqlDbType.Bigint, envelope.AsOf?.UtcTicks)
        .With("headers", NpgsqlDbType.Text, StoredRows.WriteHeaders(envelope.Headers))
        .With("body", ToArray(envelope.Body));

    /// <summary>Binds the columns that several statements take as arrays: ids, types, correlation, causation, send times.</summary>
    public static NpgsqlCommand WithEnvelopes(this NpgsqlCommand command, Envelope[] envelopes) => command
        .With("message_ids", NpgsqlDbType.Array | NpgsqlDbType.Uuid, envelopes.Select(e => e.MessageId).ToArray())
        .With("message_types", NpgsqlDbType.Array | NpgsqlDbType.Text, envelopes.Select(e => e.MessageType).ToArray())
        .With("correlation_ids", NpgsqlDbType.Array | NpgsqlDbType.Text, envelopes.Select(e => e.CorrelationId).ToArray())
        .With("causation_ids", NpgsqlDbType.Array | NpgsqlDbType.Uuid, envelopes.Select(e => e.CausationId).ToArray())
        .With("sent_ats", NpgsqlDbType.Array | NpgsqlDbType.Bigint, envelopes.Select(e => e.SentAt.UtcTicks).ToArray());

    /// <summary>Reads the eight envelope columns starting at <paramref name="first"/>.</summary>
    public static Envelope ReadEnvelope(NpgsqlDataReader reader, int first) => new()
    {
        MessageId = reader.GetGuid(first),
        MessageType = reader.GetString(first + 1),
        CorrelationId = reader.IsDBNull(first + 2) ? null : reader.GetString(first + 2),
        CausationId = reader.IsDBNull(first + 3) ? null : reader.GetGuid(first + 3),
        SentAt = FromTicks(reader.GetInt64(first + 4)),
        AsOf = reader.IsDBNull(first + 5) ? null : FromTicks(reader.GetInt64(first + 5)),
        Headers = StoredRows.ParseHeaders(reader.IsDBNull(first + 6) ? null : reader.GetString(first + 6)),
        Body = reader.IsDBNull(first + 7) ? Array.Empty<byte>() : reader.GetFieldValue<byte[]>(first + 7),
    };

    public static async Task<List<T>> ReadAllAsync<T>(this NpgsqlCommand command, Func<NpgsqlDataReader, T> map, CancellationToken cancellationToken)
    {
        var rows = new List<T>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            rows.Add(map(reader));
        }

        return rows;
    }

    public static async Task<T?> ReadFirstAsync<T>(this NpgsqlCommand command, Func<NpgsqlDataReader, T> map, CancellationToken cancellationToken) where T : class
    {
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? map(reader) : null;
    }

    public static NpgsqlCommand WithSaga(this NpgsqlCommand command, SagaInstance instance) => command
        .With("transaction_id", instance.TransactionId)
        .With("state", SagaStates.ToText(instance.State))
        .With("step_index", instance.StepIndex)
        .With("awaiting", NpgsqlDbType.Uuid, instance.Awaiting)
        .With("step_attempt", instance.StepAttempt)
        .With("data", ToArray(instance.Data))
        .With("failure", NpgsqlDbType.Text, instance.Failure)
        .With("concurrency_version", instance.ConcurrencyVersion)
        .With("updated_at", instance.UpdatedAt.UtcTicks);

    /// <summary>Reads the thirteen saga columns in schema order.</summary>
    public static SagaInstance ReadSaga(NpgsqlDataReader reader) => new()
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
        StartedAt = FromTicks(reader.GetInt64(11)),
        UpdatedAt = FromTicks(reader.GetInt64(12)),
    };

    /// <summary>Reads a saga log entry: id, transaction_id, at, kind, step, message_id, message_type, detail, answers.</summary>
    public static SagaLogEntry ReadSagaLogEntry(NpgsqlDataReader reader) => new(
        reader.GetString(1),
        FromTicks(reader.GetInt64(2)),
        reader.GetString(3),
        reader.IsDBNull(4) ? null : reader.GetString(4),
        reader.IsDBNull(5) ? null : reader.GetGuid(5),
        reader.IsDBNull(6) ? null : reader.GetString(6),
        reader.IsDBNull(7) ? null : reader.GetString(7))
    { Id = reader.GetInt64(0), Answers = reader.IsDBNull(8) ? null : reader.GetGuid(8) };

    public static IReadOnlyList<AttemptRecord> ReadHistory(NpgsqlDataReader reader, int ordinal) =>
        StoredRows.ParseHistory(reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal));

    /// <summary>Reads a queue row as a job sees it: id, queue, priority, visible_at, attempts, lease_token, history, then the envelope.</summary>
    public static QueueRow ReadQueueRow(NpgsqlDataReader reader) => new(
        reader.GetInt64(0),
        reader.GetString(1),
        reader.GetInt32(2),
        reader.GetInt64(3),
        reader.GetInt32(4),
        !reader.IsDBNull(5),
        reader.IsDBNull(6) ? null : reader.GetString(6),
        ReadEnvelope(reader, 7));

    /// <summary>Reads a dead letter: id, source, priority, reason, exception, attempts, history, dead_lettered_at, log_position, then the envelope.</summary>
    public static DeadLetter ReadDeadLetter(NpgsqlDataReader reader) => new()
    {
        Id = reader.GetInt64(0),
        Source = reader.GetString(1),
        Priority = reader.GetInt32(2),
        Reason = reader.GetString(3),
        Exception = reader.IsDBNull(4) ? null : reader.GetString(4),
        Attempts = reader.GetInt32(5),
        History = ReadHistory(reader, 6),
        DeadLetteredAt = FromTicks(reader.GetInt64(7)),
        LogPosition = reader.IsDBNull(8) ? null : reader.GetInt64(8),
        Envelope = ReadEnvelope(reader, 9),
    };

    public static LogEvent ReadEvent(NpgsqlDataReader reader) =>
        new(reader.GetInt64(0), reader.GetString(1), reader.GetInt64(2), ReadEnvelope(reader, 3));

    public static DateTimeOffset FromTicks(long ticks) => StoredRows.FromTicks(ticks);

    static readonly string[] CallbackSuffixes = ["queue", "priority", "message_id", "message_type", "correlation_id", "causation_id", "sent_at", "as_of", "headers", "body"];
    static readonly string[] OnSuccessNames = [.. CallbackSuffixes.Select(c => "on_success_" + c)];
    static readonly string[] OnCompleteNames = [.. CallbackSuffixes.Select(c => "on_complete_" + c)];

    /// <summary>Binds a batch: its id, description, creation time and both callbacks (absent ones as nulls).</summary>
    public static NpgsqlCommand WithBatch(this NpgsqlCommand command, JobBatchRecord batch) => command
        .With("id", batch.Id)
        .With("description", NpgsqlDbType.Text, batch.Description)
        .With("created_at", batch.CreatedAt.UtcTicks)
        .WithCallback(OnSuccessNames, batch.OnSuccess)
        .WithCallback(OnCompleteNames, batch.OnComplete);

    static NpgsqlCommand WithCallback(this NpgsqlCommand command, string[] names, OutgoingMessage? message)
    {
        var envelope = message?.Envelope;
        return command
            .With(names[0], NpgsqlDbType.Text, message?.Queue)
            .With(names[1], NpgsqlDbType.Integer, message?.Priority)
            .With(names[2], NpgsqlDbType.Uuid, envelope?.MessageId)
            .With(names[3], NpgsqlDbType.Text, envelope?.MessageType)
            .With(names[4], NpgsqlDbType.Text, envelope?.CorrelationId)
            .With(names[5], NpgsqlDbType.Uuid, envelope?.CausationId)
            .With(names[6], NpgsqlDbType.Bigint, envelope?.SentAt.UtcTicks)
            .With(names[7], NpgsqlDbType.Bigint, envelope?.AsOf?.UtcTicks)
            .With(names[8], NpgsqlDbType.Text, envelope is null ? null : StoredRows.WriteHeaders(envelope.Headers))
            .With(names[9], NpgsqlDbType.Bytea, envelope is null ? null : ToArray(envelope.Body));
    }

    /// <summary>Reads a batch row: its nine own columns, then ten columns of each callback.</summary>
    public static JobBatchRecord ReadBatch(NpgsqlDataReader reader) => new()
    {
        Id = reader.GetString(0),
        Description = reader.IsDBNull(1) ? null : reader.GetString(1),
        Total = reader.GetInt64(2),
        Pending = reader.GetInt64(3),
        Succeeded = reader.GetInt64(4),
        Failed = reader.GetInt64(5),
        Sealed = reader.GetBoolean(6),
        CreatedAt = FromTicks(reader.GetInt64(7)),
        FinishedAt = reader.IsDBNull(8) ? null : FromTicks(reader.GetInt64(8)),
        OnSuccess = ReadCallback(reader, 9),
        OnComplete = ReadCallback(reader, 19),
    };

    static OutgoingMessage? ReadCallback(NpgsqlDataReader reader, int first) =>
        reader.IsDBNull(first) ? null : new OutgoingMessage(reader.GetString(first), ReadEnvelope(reader, first + 2), Priority: reader.GetInt32(first + 1));

    public static NpgsqlCommand WithRecurring(this NpgsqlCommand command, RecurringJobRecord schedule) => command
        .With("name", schedule.Name)
        .With("cron", schedule.Cron)
        .With("time_zone", schedule.TimeZone)
        .With("queue", schedule.Queue)
        .With("message_type", schedule.MessageType)
        .With("body", ToArray(schedule.Body))
        .With("priority", schedule.Priority)
        .With("misfire", StoredRows.MisfireText(schedule.Misfire))
        .With("next_at", schedule.NextAt.UtcTicks)
        .With("last_at", NpgsqlDbType.Bigint, schedule.LastAt?.UtcTicks);

    /// <summary>Reads a recurring schedule: name, cron, time_zone, queue, message_type, body, priority, misfire, next_at, last_at.</summary>
    public static RecurringJobRecord ReadRecurring(NpgsqlDataReader reader) => new()
    {
        Name = reader.GetString(0),
        Cron = reader.GetString(1),
        TimeZone = reader.GetString(2),
        Queue = reader.GetString(3),
        MessageType = reader.GetString(4),
        Body = reader.GetFieldValue<byte[]>(5),
        Priority = reader.GetInt32(6),
        Misfire = StoredRows.ParseMisfire(reader.GetString(7)),
        NextAt = FromTicks(reader.GetInt64(8)),
        LastAt = reader.IsDBNull(9) ? null : FromTicks(reader.GetInt64(9)),
    };

    public static byte[] ToArray(ReadOnlyMemory<byte> body) =>
        System.Runtime.InteropServices.MemoryMarshal.TryGetArray(body, out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
            ? segment.Array
            : body.ToArray();
}
