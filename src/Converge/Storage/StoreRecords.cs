using Converge.Contracts;

namespace Converge.Storage;

/// <summary>A message to put on a queue.</summary>
/// <param name="Queue">The destination queue.</param>
/// <param name="Envelope">The message.</param>
/// <param name="DueAt">When it becomes visible to consumers; <c>null</c> for now.</param>
/// <param name="Priority">Higher is claimed first; default 0.</param>
public sealed record OutgoingMessage(string Queue, Envelope Envelope, DateTimeOffset? DueAt = null, int Priority = 0)
{
    /// <summary>
    /// Delivery attempts already made (default 0, a new message): a message put back on a queue as the continuation of
    /// earlier deliveries keeps its count, and its next claim is attempt <see cref="Attempts"/> + 1. A transport that
    /// delivers messages from a broker hands one back to the store this way (a retry with backoff, a graceful release).
    /// </summary>
    public int Attempts { get; init; }

    /// <summary>The failures of those earlier attempts, oldest first; empty (default) for a new message.</summary>
    public IReadOnlyList<AttemptRecord> History { get; init; } = [];

    /// <summary>Whether this continues earlier deliveries (<see cref="Attempts"/> or <see cref="History"/> set).</summary>
    public bool IsContinuation => Attempts != 0 || History.Count != 0;

    /// <summary>
    /// The ordering key (see <see cref="Runtime.SendOptions.OrderingKey"/>); default <c>null</c>, unordered. A store
    /// keeps the key on the queue row: a keyed row is claimable only while it is the oldest row of its queue and key
    /// and no dead letter of that queue and key exists, so messages of one key are handled one at a time, in the
    /// order they were enqueued, and a dead-lettered one holds the rest until it is retried or discarded.
    /// </summary>
    public string? OrderingKey { get; init; }
}

/// <summary>
/// A dead letter to record that is not a leased row of the store's own queue: a message a transport received from a
/// broker or that the broker dead-lettered itself, or a log event a consumer group parked.
/// </summary>
/// <param name="Source">The queue it came from (where a retry puts it back), or <c>log:GROUP</c> for a parked event.</param>
/// <param name="Envelope">The message as it was received.</param>
/// <param name="Reason">One of <see cref="DeadLetterReasons"/>, or a transport's own reason.</param>
public sealed record DeadLetterRecord(string Source, Envelope Envelope, string Reason)
{
    /// <summary>The last exception, with its stack trace, when one was thrown.</summary>
    public string? Exception { get; init; }

    /// <summary>How many delivery attempts were made.</summary>
    public int Attempts { get; init; }

    /// <summary>Failed attempts, oldest first.</summary>
    public IReadOnlyList<AttemptRecord> History { get; init; } = [];

    /// <summary>The priority it had on its queue; 0 for a parked event.</summary>
    public int Priority { get; init; }

    /// <summary>For a parked event, its log position.</summary>
    public long? LogPosition { get; init; }
}

/// <summary>One failed attempt at handling a message.</summary>
/// <param name="Attempt">The 1-based attempt number.</param>
/// <param name="At">When the attempt failed.</param>
/// <param name="Error">The exception type and message.</param>
public sealed record AttemptRecord(int Attempt, DateTimeOffset At, string Error);

/// <summary>A message claimed from a queue under a lease.</summary>
public sealed class QueuedMessage
{
    /// <summary>The store's id of this queue entry (not the message id).</summary>
    public required long Id { get; init; }

    /// <summary>The queue it was claimed from.</summary>
    public required string Queue { get; init; }

    /// <summary>The message.</summary>
    public required Envelope Envelope { get; init; }

    /// <summary>The 1-based number of this delivery attempt.</summary>
    public required int Attempt { get; init; }

    /// <summary>Priority it was enqueued with.</summary>
    public int Priority { get; init; }

    /// <summary>Proves ownership of the lease: completing, retrying or dead-lettering with a stale token does nothing.</summary>
    public required Guid LeaseToken { get; init; }

    /// <summary>Earlier failed attempts, oldest first.</summary>
    public IReadOnlyList<AttemptRecord> History { get; init; } = [];
}

