namespace Converge.Storage;

/// <summary>
/// What every store contract builds on: a name, the signals it rings after commits, its schema, and write transactions.
/// A store offers the core (<see cref="IMessageStore"/>: the queue, the log and the inbox) and may offer optional
/// contracts beside it on the same object: <c>ISagaTransaction</c>, <c>IJobTransaction</c> and their queries,
/// <see cref="IStoreQueries"/>, and <see cref="IDatabaseStore"/> for the outbox on the application's own database
/// transaction. docs/architecture.md lists them and how a store is tested.
/// </summary>
public interface IStore : IAsyncDisposable
{
    /// <summary>A short name for diagnostics, such as <c>sqlite</c>.</summary>
    string Name { get; }

    /// <summary>Signals rung after this process commits queue or log writes.</summary>
    CommitSignals Signals { get; }

    /// <summary>
    /// How many write transactions of one worker are worth running at once. A store with one writer at a time
    /// (SQLite) says 1, the default; a server whose commits overlap (PostgreSQL) says more, and a job queue then
    /// commits that many groups of finished jobs in parallel.
    /// </summary>
    int ParallelWriters => 1;

    /// <summary>
    /// Applies pending schema migrations. Safe when several processes start at once. Default: nothing to apply (a
    /// store without a schema, such as the in-memory one).
    /// </summary>
    ValueTask MigrateAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    /// <summary>Begins a write transaction owned by Converge. Dispose without commit rolls back.</summary>
    ValueTask<IStoreTransaction> BeginAsync(CancellationToken cancellationToken);
}

/// <summary>
/// One write transaction: either Converge's own (from <see cref="IStore.BeginAsync"/>) or the caller's (from
/// <see cref="IDatabaseStore.Enlist"/>). Everything written through it commits or rolls back together. The
/// primitives' writes are in <see cref="IQueueTransaction"/>, <see cref="ILogTransaction"/> and
/// <see cref="IInboxTransaction"/>; a store that offers optional contracts implements their transaction interfaces
/// on the same object.
/// </summary>
public interface IStoreTransaction : IQueueTransaction, ILogTransaction, IInboxTransaction, IAsyncDisposable
{
    /// <summary>Marks the point that <see cref="RollbackToSavepointAsync"/> returns to (one level; not nested).</summary>
    ValueTask SavepointAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Marks the same savepoint as <see cref="SavepointAsync"/>, but a store may hold it back and send it with its next
    /// statement (a server store saves a round trip per item). The caller's obligation: before anything but this
    /// object uses the transaction's connection (a handler, a projection), call <see cref="FlushAsync"/>; calls through
    /// this object send it first by themselves. Default: <see cref="SavepointAsync"/>.
    /// </summary>
    ValueTask SavepointBeforeNextAsync(CancellationToken cancellationToken) => SavepointAsync(cancellationToken);

    /// <summary>
    /// Sends the statements the store held back (a savepoint from <see cref="SavepointBeforeNextAsync"/>), so that code
    /// outside the store may use the transaction's connection. Default: nothing is ever held back.
    /// </summary>
    ValueTask FlushAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    /// <summary>Undoes everything since <see cref="SavepointAsync"/> and ends the savepoint.</summary>
    ValueTask RollbackToSavepointAsync(CancellationToken cancellationToken);

    /// <summary>Keeps everything since <see cref="SavepointAsync"/> and ends the savepoint.</summary>
    ValueTask ReleaseSavepointAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Runs <paramref name="callback"/> after the transaction commits, never when it rolls back. In a transaction the store
    /// began, a callback registered after <see cref="SavepointAsync"/> is dropped when the transaction rolls back to that
    /// savepoint, with the writes it announces.
    /// </summary>
    void OnCommitted(Action callback);

    /// <summary>Commits a transaction Converge owns; for an enlisted transaction, throws (the caller commits).</summary>
    ValueTask CommitAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Rolls back a transaction Converge owns whose handler is still running (it ignored cancellation), releasing its
    /// locks; the connection must never serve anyone again, because the handler may still hold it. Later calls
    /// through this object must throw. Default: <see cref="IAsyncDisposable.DisposeAsync"/>.
    /// </summary>
    ValueTask AbandonAsync() => DisposeAsync();
}

/// <summary>
/// A store in front of another, such as a transport that carries the queue on a broker and keeps everything else in a
/// database store. The optional contracts it does not implement itself are found on <see cref="Inner"/> (see
/// <see cref="StoreContracts.Require{TContract}"/>), so it implements only what it changes.
/// </summary>
public interface IStoreDecorator
{
    /// <summary>The store behind this one.</summary>
    IStore Inner { get; }
}

/// <summary>
/// A transaction of an <see cref="IStoreDecorator"/>: the optional contracts it does not implement itself are found on
/// <see cref="Inner"/>, the inner store's transaction it wraps.
/// </summary>
public interface IStoreTransactionDecorator
{
    /// <summary>The inner store's transaction that this one wraps.</summary>
    IStoreTransaction Inner { get; }
}
