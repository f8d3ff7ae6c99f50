using System.Collections.Immutable;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Sagas;
using Converge.Storage;

namespace Converge.Testing.InMemory;

/// <summary>
/// One committed (or, inside a transaction, pending) version of everything the in-memory store holds. Immutable: a
/// write makes a new version that shares the untouched parts, so a transaction is a version nobody else sees until
/// commit publishes it, a savepoint is a remembered version, and a reader outside a transaction reads the last
/// committed version without a lock.
/// </summary>
internal sealed record InMemoryState
{
    public static InMemoryState Empty { get; } = new();

    // Queue: rows by queue name, then by id (the id order is the queue's insertion order).
    public ImmutableDictionary<string, ImmutableSortedDictionary<long, MemoryQueueRow>> Queues { get; init; } =
        ImmutableDictionary.Create<string, ImmutableSortedDictionary<long, MemoryQueueRow>>(StringComparer.Ordinal);

    public long LastQueueId { get; init; }

    public ImmutableDictionary<string, (double Tokens, long RefilledAt)> RateLimits { get; init; } =
        ImmutableDictionary.Create<string, (double, long)>(StringComparer.Ordinal);

    // Log: every event in position order (position = index + 1), and each stream's events in version order.
    public ImmutableList<LogEvent> Log { get; init; } = [];

    public ImmutableDictionary<string, ImmutableList<LogEvent>> Streams { get; init; } =
        ImmutableDictionary.Create<string, ImmutableList<LogEvent>>(StringComparer.Ordinal);

    public ImmutableDictionary<string, ConsumerGroupState> Groups { get; init; } =
        ImmutableDictionary.Create<string, ConsumerGroupState>(StringComparer.Ordinal);

    // Inbox and dead letters.
    public ImmutableDictionary<(string Consumer, Guid MessageId), MemoryInboxRow> Inbox { get; init; } =
        ImmutableDictionary<(string, Guid), MemoryInboxRow>.Empty;

    public ImmutableSortedDictionary<long, DeadLetter> DeadLetters { get; init; } = ImmutableSortedDictionary<long, DeadLetter>.Empty;

    public long LastDeadLetterId { get; init; }

    // The place in its ordering key each keyed dead letter had on its queue, by dead-letter id: a retry puts it back there.
    public ImmutableDictionary<long, long> DeadLetterPlaces { get; init; } = ImmutableDictionary<long, long>.Empty;

    // Sagas: instances (private copies) and each instance's log.
    public ImmutableDictionary<string, SagaInstance> Sagas { get; init; } =
        ImmutableDictionary.Create<string, SagaInstance>(StringComparer.Ordinal);

    public ImmutableDictionary<string, ImmutableList<SagaLogEntry>> SagaLog { get; init; } =
        ImmutableDictionary.Create<string, ImmutableList<SagaLogEntry>>(StringComparer.Ordinal);

    public long LastSagaLogId { get; init; }

    // Jobs.
    public ImmutableDictionary<string, (Guid JobId, DateTimeOffset ExpiresAt)> UniqueKeys { get; init; } =
        ImmutableDictionary.Create<string, (Guid, DateTimeOffset)>(StringComparer.Ordinal);

    public ImmutableHashSet<string> JobQueues { get; init; } = ImmutableHashSet.Create<string>(StringComparer.Ordinal);

    public ImmutableDictionary<string, JobBatchRecord> Batches { get; init; } =
        ImmutableDictionary.Create<string, JobBatchRecord>(StringComparer.Ordinal);

    public ImmutableDictionary<string, RecurringJobRecord> Recurring { get; init; } =
        ImmutableDictionary.Create<string, RecurringJobRecord>(StringComparer.Ordinal);

    public ImmutableDictionary<Guid, (int Percent, string? Note)> Progress { get; init; } = ImmutableDictionary<Guid, (int, string?)>.Empty;

    public ImmutableHashSet<Guid> Cancellations { get; init; } = [];

    // The operator log, by id.
    public ImmutableSortedDictionary<long, OperatorAction> OperatorLog { get; init; } = ImmutableSortedDictionary<long, OperatorAction>.Empty;