/// <summary>An event in the log.</summary>
/// <param name="Position">Global position, strictly increasing in commit order.</param>
/// <param name="Stream">The stream (aggregate or entity) it belongs to.</param>
/// <param name="StreamVersion">1-based version within the stream.</param>
/// <param name="Envelope">The event.</param>
public sealed record LogEvent(long Position, string Stream, long StreamVersion, Envelope Envelope);

/// <summary>The durable state of a consumer group.</summary>
/// <param name="Name">The group name.</param>
/// <param name="Position">Position of the last event the group finished with; 0 before the first.</param>
/// <param name="FailedAttempts">Consecutive failures at the next event; 0 when healthy.</param>
/// <param name="LastError">The last failure at the next event, if any.</param>
/// <param name="UpdatedAt">When the checkpoint last changed.</param>
/// <param name="Paused">Whether the group is paused (<c>converge groups pause</c>): its runners start no batch until it is resumed.</param>
public sealed record ConsumerGroupState(string Name, long Position, int FailedAttempts, string? LastError, DateTimeOffset UpdatedAt, bool Paused = false);

/// <summary>Why a message was dead-lettered. Stable strings: tools and queries depend on them.</summary>
public static class DeadLetterReasons
{
    /// <summary>The message type name is not registered in this process.</summary>
    public const string UnknownType = "unknown-type";

    /// <summary>The body could not be deserialized as the registered type.</summary>
    public const string DeserializationFailed = "deserialization-failed";

    /// <summary>The body exceeds the configured maximum message size.</summary>
    public const string TooLarge = "too-large";

    /// <summary>No handler for the type is registered on the queue.</summary>
    public const string NoHandler = "no-handler";

    /// <summary>The handler failed with an error classified as permanent.</summary>
    public const string PermanentFailure = "permanent-failure";

    /// <summary>The handler kept failing until the maximum attempt count.</summary>
    public const string MaxAttemptsExceeded = "max-attempts-exceeded";

    /// <summary>A log event that a consumer group could not handle, parked so the group could move on.</summary>
    public const string PoisonEvent = "poison-event";

    /// <summary>A job cancelled before it finished.</summary>
    public const string Cancelled = "cancelled";

    /// <summary>
    /// The queue row could not be decoded (a column holds what Converge never writes there, for example headers that
    /// are not a JSON object of strings or a time outside .NET's range). The dead letter keeps what could be read,
    /// stand-ins for the rest, each unreadable column's raw value in a <c>converge-raw-COLUMN</c> header, and the
    /// decode errors as its exception.
    /// </summary>
    public const string InvalidRow = "invalid-row";
}

/// <summary>A message that will not be handled without intervention.</summary>
public sealed class DeadLetter
{
    /// <summary>The store's id of this dead letter.</summary>
    public required long Id { get; init; }

    /// <summary>The queue the message came from, or <c>log:GROUP</c> for a parked event.</summary>
    public required string Source { get; init; }

    /// <summary>The message as it was received.</summary>
    public required Envelope Envelope { get; init; }

    /// <summary>One of <see cref="DeadLetterReasons"/>.</summary>
    public required string Reason { get; init; }

    /// <summary>The last exception, with its stack trace, when one was thrown.</summary>
    public string? Exception { get; init; }

    /// <summary>How many delivery attempts were made.</summary>
    public int Attempts { get; init; }

    /// <summary>Failed attempts, oldest first.</summary>
    public IReadOnlyList<AttemptRecord> History { get; init; } = [];

    /// <summary>When it was dead-lettered.</summary>
    public required DateTimeOffset DeadLetteredAt { get; init; }

    /// <summary>The priority it had on its queue.</summary>
    public int Priority { get; init; }

    /// <summary>For a parked event, its log position.</summary>
    public long? LogPosition { get; init; }

    /// <summary>
    /// The ordering key the message was sent with; <c>null</c> when none. While a dead letter of a key exists, later
    /// messages of that key on its queue wait; retrying it puts it back ahead of them, in its original place.
    /// </summary>
    public string? OrderingKey { get; init; }
}

