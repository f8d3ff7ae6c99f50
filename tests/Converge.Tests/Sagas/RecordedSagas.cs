using System.Text;
using System.Text.Json;
using Converge.Contracts;
using Converge.Sagas;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Testing;

namespace Converge.Tests.Sagas;

/// <summary>
/// Saga instances recorded from a real run, with their saga log and the messages still pending for them: enough to
/// put a fresh store where the recording process stood, and let today's definitions carry every instance on.
/// </summary>
public sealed class RecordedSagas
{
    public string Description { get; set; } = "";

    public List<RecordedSaga> Instances { get; set; } = [];

    static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static RecordedSagas Load(string path) =>
        JsonSerializer.Deserialize<RecordedSagas>(File.ReadAllText(path), Json) ?? throw new InvalidDataException($"{path} holds no recording.");

    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Json) + "\n");

    /// <summary>Writes every recorded instance, its log and its pending messages into <paramref name="store"/>, in one transaction.</summary>
    public async Task ImportAsync(IMessageStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        foreach (var recorded in Instances)
        {
            var instance = recorded.ToInstance();
            Assert.True(await transaction.Sagas().InsertSagaAsync(instance, CancellationToken.None), $"{recorded.TransactionId} already exists");
            while (instance.ConcurrencyVersion < recorded.ConcurrencyVersion)
            {
                Assert.True(await transaction.Sagas().UpdateSagaAsync(instance, instance.ConcurrencyVersion, CancellationToken.None));
            }

            await transaction.Sagas().AppendSagaLogAsync([.. recorded.Log.Select(e => new SagaLogEntry(recorded.TransactionId, e.At, e.Kind, e.Step, e.MessageId, e.MessageType, e.Detail))], CancellationToken.None);
            foreach (var message in recorded.Pending)
            {
                await transaction.EnqueueAsync(new OutgoingMessage(message.Queue, message.ToEnvelope(), message.DueAt, message.Priority), CancellationToken.None);
            }
        }

        await transaction.CommitAsync();
    }

    /// <summary>Records instance <paramref name="transactionId"/> of <paramref name="host"/> as it stands, with what is pending for it.</summary>
    public static async Task<RecordedSaga> RecordAsync(ConvergeTestHost host, string transactionId, string point)
    {
        ArgumentNullException.ThrowIfNull(host);
        var instance = await host.Store.SagaQueries().GetSagaAsync(transactionId, CancellationToken.None) ?? throw new InvalidOperationException($"No saga '{transactionId}'.");
        var recorded = new RecordedSaga
        {
            Point = point,
            TransactionId = instance.TransactionId,
            Definition = instance.Definition,
            Version = instance.Version,
            State = SagaStates.ToText(instance.State),
            StepIndex = instance.StepIndex,
            Awaiting = instance.Awaiting,
            StepAttempt = instance.StepAttempt,
            Steps = [.. instance.Steps],
            Data = JsonDocument.Parse(instance.Data).RootElement.Clone(),
            Failure = instance.Failure,
            ConcurrencyVersion = instance.ConcurrencyVersion,
            StartedAt = instance.StartedAt,
            UpdatedAt = instance.UpdatedAt,
            Log = [.. (await host.Store.SagaQueries().ReadSagaLogAsync(transactionId, CancellationToken.None)).Select(e => new RecordedLogEntry
            {
                At = e.At,
                Kind = e.Kind,
                Step = e.Step,
                MessageId = e.MessageId,
                MessageType = e.MessageType,
                Detail = e.Detail,
            })],
        };

        await using var connection = ((SqliteMessageStore)host.Store).OpenConnection();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT queue, priority, visible_at, lease_token, message_id, message_type, correlation_id, causation_id, sent_at, headers, body FROM converge_queue WHERE correlation_id = $tx ORDER BY id";
        command.Parameters.AddWithValue("$tx", transactionId);
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            if (!reader.IsDBNull(3))
            {
                throw new InvalidOperationException($"A message of '{transactionId}' is being handled; record when the host is idle.");
            }

            recorded.Pending.Add(new RecordedMessage
            {
                Queue = reader.GetString(0),
                Priority = reader.GetInt32(1),
                DueAt = new DateTimeOffset(reader.GetInt64(2), TimeSpan.Zero),
                MessageId = reader.GetGuid(4),
                MessageType = reader.GetString(5),
                CorrelationId = reader.IsDBNull(6) ? null : reader.GetString(6),
                CausationId = reader.IsDBNull(7) ? null : reader.GetGuid(7),
                SentAt = new DateTimeOffset(reader.GetInt64(8), TimeSpan.Zero),
                Headers = reader.IsDBNull(9) ? [] : JsonSerializer.Deserialize<Dictionary<string, string>>(reader.GetString(9)) ?? [],
                Body = JsonDocument.Parse((byte[])reader.GetValue(10)).RootElement.Clone(),
            });
        }

        return recorded;
    }
}

public sealed class RecordedSaga
{
    /// <summary>Where the recording process stood: after-start, mid-way, compensating, ...</summary>
    public string Point { get; set; } = "";
    public string TransactionId { get; set; } = "";
    public string Definition { get; set; } = "";
    public int Version { get; set; }
    public string State { get; set; } = "";
    public int StepIndex { get; set; }
    public Guid? Awaiting { get; set; }
    public int StepAttempt { get; set; }
    public List<string> Steps { get; set; } = [];
    public JsonElement Data { get; set; }
    public string? Failure { get; set; }
    public long ConcurrencyVersion { get; set; }
    public DateTimeOffset StartedAt { get; set; }
    public DateTimeOffset UpdatedAt { get; set; }
    public List<RecordedLogEntry> Log { get; set; } = [];
    public List<RecordedMessage> Pending { get; set; } = [];

    public SagaInstance ToInstance() => new()
    {
        TransactionId = TransactionId,
        Definition = Definition,
        Version = Version,
        State = SagaStates.Parse(State),
        StepIndex = StepIndex,
        Awaiting = Awaiting,
        StepAttempt = StepAttempt,
        Steps = Steps,
        Data = Encoding.UTF8.GetBytes(Data.GetRawText()),
        Failure = Failure,
        StartedAt = StartedAt,
        UpdatedAt = UpdatedAt,
    };
}

public sealed class RecordedLogEntry
{
    public DateTimeOffset At { get; set; }
    public string Kind { get; set; } = "";
    public string? Step { get; set; }
    public Guid? MessageId { get; set; }
    public string? MessageType { get; set; }
    public string? Detail { get; set; }
}

public sealed class RecordedMessage
{
    public string Queue { get; set; } = "";
    public int Priority { get; set; }
    public DateTimeOffset DueAt { get; set; }
    public Guid MessageId { get; set; }
    public string MessageType { get; set; } = "";
    public string? CorrelationId { get; set; }
    public Guid? CausationId { get; set; }
    public DateTimeOffset SentAt { get; set; }
    public Dictionary<string, string> Headers { get; set; } = [];
    public JsonElement Body { get; set; }

    public Envelope ToEnvelope() => new()
    {
        MessageId = MessageId,
        MessageType = MessageType,
        CorrelationId = CorrelationId,
        CausationId = CausationId,
        SentAt = SentAt,
        Headers = Headers,
        Body = Encoding.UTF8.GetBytes(Body.GetRawText()),
    };
}
