using System.Data.Common;
using System.Runtime.CompilerServices;
using Converge.Contracts;
using Converge.Storage;

namespace Converge.Transports;

/// <summary>
/// How the runtime sees a store whose queues a transport carries: queue operations on a carried queue go to the
/// transport, everything else to the store. Sends are written to the store's queue table (the outbox) in the sender's
/// transaction and handed to the transport when it commits; a delivery's outcome is recorded in the store and
/// acknowledged to the broker once that commit succeeded:
/// <list type="bullet">
/// <item>done: acknowledged;</item>
/// <item>retry later: written back to the outbox, due at its backoff, with its attempts and history, then acknowledged;</item>
/// <item>dead letter: recorded in the store's dead letters, then acknowledged.</item>
/// </list>
/// An outcome rolled back (with the transaction or to a savepoint) is forgotten and the delivery stays claimed, as a
/// rolled-back store write leaves the lease. Queues with a claim policy (job queues) stay in the store. Composed by
/// <c>AddConverge</c> when <see cref="Runtime.ConvergeOptions.TransportFactory"/> is set.
/// </summary>
public sealed class TransportedStore : IMessageStore, IStoreDecorator, IStoreQueries, IDatabaseStore
{
    readonly ConditionalWeakTable<IStoreTransaction, TransportedTransaction> _wrapped = new();
    int _disposed;

