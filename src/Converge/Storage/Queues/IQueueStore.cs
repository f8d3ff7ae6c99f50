using Converge.Contracts;

namespace Converge.Storage;

/// <summary>
/// The queue, outside a transaction: claims under a lease, lease renewal and release, and the dead letters' way back.
/// Writes inside a transaction are in <see cref="IQueueTransaction"/>.
/// </summary>
public interface IQueueStore : IStore
{
    /// <summary>
    /// Claims up to <paramref name="max"/> visible messages of <paramref name="queue"/> under a lease of
    /// <paramref name="lease"/>, within the limits of <paramref name="policy"/>: its concurrency limit and rate limit hold
    /// across every process on the store. Each claim counts an attempt. Default: a transaction of its own around
    /// <see cref="IQueueTransaction.ClaimAsync"/>; stores override it when they can claim in fewer round trips.
    /// </summary>
    async ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken)
    {
        await using var transaction = await BeginAsync(cancellationToken);
        var claimed = await transaction.ClaimAsync(queue, max, lease, policy, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return claimed;
    }

    /// <summary>Claims like <see cref="ClaimAsync(string, int, TimeSpan, ClaimPolicy, CancellationToken)"/> with <see cref="ClaimPolicy.Default"/>.</summary>
    ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken) =>
        ClaimAsync(queue, max, lease, ClaimPolicy.Default, cancellationToken);

    /// <summary>When the next message of <paramref name="queue"/> becomes visible; <c>null</c> when the queue is empty.</summary>
    ValueTask<DateTimeOffset?> NextVisibleAtAsync(string queue, CancellationToken cancellationToken);

    /// <summary>Extends the leases still held; returns how many were extended.</summary>
    ValueTask<int> RenewLeasesAsync(IReadOnlyList<QueuedMessage> messages, TimeSpan lease, CancellationToken cancellationToken);

    /// <summary>
    /// Gives leased messages back, visible now. With <paramref name="countAttempt"/> <c>false</c> (a graceful
    /// shutdown) the attempt is not counted; with <c>true</c> (a failed batch) it is.
    /// </summary>
    ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> messages, bool countAttempt, CancellationToken cancellationToken);

    /// <summary>Moves a dead letter back onto its queue with a fresh attempt count; <c>false</c> when it does not exist or came from the log.</summary>
    ValueTask<bool> RetryDeadLetterAsync(long id, CancellationToken cancellationToken);

    /// <summary>Deletes a dead letter; <c>false</c> when it does not exist.</summary>
    ValueTask<bool> DiscardDeadLetterAsync(long id, CancellationToken cancellationToken);
}

/// <summary>The queue's writes inside a <see cref="IStoreTransaction"/>: they commit or roll back with it.</summary>
public interface IQueueTransaction
{
    /// <summary>
    /// Puts a message on a queue, visible at <see cref="OutgoingMessage.DueAt"/> (now when <c>null</c>). A message
    /// that continues earlier deliveries (<see cref="OutgoingMessage.IsContinuation"/>) keeps their attempt count and
    /// history. Consumers of the queue are woken when the transaction commits.
    /// </summary>
    ValueTask EnqueueAsync(OutgoingMessage message, CancellationToken cancellationToken);

    /// <summary>
    /// Claims like <see cref="IQueueStore.ClaimAsync(string, int, TimeSpan, ClaimPolicy, CancellationToken)"/>, inside
    /// this transaction: the leases take hold when it commits and vanish if it rolls back. A worker that commits the
    /// outcomes of finished messages claims the next ones in the same commit. A row that cannot be decoded is
    /// dead-lettered here as <see cref="DeadLetterReasons.InvalidRow"/> (see <see cref="InvalidRows"/>), never returned.
    /// </summary>
    ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken);

    /// <summary>Removes a handled message; <c>false</c> when the lease was lost to another consumer.</summary>
    ValueTask<bool> CompleteAsync(QueuedMessage message, CancellationToken cancellationToken);

    /// <summary>
    /// Removes several handled messages; returns how many were still leased to their claimer (the rest were lost to
    /// another consumer). Stores that pay a round trip per statement override this with one statement.
    /// </summary>
    async ValueTask<int> CompleteAsync(IReadOnlyList<QueuedMessage> messages, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var completed = 0;
        foreach (var message in messages)
        {
            completed += await CompleteAsync(message, cancellationToken) ? 1 : 0;
        }

        return completed;
    }

    /// <summary>Makes a failed message visible again at <paramref name="dueAt"/>, recording the attempt; <c>false</c> when the lease was lost.</summary>
    ValueTask<bool> RetryLaterAsync(QueuedMessage message, DateTimeOffset dueAt, AttemptRecord failure, CancellationToken cancellationToken);

    /// <summary>
    /// Moves a message to the dead letters with its reason, its attempts and its history (with <paramref name="failure"/>
    /// appended when given); <c>false</c> when the lease was lost. Default: <see cref="CompleteAsync(QueuedMessage, CancellationToken)"/>
    /// then <see cref="RecordDeadLetterAsync"/>.
    /// </summary>
    async ValueTask<bool> DeadLetterAsync(QueuedMessage message, string reason, string? exception, AttemptRecord? failure, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!await CompleteAsync(message, cancellationToken))
        {
            return false;
        }

        await RecordDeadLetterAsync(
            new DeadLetterRecord(message.Queue, message.Envelope, reason)
            {
                Exception = exception,
                Attempts = message.Attempt,
                History = failure is null ? message.History : [.. message.History, failure],
                Priority = message.Priority,
            },
            cancellationToken);
        return true;
    }

    /// <summary>
    /// Records a dead letter that is not a leased row of this store's queue: one a transport received from a broker or
    /// that the broker dead-lettered itself (its source is the queue where <see cref="IQueueStore.RetryDeadLetterAsync"/>
    /// puts it back), or a log event a consumer group parked (<see cref="LogTransactionExtensions.ParkEventAsync"/>).
    /// </summary>
    ValueTask RecordDeadLetterAsync(DeadLetterRecord letter, CancellationToken cancellationToken);

    /// <summary>
    /// Deletes a message that waits on <paramref name="queue"/>, unclaimed, to become visible at
    /// <paramref name="dueAt"/> (a scheduled message no longer needed, such as a saga step's timeout once the reply
    /// came); <c>false</c> when it is not there (handled, leased, or already handed to a broker). The queue and due
    /// time let the store find the row by its queue index. Default: <c>false</c> (the store cannot delete), and the
    /// message is then delivered and must be ignored by its handler.
    /// </summary>
    ValueTask<bool> CancelScheduledAsync(string queue, Guid messageId, DateTimeOffset dueAt, CancellationToken cancellationToken) =>
        ValueTask.FromResult(false);
}
