using System.Data.Common;
using System.Text.Json;
using Converge.Storage;

namespace Converge.Sagas;

/// <summary>
/// Turns saga rows into records for every store that offers saga storage (<see cref="ISagaTransaction"/>): the
/// stores' saga tables have the same columns in the same order.
/// </summary>
public static class SagaRows
{
    static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

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
        Steps = ParseSteps(reader.GetString(7)),
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

    /// <summary>A saga's step list as stored (a JSON array of step names).</summary>
    public static string WriteSteps(IReadOnlyList<string> steps) => JsonSerializer.Serialize(steps, Json);

    static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string[]> StepLists = new(StringComparer.Ordinal);

    /// <summary>Step lists repeat across every instance of a definition version: parse each distinct one once.</summary>
    public static string[] ParseSteps(string json) =>
        StepLists.Count < 1024
            ? StepLists.GetOrAdd(json, static text => JsonSerializer.Deserialize<string[]>(text, Json) ?? [])
            : JsonSerializer.Deserialize<string[]>(json, Json) ?? [];
}