    /// <summary>
    /// Puts <paramref name="transport"/> in front of <paramref name="store"/>; this object owns both from now on and
    /// disposes them. <paramref name="storeQueues"/> (the process's job queues) stay in the store.
    /// </summary>
    public TransportedStore(IMessageStore store, IMessageTransport transport, IEnumerable<string> storeQueues)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(storeQueues);
        Store = store;
        Transport = transport;
        foreach (var queue in storeQueues)
        {
            transport.KeepInStore(queue);
        }
    }

    /// <summary>The store: the outbox, the inbox, the log, dead letters, sagas and jobs.</summary>
    public IMessageStore Store { get; }

    /// <summary>The transport that carries the queues.</summary>
    public IMessageTransport Transport { get; }

    IStore IStoreDecorator.Inner => Store;

    /// <inheritdoc />
    public string Name => Store.Name + "+" + Transport.Name;

    /// <inheritdoc />
    /// <remarks>The store's: the transport adds no writer of its own.</remarks>
    public int ParallelWriters => Store.ParallelWriters;

    /// <inheritdoc />
    /// <remarks>The transport's, which rings for its deliveries and forwards the store's bells.</remarks>
    public CommitSignals Signals => Transport.Signals;

    /// <inheritdoc />
    /// <remarks>Migrates the store, then starts the transport on it.</remarks>
    public async ValueTask MigrateAsync(CancellationToken cancellationToken)
    {
        await Store.MigrateAsync(cancellationToken);
        await Transport.StartAsync(Store, cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask<IStoreTransaction> BeginAsync(CancellationToken cancellationToken) => Wrap(await Store.BeginAsync(cancellationToken));

    /// <inheritdoc />
    public IStoreTransaction Enlist(DbTransaction transaction) => Wrap(Store.Database().Enlist(transaction));

    /// <inheritdoc />
    public ValueTask<DbConnection> OpenReadConnectionAsync(CancellationToken cancellationToken) => Store.Database().OpenReadConnectionAsync(cancellationToken);

    /// <inheritdoc />
    public SqlDialect Dialect => Store.Database().Dialect;

    /// <inheritdoc />
    public string TableName(string name) => Store.Database().TableName(name);

    /// <summary>One wrapper per store transaction: enlisting a transaction begun here returns the same wrapper.</summary>
    TransportedTransaction Wrap(IStoreTransaction inner) => _wrapped.GetValue(inner, i => new TransportedTransaction(Transport, i));

    /// <summary>Whether <paramref name="message"/> is a transport's delivery rather than a row of the store.</summary>
    internal static bool IsDelivery(QueuedMessage message) => message.Id < 0;

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken) =>
        Transport.Carries(queue) ? Transport.ReceiveAsync(queue, max, lease, cancellationToken) : Store.ClaimAsync(queue, max, lease, cancellationToken);

    /// <inheritdoc />
    /// <remarks>A claim with a policy is a job worker's: the queue stays in the store from then on, which keeps the policy's limits across processes.</remarks>
    public ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken)
    {
        Transport.KeepInStore(queue);
        return Store.ClaimAsync(queue, max, lease, policy, cancellationToken);
    }

    /// <inheritdoc />
    /// <remarks>For a carried queue, <c>null</c>: deliveries ring <see cref="Signals"/>, and delayed messages are the transport's to move when due.</remarks>
    public ValueTask<DateTimeOffset?> NextVisibleAtAsync(string queue, CancellationToken cancellationToken) =>
        Transport.Carries(queue) ? ValueTask.FromResult<DateTimeOffset?>(null) : Store.NextVisibleAtAsync(queue, cancellationToken);

    /// <inheritdoc />
    public async ValueTask<int> RenewLeasesAsync(IReadOnlyList<QueuedMessage> messages, TimeSpan lease, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var (deliveries, rows) = Split(messages);
        var renewed = deliveries.Count > 0 ? await Transport.RenewAsync(deliveries, lease, cancellationToken) : 0;
        return rows.Count > 0 ? renewed + await Store.RenewLeasesAsync(rows, lease, cancellationToken) : renewed;
    }

    /// <inheritdoc />
    public async ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> messages, bool countAttempt, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var (deliveries, rows) = Split(messages);
        if (rows.Count > 0)
        {
            await Store.ReleaseAsync(rows, countAttempt, cancellationToken);
        }

        if (deliveries.Count > 0)
        {
            await Transport.ReleaseAsync(deliveries, countAttempt, cancellationToken);
        }
    }

    internal static (List<QueuedMessage> Deliveries, List<QueuedMessage> Rows) Split(IReadOnlyList<QueuedMessage> messages)
    {
        var deliveries = new List<QueuedMessage>();
        var rows = new List<QueuedMessage>();
        foreach (var message in messages)
        {
            (IsDelivery(message) ? deliveries : rows).Add(message);
        }

        return (deliveries, rows);
    }

    /// <inheritdoc />
    /// <remarks>The dead letter goes back to the store's queue table, which is the outbox for a carried queue.</remarks>
    public ValueTask<bool> RetryDeadLetterAsync(long id, CancellationToken cancellationToken) => Store.RetryDeadLetterAsync(id, cancellationToken);

    /// <inheritdoc />
    public ValueTask<bool> DiscardDeadLetterAsync(long id, CancellationToken cancellationToken) => Store.DiscardDeadLetterAsync(id, cancellationToken);

    /// <inheritdoc />
    /// <remarks>From the transport when it mirrors the log (<see cref="ILogMirror"/>), else from the store.</remarks>
    public ValueTask<IReadOnlyList<LogEvent>> ReadLogAsync(long afterPosition, int max, CancellationToken cancellationToken) =>
        Transport is ILogMirror mirror ? mirror.ReadLogAsync(afterPosition, max, cancellationToken) : Store.ReadLogAsync(afterPosition, max, cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<LogEvent>> ReadStreamAsync(string stream, long fromVersion, int max, CancellationToken cancellationToken) =>
        Store.ReadStreamAsync(stream, fromVersion, max, cancellationToken);

    /// <inheritdoc />
    public ValueTask<ConsumerGroupState?> GetConsumerGroupAsync(string group, CancellationToken cancellationToken) => Store.GetConsumerGroupAsync(group, cancellationToken);

    /// <inheritdoc />
    public ValueTask<long> GetLogHeadAsync(CancellationToken cancellationToken) => Store.GetLogHeadAsync(cancellationToken);

    /// <inheritdoc />
    public ValueTask<int> PurgeInboxAsync(DateTimeOffset handledBefore, CancellationToken cancellationToken) => Store.PurgeInboxAsync(handledBefore, cancellationToken);

    /// <inheritdoc />
    /// <remarks>The store's status with the transport's part added (<see cref="IMessageTransport.AddStatusAsync"/>).</remarks>
    public ValueTask<StoreStatus> GetStatusAsync(CancellationToken cancellationToken) =>
        Transport.ReadSettledAsync(async () => await Transport.AddStatusAsync(await Store.Queries().GetStatusAsync(cancellationToken), cancellationToken), cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<DeadLetter>> ListDeadLettersAsync(string? source, int max, CancellationToken cancellationToken) =>
        Store.Queries().ListDeadLettersAsync(source, max, cancellationToken);

    /// <inheritdoc />
    /// <remarks>Messages on the broker are not listed as pending: only the outbox, the inbox, the dead letters and the log are read.</remarks>
    public ValueTask<IReadOnlyList<FlowItem>> ReadFlowAsync(string correlationId, CancellationToken cancellationToken) =>
        Transport.ReadSettledAsync(() => Store.Queries().ReadFlowAsync(correlationId, cancellationToken), cancellationToken);

    /// <summary>Stops the transport (which hands back what it holds unclaimed), then disposes the store.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        await Transport.DisposeAsync();
        await Store.DisposeAsync();
    }
}

