using Converge.Contracts;
using Converge.Jobs;
using Converge.Sagas;
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
        .With("updated_at", instance.UpdatedAt.UtcTicks)
        .With("failed_step", NpgsqlDbType.Text, instance.FailedStep)
        .With("last_error", NpgsqlDbType.Text, instance.LastError)
        .With("stuck_reason", NpgsqlDbType.Text, instance.StuckReason)
        .With("timeout_id", NpgsqlDbType.Uuid, instance.TimeoutId)
        .With("timeout_at", NpgsqlDbType.Bigint, instance.TimeoutAt?.UtcTicks)
        .With("queue", NpgsqlDbType.Text, instance.Queue);

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

    public static NpgsqlCommand WithRecurring(this NpgsqlCommand command, RecurringJobRecord schedule) => command
        .With("name", schedule.Name)
        .With("cron", schedule.Cron)
        .With("time_zone", schedule.TimeZone)
        .With("queue", schedule.Queue)
        .With("message_type", schedule.MessageType)
        .With("body", ToArray(schedule.Body))
        .With("priority", schedule.Priority)
        .With("misfire", JobRows.MisfireText(schedule.Misfire))
        .With("next_at", schedule.NextAt.UtcTicks)
        .With("last_at", NpgsqlDbType.Bigint, schedule.LastAt?.UtcTicks);

    public static byte[] ToArray(ReadOnlyMemory<byte> body) =>
        System.Runtime.InteropServices.MemoryMarshal.TryGetArray(body, out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
            ? segment.Array
            : body.ToArray();
}
