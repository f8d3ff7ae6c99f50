using System.Runtime.CompilerServices;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.Data.Sqlite;

namespace Converge.Sqlite;

/// <summary>Prepared commands of one connection, reused across calls (statement preparation dominates small writes).</summary>
internal sealed class CommandCache
{
    static readonly ConditionalWeakTable<SqliteConnection, CommandCache> ForeignConnections = new();
    /// <summary>Application statements kept prepared per connection; more are prepared again when next used.</summary>
    internal const int ApplicationStatements = 128;

    // Converge's own statements: a fixed set of strings, so the reference is the key.
    readonly Dictionary<string, SqliteCommand> _commands = new(ReferenceEqualityComparer.Instance);
    readonly Dictionary<string, SqliteCommand> _application = new(StringComparer.Ordinal);
    readonly Queue<string> _applicationOrder = new();
    readonly SqliteConnection _connection;

    public CommandCache(SqliteConnection connection) => _connection = connection;

    /// <summary>The cache of a connection Converge does not own (an enlisted outbox transaction).</summary>
    public static CommandCache For(SqliteConnection connection) => ForeignConnections.GetValue(connection, static c => new CommandCache(c));

    public SqliteCommand Get(string sql, SqliteTransaction? transaction)
    {
        if (!_commands.TryGetValue(sql, out var command))
        {
            command = _connection.CreateCommand();
            command.CommandText = sql;
            _commands[sql] = command;
        }

        command.Transaction = transaction;
        return command;
    }

    /// <summary>
    /// A command for SQL the application wrote (a handler's or a projection's statement): keyed by its text, not by
    /// reference, since an application may build the same text anew for every call, and bounded, since it may also
    /// put values in the text. Each prepared statement holds native memory until disposed.
    /// </summary>
    public SqliteCommand GetApplication(string sql, SqliteTransaction? transaction)
    {
        if (!_application.TryGetValue(sql, out var command))
        {
            if (_application.Count >= ApplicationStatements)
            {
                // The oldest prepared goes: statements in steady use are prepared again at most once per round.
                var oldest = _applicationOrder.Dequeue();
                _application.Remove(oldest, out var evicted);
                evicted!.Dispose();
            }

            command = _connection.CreateCommand();
            command.CommandText = sql;
            _application[sql] = command;
            _applicationOrder.Enqueue(sql);
        }

        command.Transaction = transaction;
        return command;
    }

    public void Dispose()
    {
        foreach (var command in _commands.Values.Concat(_application.Values))
        {
            command.Dispose();
        }

        _commands.Clear();
        _application.Clear();
        _applicationOrder.Clear();
    }
}

/// <summary>A connection Converge owns, with its prepared commands.</summary>
internal sealed class SqliteSession : IDisposable
{
    public SqliteSession(SqliteConnection connection)
    {
        Connection = connection;
        Commands = new CommandCache(connection);
    }

    public SqliteConnection Connection { get; }

    public CommandCache Commands { get; }

    /// <summary>Set when the connection may be in an unknown state; it is then closed instead of reused.</summary>
    public bool Broken { get; set; }

    public void Dispose()
    {
        Commands.Dispose();
        Connection.Dispose();
    }
}

/// <summary>Maps envelopes to parameters and rows back to envelopes.</summary>
internal static class SqliteMapping
{
    public static SqliteCommand With(this SqliteCommand command, string name, object? value)
    {
        var parameters = command.Parameters;
        var index = parameters.IndexOf(name);
        if (index < 0)
        {
            parameters.AddWithValue(name, value ?? DBNull.Value);
        }
        else
        {
            parameters[index].Value = value ?? DBNull.Value;
        }

        return command;
    }

    public static SqliteCommand WithEnvelope(this SqliteCommand command, Envelope envelope) => command
        .With("$message_id", envelope.MessageId)
        .With("$message_type", envelope.MessageType)
        .With("$correlation_id", envelope.CorrelationId)
        .With("$causation_id", envelope.CausationId)
        .With("$sent_at", envelope.SentAt.UtcTicks)
        .With("$as_of", envelope.AsOf?.UtcTicks)
        .With("$headers", StoredRows.WriteHeaders(envelope.Headers))
        .With("$body", ToArray(envelope.Body));

