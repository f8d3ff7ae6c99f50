using Microsoft.Extensions.Logging;

namespace Converge.Diagnostics;

/// <summary>Source-generated log messages. Event ids are stable: dashboards and alerts may depend on them.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1000, Level = LogLevel.Information, Message = "Converge started on {Store}: {Queues} queue(s), {Groups} consumer group(s), {Projections} projection version(s)")]
    public static partial void Started(ILogger logger, string store, int queues, int groups, int projections);

    [LoggerMessage(EventId = 1001, Level = LogLevel.Information, Message = "Converge stopped")]
    public static partial void Stopped(ILogger logger);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Warning, Message = "Converge stopped before all its workers did: {HandBack} after the host's shutdown timeout some were still running (a handler blocking its thread); their messages are delivered again when their leases expire")]
    public static partial void StopTimedOut(ILogger logger, TimeSpan handBack);

    [LoggerMessage(EventId = 1100, Level = LogLevel.Warning, Message = "Message {MessageId} ({MessageType}) on queue {Queue} failed attempt {Attempt}; retrying at {DueAt}")]
    public static partial void RetryScheduled(ILogger logger, Exception exception, Guid messageId, string messageType, string queue, int attempt, DateTimeOffset dueAt);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Error, Message = "Message {MessageId} ({MessageType}) on queue {Queue} dead-lettered: {Reason}")]
    public static partial void DeadLettered(ILogger logger, Exception? exception, Guid messageId, string messageType, string queue, string reason);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Debug, Message = "Message {MessageId} on queue {Queue} was handled before; acknowledged as a duplicate")]
    public static partial void Duplicate(ILogger logger, Guid messageId, string queue);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Warning, Message = "Message {MessageId} on queue {Queue}: the lease was lost to another consumer; its effects were rolled back")]
    public static partial void LeaseLost(ILogger logger, Guid messageId, string queue);

    [LoggerMessage(EventId = 1104, Level = LogLevel.Error, Message = "The handler of message {MessageId} ({MessageType}) on queue {Queue} ignored cancellation after its timeout of {Timeout}; its batch of {Count} was abandoned and rolled back. Pass the handler's CancellationToken to everything it awaits")]
    public static partial void HandlerAbandoned(ILogger logger, Guid messageId, string messageType, string queue, TimeSpan timeout, int count);

    [LoggerMessage(EventId = 1105, Level = LogLevel.Error, Message = "A handler on queue {Queue} has blocked its worker for {Elapsed} (timeout {Timeout}) without returning; the leases of its batch of {Count} are no longer renewed, so another consumer receives them when they expire")]
    public static partial void HandlerStuck(ILogger logger, string queue, TimeSpan elapsed, TimeSpan timeout, int count);

    [LoggerMessage(EventId = 1106, Level = LogLevel.Warning, Message = "A worker of queue {Queue} waits for the abandoned handler of message {MessageId} ({MessageType}) to return before it claims again; {OtherWorkers} other worker(s) of the queue in this process, and other processes, go on with its messages")]
    public static partial void WorkerHeldByAbandonedHandler(ILogger logger, string queue, Guid messageId, string messageType, int otherWorkers);

    [LoggerMessage(EventId = 1107, Level = LogLevel.Information, Message = "The abandoned handler of message {MessageId} ({MessageType}) on queue {Queue} returned after {Elapsed}; its worker claims again")]
    public static partial void AbandonedHandlerReturned(ILogger logger, Guid messageId, string messageType, string queue, TimeSpan elapsed);

    [LoggerMessage(EventId = 1200, Level = LogLevel.Error, Message = "Consumer of queue {Queue} failed outside a handler; its batch of {Count} is released for redelivery")]
    public static partial void BatchFailed(ILogger logger, Exception exception, string queue, int count);

    [LoggerMessage(EventId = 1201, Level = LogLevel.Error, Message = "Consumer of queue {Queue} could not claim work; retrying in {Delay}")]
    public static partial void ClaimFailed(ILogger logger, Exception exception, string queue, TimeSpan delay);

    [LoggerMessage(EventId = 1203, Level = LogLevel.Warning, Message = "Consumer of queue {Queue} could not record the inbox entries of its batch of {Count} in one statement; each message records its own instead")]
    public static partial void InboxAheadFailed(ILogger logger, Exception exception, string queue, int count);

    [LoggerMessage(EventId = 1202, Level = LogLevel.Warning, Message = "Consumer of queue {Queue} could not renew the leases of its batch of {Count}; another consumer may receive them again (the inbox makes that harmless)")]
    public static partial void RenewalFailed(ILogger logger, Exception exception, string queue, int count);

    [LoggerMessage(EventId = 1300, Level = LogLevel.Warning, Message = "Consumer group {Group} failed at position {Position} (attempt {Attempt}); retrying in {Delay}")]
    public static partial void EventFailed(ILogger logger, Exception exception, string group, long position, int attempt, TimeSpan delay);

    [LoggerMessage(EventId = 1301, Level = LogLevel.Error, Message = "Consumer group {Group} parked the event at position {Position} after {Attempts} attempts and moved on")]
    public static partial void EventParked(ILogger logger, Exception exception, string group, long position, int attempts);

    [LoggerMessage(EventId = 1302, Level = LogLevel.Error, Message = "Consumer group {Group} is stalled at position {Position} after {Attempts} attempts; set ParkPoisonEvents or fix the handler")]
    public static partial void GroupStalled(ILogger logger, Exception exception, string group, long position, int attempts);

    [LoggerMessage(EventId = 1306, Level = LogLevel.Information, Message = "Consumer group {Group} is paused at position {Position}; it starts no batch until it is resumed")]
    public static partial void GroupPaused(ILogger logger, string group, long position);

    [LoggerMessage(EventId = 1307, Level = LogLevel.Information, Message = "Consumer group {Group} resumed at position {Position}")]
    public static partial void GroupResumed(ILogger logger, string group, long position);

    [LoggerMessage(EventId = 1310, Level = LogLevel.Warning, Message = "Projection {Projection} version {Version} failed at position {Position} (attempt {Attempt}); retrying in {Delay}")]
    public static partial void ProjectionFailed(ILogger logger, Exception exception, string projection, int version, long position, int attempt, TimeSpan delay);

    [LoggerMessage(EventId = 1311, Level = LogLevel.Information, Message = "Projection {Projection} version {Version} caught up with the log at position {Position}: built, ready to switch")]
    public static partial void ProjectionBuilt(ILogger logger, string projection, int version, long position);

    [LoggerMessage(EventId = 1312, Level = LogLevel.Information, Message = "Projection {Projection} version {Version} is live at position {Position}, in place of version {Previous}")]
    public static partial void ProjectionSwitched(ILogger logger, string projection, int version, int previous, long position);

    [LoggerMessage(EventId = 1315, Level = LogLevel.Information, Message = "Projection {Projection} version {Version} is live at position {Position}: the first version readers read")]
    public static partial void ProjectionFirstLive(ILogger logger, string projection, int version, long position);

    [LoggerMessage(EventId = 1313, Level = LogLevel.Information, Message = "Projection {Projection} version {Version} is being rebuilt from position 0")]
    public static partial void ProjectionRebuilding(ILogger logger, string projection, int version);

    [LoggerMessage(EventId = 1314, Level = LogLevel.Warning, Message = "Projection {Projection} version {Version} was dropped; it is not run. Remove its registration, or register a new version")]
    public static partial void ProjectionDropped(ILogger logger, string projection, int version);

    [LoggerMessage(EventId = 1303, Level = LogLevel.Debug, Message = "Consumer group {Group} lost its checkpoint race at position {Position}; re-reading")]
    public static partial void CheckpointConflict(ILogger logger, string group, long position);

    [LoggerMessage(EventId = 1304, Level = LogLevel.Error, Message = "Consumer group {Group} failed outside a handler; retrying in {Delay}")]
    public static partial void GroupLoopFailed(ILogger logger, Exception exception, string group, TimeSpan delay);

    [LoggerMessage(EventId = 1400, Level = LogLevel.Information, Message = "Deleted {Count} inbox records handled before {Cutoff}")]
    public static partial void InboxPurged(ILogger logger, int count, DateTimeOffset cutoff);

    [LoggerMessage(EventId = 1401, Level = LogLevel.Error, Message = "Inbox clean-up failed; trying again in {Delay}")]
    public static partial void InboxPurgeFailed(ILogger logger, Exception exception, TimeSpan delay);

    [LoggerMessage(EventId = 1600, Level = LogLevel.Error, Message = "Saga {TransactionId} ({Saga}) is stuck: {What} of step {Step} failed {Attempts} time(s) in a row (last error: {LastError}); resume it with 'converge sagas resume' once the participant is fixed")]
    public static partial void SagaStuck(ILogger logger, string transactionId, string saga, string step, int attempts, string what, string lastError);

    [LoggerMessage(EventId = 1500, Level = LogLevel.Error, Message = "A message observer threw; observers must not throw")]
    public static partial void ObserverFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 1700, Level = LogLevel.Warning, Message = "Reading the store's status for the Converge gauges failed; they keep the last reading and the next read is in {Interval}")]
    public static partial void StatusReadFailed(ILogger logger, Exception exception, TimeSpan interval);

    [LoggerMessage(EventId = 1701, Level = LogLevel.Warning, Message = "The Converge status gauges stay empty: {Reason}")]
    public static partial void StatusUnavailable(ILogger logger, string reason);
}