/// <summary>
/// A transaction of the store behind a <see cref="TransportedStore"/> that also records outcomes of the transport's
/// deliveries; they are acknowledged only after the transaction commits.
/// </summary>
internal sealed class TransportedTransaction(IMessageTransport transport, IStoreTransaction inner) : IStoreTransaction, IStoreTransactionDecorator
{
    public IStoreTransaction Inner => inner;

    public async ValueTask EnqueueAsync(OutgoingMessage message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (message.OrderingKey is not null && transport.Carries(message.Queue))
        {
            // A broker hands a queue's messages to several consumers at once and redelivers a failed one behind the rest:
            // nothing there can keep one key's messages in order, or hold them behind a dead letter.
            throw new NotSupportedException(
                $"Queue '{message.Queue}' goes through the {transport.Name} transport, which cannot keep the order of an ordering key (a broker delivers a queue's messages to several consumers at once and redelivers a failed one behind the rest). "
                + "Send without SendOptions.OrderingKey, or keep the queue in the store (the transport's StoreQueues option), where ordering keys are kept.");
        }

        await inner.EnqueueAsync(message, cancellationToken);
        var queue = message.Queue;
        inner.OnCommitted(() => transport.Sent(queue));
    }

    /// <inheritdoc />
    /// <remarks>A scheduled message waits in the store's outbox until due, so the store can delete it until then.</remarks>
    public ValueTask<bool> CancelScheduledAsync(string queue, Guid messageId, DateTimeOffset dueAt, CancellationToken cancellationToken) =>
        inner.CancelScheduledAsync(queue, messageId, dueAt, cancellationToken);