/// <summary>Depth of one queue.</summary>
/// <param name="Queue">Queue name.</param>
/// <param name="Ready">Visible now and not leased.</param>
/// <param name="Scheduled">Due later (delayed or waiting to retry).</param>
/// <param name="InFlight">Leased by a consumer and not yet expired.</param>
/// <param name="DeadLetters">Dead letters that came from this queue.</param>
public sealed record QueueStatus(string Queue, long Ready, long Scheduled, long InFlight, long DeadLetters)
{
    /// <summary>
    /// Rows no consumer will ever claim because their visible-at time is not one Converge writes: more than 100 years
    /// ahead, or (on SQLite) not a number. Not counted in <see cref="Scheduled"/>. Written by something other than
    /// Converge; inspect them with SQL, then fix or delete them.
    /// </summary>
    public long Stranded { get; init; }

    /// <summary>
    /// When the longest-waiting ready message became visible (was sent, or came due after a delay or a retry's
    /// backoff); the time since is the age of the oldest ready message. <c>null</c> when none is ready. Messages a
    /// transport holds at its broker are not included: only the store's rows are.
    /// </summary>
    public DateTimeOffset? OldestReadyAt { get; init; }
}

/// <summary>Lag of one consumer group.</summary>
/// <param name="Group">Group name.</param>
/// <param name="Position">Its checkpoint.</param>
/// <param name="Lag">Events between its checkpoint and the head of the log.</param>
/// <param name="FailedAttempts">Consecutive failures at the next event (a stalled group shows them here).</param>
/// <param name="LastError">Last failure, if any.</param>
/// <param name="Paused">Whether the group is paused.</param>
public sealed record ConsumerGroupStatus(string Group, long Position, long Lag, int FailedAttempts, string? LastError, bool Paused = false);

/// <summary>A snapshot of a store, as <c>converge status</c> shows it.</summary>
/// <param name="Queues">Every queue that holds messages or dead letters.</param>
/// <param name="DeadLetters">All dead letters.</param>
/// <param name="LogPosition">The head of the log (0 when empty).</param>
/// <param name="ConsumerGroups">Every consumer group with a checkpoint.</param>
/// <param name="InboxRecords">Inbox records retained.</param>
public sealed record StoreStatus(
    IReadOnlyList<QueueStatus> Queues,
    long DeadLetters,
    long LogPosition,
    IReadOnlyList<ConsumerGroupStatus> ConsumerGroups,
    long InboxRecords)
{
    /// <summary>Ordering keys held by their dead letters, by queue then key; empty when none.</summary>
    public IReadOnlyList<HeldKeyStatus> HeldKeys { get; init; } = [];
}

/// <summary>
/// An ordering key held on a queue: it has dead letters, and its later messages wait until every one of them is
/// retried or discarded.
/// </summary>
/// <param name="Queue">The queue.</param>
/// <param name="Key">The ordering key.</param>
/// <param name="DeadLetters">Dead letters of the key from this queue.</param>
/// <param name="Waiting">Messages of the key waiting behind them on the queue.</param>
public sealed record HeldKeyStatus(string Queue, string Key, long DeadLetters, long Waiting);

/// <summary>Thrown when an append's expected stream version does not match the stream.</summary>
public sealed class StreamVersionConflictException : Exception
{
    /// <summary>Creates the exception.</summary>
    public StreamVersionConflictException(string stream, long? expected, long actual)
        : base($"Stream '{stream}' is at version {actual}, not {(expected?.ToString() ?? "any")}: another writer appended first. Re-read the stream and decide again.")
    {
        Stream = stream;
        Expected = expected;
        Actual = actual;
    }

    /// <summary>Creates the exception.</summary>
    public StreamVersionConflictException() : this(string.Empty, null, 0) { }

    /// <summary>Creates the exception.</summary>
    public StreamVersionConflictException(string message) : base(message) => Stream = string.Empty;

    /// <summary>Creates the exception.</summary>
    public StreamVersionConflictException(string message, Exception innerException) : base(message, innerException) => Stream = string.Empty;

    /// <summary>The stream.</summary>
    public string Stream { get; }

    /// <summary>The version the writer expected.</summary>
    public long? Expected { get; }

    /// <summary>The stream's version when the append was tried.</summary>
    public long Actual { get; }
}
