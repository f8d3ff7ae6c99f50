using Converge.Storage;

namespace Converge.Transports;

/// <summary>
/// A message broker that carries the queue primitive for a store: the store keeps the outbox (its own queue table), the
/// inbox, the log, dead letters, sagas and jobs, and the transport moves what the outbox holds to the broker and hands
/// the broker's deliveries to the runtime under leases. The runtime routes queue operations to it through
/// <see cref="TransportedStore"/>; a transport never wraps or forwards the store, it only uses it.
/// <para>Obligations:</para>
/// <list type="bullet">
/// <item>Nothing acknowledged is lost: a message leaves the outbox only once the broker confirmed it, and a delivery is
/// acknowledged to the broker only after <see cref="Acknowledge"/>, which the runtime calls once the transaction that
/// recorded the delivery's outcome committed. A delivery whose lease ran out, or that was released, is delivered again.</item>
/// <item>Deliveries are <see cref="QueuedMessage"/>s with ids below zero, so they never meet the store's row ids; their
/// <see cref="QueuedMessage.Attempt"/> counts every delivery, including those to consumers that crashed.</item>
/// <item>Queues the transport leaves in the store (<see cref="Carries"/> is <c>false</c>) are never relayed or consumed by it.</item>
/// </list>
/// The queue conformance suite (<c>QueueConformanceTests</c> in Converge.Testing) run on a store with the transport is
/// its conformance suite.
/// </summary>
public interface IMessageTransport : IAsyncDisposable
{
    /// <summary>A short name for the transport, such as <c>rabbitmq</c>; the store's name is <c>store+transport</c>.</summary>
    string Name { get; }

    /// <summary>
    /// The bells the runtime's consumers wait on: a queue's bell rings when deliveries arrive for it, or, for a queue
    /// left in the store, when the store rings it; the log's bell rings when the store's log grows (and when mirrored
    /// events arrive).
    /// </summary>
    CommitSignals Signals { get; }

    /// <summary>
    /// Starts the transport's background work (relaying the outbox, consuming, reconnecting) on <paramref name="store"/>,
    /// which is migrated by then. Called once, at start-up, before any other member but <see cref="KeepInStore"/>. An
    /// unreachable broker must not fail it: messages wait in the outbox until the broker is back.
    /// </summary>
    ValueTask StartAsync(IMessageStore store, CancellationToken cancellationToken);

    /// <summary>Whether the broker carries <paramref name="queue"/>; <c>false</c> for queues left in the store.</summary>
    bool Carries(string queue);

    /// <summary>
    /// Leaves <paramref name="queue"/> in the store from now on: it holds jobs, whose limits, cancellation and listings
    /// are store features. The transport stops relaying and consuming it.
    /// </summary>
    void KeepInStore(string queue);

    /// <summary>
    /// Takes up to <paramref name="max"/> deliveries of <paramref name="queue"/> under a lease of
    /// <paramref name="lease"/> on the application's clock; waits briefly for deliveries when none are at hand, and may
    /// return none.
    /// </summary>
    ValueTask<IReadOnlyList<QueuedMessage>> ReceiveAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken);

    /// <summary>Whether this process still holds <paramref name="delivery"/> under its lease, so an outcome may be recorded for it.</summary>
    bool Holds(QueuedMessage delivery);

    /// <summary>Extends the leases of the deliveries still held; returns how many were.</summary>
    ValueTask<int> RenewAsync(IReadOnlyList<QueuedMessage> deliveries, TimeSpan lease, CancellationToken cancellationToken);

    /// <summary>
    /// Gives deliveries up unhandled: counting the attempt (a handler that could not finish), or not (a worker that
    /// stops); either way they are delivered again.
    /// </summary>
    ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> deliveries, bool countAttempt, CancellationToken cancellationToken);

    /// <summary>
    /// The outcome of <paramref name="delivery"/> committed in the store: acknowledges it to the broker, which forgets
    /// it. Called from a commit callback; it must not block or throw.
    /// </summary>
    void Acknowledge(QueuedMessage delivery);

    /// <summary>
    /// A transaction that wrote messages of <paramref name="queue"/> to the store's queue table committed: the outbox has
    /// work. Called from a commit callback; it must not block or throw.
    /// </summary>
    void Sent(string queue);

    /// <summary>
    /// Runs <paramref name="read"/>, a read of the store's queue table, while no message is between the outbox and the
    /// broker, so that a message is seen in one place only.
    /// </summary>
    ValueTask<T> ReadSettledAsync<T>(Func<ValueTask<T>> read, CancellationToken cancellationToken);

    /// <summary>
    /// Adds the broker's part to the store's status <paramref name="stored"/> (read in <see cref="ReadSettledAsync{T}"/>):
    /// messages ready on the broker and deliveries held here, and without the transport's own bookkeeping.
    /// </summary>
    ValueTask<StoreStatus> AddStatusAsync(StoreStatus stored, CancellationToken cancellationToken);
}

/// <summary>
/// A transport that also serves reads of the event log, such as from a broker stream that mirrors it. The store still
/// assigns positions and keeps every event; the mirror must return the same events in the same order.
/// </summary>
public interface ILogMirror
{
    /// <summary>As <see cref="Converge.Storage.ILogStore.ReadLogAsync"/>.</summary>
    ValueTask<IReadOnlyList<LogEvent>> ReadLogAsync(long afterPosition, int max, CancellationToken cancellationToken);
}
