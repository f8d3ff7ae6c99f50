using Converge.Contracts;

namespace Converge.Storage;

/// <summary>The log, outside a transaction: reads by position and by stream, and consumer-group checkpoints.</summary>
public interface ILogStore : IStore
{
    /// <summary>Reads up to <paramref name="max"/> events after <paramref name="afterPosition"/>, in position order.</summary>
    ValueTask<IReadOnlyList<LogEvent>> ReadLogAsync(long afterPosition, int max, CancellationToken cancellationToken);

    /// <summary>Reads events of one stream from <paramref name="fromVersion"/> (1-based), in version order.</summary>
    ValueTask<IReadOnlyList<LogEvent>> ReadStreamAsync(string stream, long fromVersion, int max, CancellationToken cancellationToken);

    /// <summary>The state of a consumer group; <c>null</c> when it has never run.</summary>
    ValueTask<ConsumerGroupState?> GetConsumerGroupAsync(string group, CancellationToken cancellationToken);

    /// <summary>
    /// The position of the last committed event; 0 when the log is empty. The default finds it with about 2 log2(head)
    /// reads of one event; a store answers it with one query.
    /// </summary>
    async ValueTask<long> GetLogHeadAsync(CancellationToken cancellationToken)
    {
        // Positions rise but may skip numbers: an event after p means the head is beyond p. Gallop, then halve.
        long below = 0;
        var above = 1L;
        while ((await ReadLogAsync(above, 1, cancellationToken)).Count > 0)
        {
            below = above;
            above = checked(above * 2);
        }

        while (above - below > 1)
        {
            var middle = below + ((above - below) / 2);
            if ((await ReadLogAsync(middle, 1, cancellationToken)).Count > 0)
            {
                below = middle;
            }
            else
            {
                above = middle;
            }
        }

        var last = await ReadLogAsync(below, 1, cancellationToken);
        return last.Count > 0 ? last[0].Position : below;
    }
}

/// <summary>The log's writes inside a <see cref="IStoreTransaction"/>: they commit or roll back with it.</summary>
public interface ILogTransaction
{
    /// <summary>
    /// Appends events to a stream; <paramref name="expectedVersion"/> <c>null</c> appends at any version, 0 requires a
    /// new stream. Returns the stored events with their positions. Readers are woken when the transaction commits.
    /// </summary>
    /// <exception cref="StreamVersionConflictException">The stream is not at <paramref name="expectedVersion"/>.</exception>
    ValueTask<IReadOnlyList<LogEvent>> AppendAsync(string stream, long? expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken);

    /// <summary>
    /// Stores a consumer group's checkpoint and failure count if the stored position is still
    /// <paramref name="expectedPosition"/>; <c>false</c> when another process moved it first (then roll back).
    /// </summary>
    ValueTask<bool> SaveConsumerGroupAsync(string group, long expectedPosition, long position, int failedAttempts, string? lastError, CancellationToken cancellationToken);
}

/// <summary>
/// Optional: operating consumer groups in a <see cref="IStoreTransaction"/> (<c>converge groups pause|resume</c>,
/// dropping a projection). Every store of this repository offers it; find it with
/// <see cref="LogTransactionExtensions.ConsumerGroups"/>.
/// </summary>
public interface IConsumerGroupTransaction
{
    /// <summary>
    /// Pauses or resumes a consumer group: its runners start no batch while it is paused. A group that never ran gets a
    /// checkpoint at position 0. Saving a checkpoint (<see cref="ILogTransaction.SaveConsumerGroupAsync"/>) keeps the
    /// flag as it is.
    /// </summary>
    ValueTask SetConsumerGroupPausedAsync(string group, bool paused, CancellationToken cancellationToken);

    /// <summary>
    /// Forgets a consumer group's checkpoint (a dropped projection's, a group that is gone); <c>false</c> when it had
    /// none. A group still running in some process starts again where its configuration says.
    /// </summary>
    ValueTask<bool> DeleteConsumerGroupAsync(string group, CancellationToken cancellationToken);
}

/// <summary>Log writes composed of the core's own.</summary>
public static class LogTransactionExtensions
{
    /// <summary><paramref name="transaction"/>'s consumer-group operations (pause, resume, delete).</summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="IConsumerGroupTransaction"/>.</exception>
    public static IConsumerGroupTransaction ConsumerGroups(this IStoreTransaction transaction) =>
        StoreContracts.Require<IConsumerGroupTransaction>(transaction, "Pausing and deleting consumer groups");

    /// <summary>
    /// Parks a log event a consumer group could not handle: a dead letter whose source is <c>log:GROUP</c>, with the
    /// event's position, recorded in <paramref name="transaction"/>.
    /// </summary>
    public static ValueTask ParkEventAsync(this IStoreTransaction transaction, string group, LogEvent logEvent, string reason, string? exception, int attempts, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        ArgumentException.ThrowIfNullOrEmpty(group);
        ArgumentNullException.ThrowIfNull(logEvent);
        return transaction.RecordDeadLetterAsync(
            new DeadLetterRecord("log:" + group, logEvent.Envelope, reason) { Exception = exception, Attempts = attempts, LogPosition = logEvent.Position },
            cancellationToken);
    }
}