    /// <summary>Executes <paramref name="command"/> and maps every row.</summary>
    public static List<T> ReadAll<T>(this SqliteCommand command, Func<SqliteDataReader, T> map)
    {
        var rows = new List<T>();
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            rows.Add(map(reader));
        }

        return rows;
    }

    /// <summary>Executes <paramref name="command"/> and maps its first row; <c>null</c> when there is none.</summary>
    public static T? ReadFirst<T>(this SqliteCommand command, Func<SqliteDataReader, T> map) where T : class
    {
        using var reader = command.ExecuteReader();
        return reader.Read() ? map(reader) : null;
    }

    public static SqliteCommand WithSaga(this SqliteCommand command, SagaInstance instance) => command
        .With("$transaction_id", instance.TransactionId)
        .With("$state", SagaStates.ToText(instance.State))
        .With("$step_index", instance.StepIndex)
        .With("$awaiting", instance.Awaiting)
        .With("$step_attempt", instance.StepAttempt)
        .With("$data", ToArray(instance.Data))
        .With("$failure", instance.Failure)
        .With("$concurrency_version", instance.ConcurrencyVersion)
        .With("$updated_at", instance.UpdatedAt.UtcTicks)
        .With("$failed_step", instance.FailedStep)
        .With("$last_error", instance.LastError)
        .With("$stuck_reason", instance.StuckReason)
        .With("$timeout_id", instance.TimeoutId)
        .With("$timeout_at", instance.TimeoutAt?.UtcTicks)
        .With("$queue", instance.Queue);

    public static string WriteSteps(IReadOnlyList<string> steps) => SagaRows.WriteSteps(steps);

    public static string? WriteHistory(IReadOnlyList<AttemptRecord> history, AttemptRecord? next) => StoredRows.WriteHistory(history, next);

    public static DateTimeOffset FromTicks(long ticks) => StoredRows.FromTicks(ticks);

    static readonly string[] CallbackSuffixes = ["queue", "priority", "message_id", "message_type", "correlation_id", "causation_id", "sent_at", "as_of", "headers", "body"];
    static readonly string[] OnSuccessNames = [.. CallbackSuffixes.Select(c => "$on_success_" + c)];
    static readonly string[] OnCompleteNames = [.. CallbackSuffixes.Select(c => "$on_complete_" + c)];

    /// <summary>Binds a batch: its id, description, creation time and both callbacks (absent ones as nulls).</summary>
    public static SqliteCommand WithBatch(this SqliteCommand command, JobBatchRecord batch) => command
        .With("$id", batch.Id)
        .With("$description", batch.Description)
        .With("$created_at", batch.CreatedAt.UtcTicks)
        .WithCallback(OnSuccessNames, batch.OnSuccess)
        .WithCallback(OnCompleteNames, batch.OnComplete);

    static SqliteCommand WithCallback(this SqliteCommand command, string[] names, OutgoingMessage? message)
    {
        var envelope = message?.Envelope;
        return command
            .With(names[0], message?.Queue)
            .With(names[1], message?.Priority)
            .With(names[2], envelope?.MessageId)
            .With(names[3], envelope?.MessageType)
            .With(names[4], envelope?.CorrelationId)
            .With(names[5], envelope?.CausationId)
            .With(names[6], envelope?.SentAt.UtcTicks)
            .With(names[7], envelope?.AsOf?.UtcTicks)
            .With(names[8], envelope is null ? null : StoredRows.WriteHeaders(envelope.Headers))
            .With(names[9], envelope is null ? null : ToArray(envelope.Body));
    }

    public static SqliteCommand WithRecurring(this SqliteCommand command, RecurringJobRecord schedule) => command
        .With("$name", schedule.Name)
        .With("$cron", schedule.Cron)
        .With("$time_zone", schedule.TimeZone)
        .With("$queue", schedule.Queue)
        .With("$message_type", schedule.MessageType)
        .With("$body", ToArray(schedule.Body))
        .With("$priority", schedule.Priority)
        .With("$misfire", JobRows.MisfireText(schedule.Misfire))
        .With("$next_at", schedule.NextAt.UtcTicks)
        .With("$last_at", schedule.LastAt?.UtcTicks);

    static byte[] ToArray(ReadOnlyMemory<byte> body) =>
        System.Runtime.InteropServices.MemoryMarshal.TryGetArray(body, out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
            ? segment.Array
            : body.ToArray();
}