    /// <inheritdoc />
    /// <remarks>A claim in a transaction is a job worker's (it claims the next jobs in the commit of the finished ones): job queues stay in the store.</remarks>
    public ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken)
    {
        transport.KeepInStore(queue);
        return inner.ClaimAsync(queue, max, lease, policy, cancellationToken);
    }

    public ValueTask<bool> CompleteAsync(QueuedMessage message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!TransportedStore.IsDelivery(message))
        {
            return inner.CompleteAsync(message, cancellationToken);
        }

        return ValueTask.FromResult(AcknowledgeOnCommit(message));
    }

    public async ValueTask<int> CompleteAsync(IReadOnlyList<QueuedMessage> messages, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var (deliveries, rows) = TransportedStore.Split(messages);
        var completed = rows.Count > 0 ? await inner.CompleteAsync(rows, cancellationToken) : 0;
        foreach (var delivery in deliveries)
        {
            completed += AcknowledgeOnCommit(delivery) ? 1 : 0;
        }

        return completed;
    }

    public async ValueTask<bool> RetryLaterAsync(QueuedMessage message, DateTimeOffset dueAt, AttemptRecord failure, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!TransportedStore.IsDelivery(message))
        {
            return await inner.RetryLaterAsync(message, dueAt, failure, cancellationToken);
        }

        if (!transport.Holds(message))
        {
            return false;
        }

        // The retry waits in the outbox until due (a broker has no delayed delivery), carrying its attempts and history;
        // the transport relays it again then.
        await EnqueueAsync(new OutgoingMessage(message.Queue, message.Envelope, dueAt, message.Priority) { Attempts = message.Attempt, History = [.. message.History, failure] }, cancellationToken);
        return AcknowledgeOnCommit(message);
    }

    public async ValueTask<bool> DeadLetterAsync(QueuedMessage message, string reason, string? exception, AttemptRecord? failure, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!TransportedStore.IsDelivery(message))
        {
            return await inner.DeadLetterAsync(message, reason, exception, failure, cancellationToken);
        }

        if (!transport.Holds(message))
        {
            return false;
        }

        IReadOnlyList<AttemptRecord> history = failure is null ? message.History : [.. message.History, failure];
        await inner.RecordDeadLetterAsync(new DeadLetterRecord(message.Queue, message.Envelope, reason) { Exception = exception, Attempts = message.Attempt, History = history, Priority = message.Priority }, cancellationToken);
        return AcknowledgeOnCommit(message);
    }

    /// <summary>
    /// Acknowledges <paramref name="delivery"/> once this transaction commits; <c>false</c> when its lease was lost. A
    /// rollback to a savepoint drops the callback with the outcome it announces (see <see cref="IStoreTransaction.OnCommitted"/>).
    /// </summary>
    bool AcknowledgeOnCommit(QueuedMessage delivery)
    {
        if (!transport.Holds(delivery))
        {
            return false;
        }

        inner.OnCommitted(() => transport.Acknowledge(delivery));
        return true;
    }

    public ValueTask RecordDeadLetterAsync(DeadLetterRecord letter, CancellationToken cancellationToken) => inner.RecordDeadLetterAsync(letter, cancellationToken);

    public ValueTask SavepointAsync(CancellationToken cancellationToken) => inner.SavepointAsync(cancellationToken);

    public ValueTask SavepointBeforeNextAsync(CancellationToken cancellationToken) => inner.SavepointBeforeNextAsync(cancellationToken);

    public ValueTask FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    public ValueTask RollbackToSavepointAsync(CancellationToken cancellationToken) => inner.RollbackToSavepointAsync(cancellationToken);

    public ValueTask ReleaseSavepointAsync(CancellationToken cancellationToken) => inner.ReleaseSavepointAsync(cancellationToken);

    public void OnCommitted(Action callback) => inner.OnCommitted(callback);

    public ValueTask CommitAsync(CancellationToken cancellationToken = default) => inner.CommitAsync(cancellationToken);

    public ValueTask AbandonAsync() => inner.AbandonAsync();

    public ValueTask DisposeAsync() => inner.DisposeAsync();

    public ValueTask<IReadOnlyList<LogEvent>> AppendAsync(string stream, long? expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken) =>
        inner.AppendAsync(stream, expectedVersion, events, cancellationToken);

    public ValueTask<bool> SaveConsumerGroupAsync(string group, long expectedPosition, long position, int failedAttempts, string? lastError, CancellationToken cancellationToken) =>
        inner.SaveConsumerGroupAsync(group, expectedPosition, position, failedAttempts, lastError, cancellationToken);

    public ValueTask<bool> TryRecordInboxAsync(string consumer, Envelope envelope, CancellationToken cancellationToken) =>
        inner.TryRecordInboxAsync(consumer, envelope, cancellationToken);

    public ValueTask<IReadOnlyList<bool>> TryRecordInboxAsync(string consumer, IReadOnlyList<Envelope> envelopes, CancellationToken cancellationToken) =>
        inner.TryRecordInboxAsync(consumer, envelopes, cancellationToken);
}