    public long LastOperatorActionId { get; init; }

    /// <summary>The rows of <paramref name="queue"/>, empty when it has none.</summary>
    public ImmutableSortedDictionary<long, MemoryQueueRow> RowsOf(string queue) =>
        Queues.TryGetValue(queue, out var rows) ? rows : ImmutableSortedDictionary<long, MemoryQueueRow>.Empty;

    /// <summary>This state with <paramref name="queue"/>'s rows replaced; a queue left empty disappears, as its table rows would.</summary>
    public InMemoryState WithRows(string queue, ImmutableSortedDictionary<long, MemoryQueueRow> rows) =>
        this with { Queues = rows.IsEmpty ? Queues.Remove(queue) : Queues.SetItem(queue, rows) };

    public IEnumerable<MemoryQueueRow> AllRows => Queues.Values.SelectMany(static rows => rows.Values);

    /// <summary>
    /// The rows of <paramref name="queue"/> that may be claimed, visibility aside: every unkeyed row, and of each ordering
    /// key only its oldest row (by place, then id), unless a dead letter of the queue holds the key. One pass over the
    /// rows and one over the dead letters, whatever the number of keys.
    /// </summary>
    public IEnumerable<MemoryQueueRow> ClaimableRows(string queue)
    {
        var rows = RowsOf(queue).Values;
        var heads = new Dictionary<string, MemoryQueueRow>(StringComparer.Ordinal);
        foreach (var row in rows)
        {
            if (row.OrderingKey is { } key
                && (!heads.TryGetValue(key, out var head) || row.OrderingSeq < head.OrderingSeq || (row.OrderingSeq == head.OrderingSeq && row.Id < head.Id)))
            {
                heads[key] = row;
            }
        }

        if (heads.Count > 0)
        {
            foreach (var letter in DeadLetters.Values)
            {
                if (letter.LogPosition is null && letter.Source == queue && letter.OrderingKey is { } held)
                {
                    heads.Remove(held);
                }
            }
        }

        return rows.Where(row => row.OrderingKey is not { } key || (heads.TryGetValue(key, out var head) && head.Id == row.Id));
    }

    /// <summary>The next place in ordering key <paramref name="key"/> of <paramref name="queue"/>, after its rows and its dead letters.</summary>
    public long NextPlace(string queue, string key)
    {
        var rows = RowsOf(queue).Values.Where(row => row.OrderingKey == key).Select(static row => row.OrderingSeq);
        var letters = DeadLetters.Values.Where(letter => letter.LogPosition is null && letter.Source == queue && letter.OrderingKey == key)
            .Select(letter => DeadLetterPlaces.TryGetValue(letter.Id, out var place) ? place : 0);
        return rows.Concat(letters).DefaultIfEmpty(0).Max() + 1;
    }
}

/// <summary>
/// One queue entry. <see cref="VisibleAt"/> doubles as the lease's end, as in the SQL stores: a leased row whose
/// lease ran out is visible again, and claiming it gives it a new token.
/// </summary>
/// A keyed row keeps its <see cref="OrderingKey"/> and its place in it, <see cref="OrderingSeq"/>.
internal sealed record MemoryQueueRow(long Id, string Queue, int Priority, DateTimeOffset VisibleAt, int Attempts, Guid? LeaseToken, ImmutableList<AttemptRecord> History, Envelope Envelope, string? OrderingKey = null, long OrderingSeq = 0)
{
    public QueuedMessage ToMessage() => new()
    {
        Id = Id,
        Queue = Queue,
        Envelope = Envelope,
        Attempt = Attempts,
        Priority = Priority,
        LeaseToken = LeaseToken ?? Guid.Empty,
        History = History,
    };
}

/// <summary>An inbox record: what the flow view and job listings read back of a handled message.</summary>
internal sealed record MemoryInboxRow(string Consumer, Guid MessageId, DateTimeOffset HandledAt, string MessageType, string? CorrelationId, Guid? CausationId, DateTimeOffset SentAt, string? BatchId);
