namespace Converge.Sagas;

/// <summary>
/// Optional saga storage, on the same object as the store's <c>IStoreTransaction</c>: instances with optimistic
/// concurrency and their log, written in the transaction that handles a reply. The saga capability (<c>AddSaga</c>)
/// needs it and says so at start-up when the store lacks it. Tested by the saga conformance facts in Converge.Testing.
/// </summary>
public interface ISagaTransaction
{
    /// <summary>Loads the saga instance of <paramref name="transactionId"/> inside this transaction; <c>null</c> when none.</summary>
    ValueTask<SagaInstance?> LoadSagaAsync(string transactionId, CancellationToken cancellationToken);

    /// <summary>Stores a new saga instance; <c>false</c> when one with its transaction id already exists.</summary>
    ValueTask<bool> InsertSagaAsync(SagaInstance instance, CancellationToken cancellationToken);

    /// <summary>
    /// Saves <paramref name="instance"/> if the stored one is still at <paramref name="expectedVersion"/>, and sets its
    /// <see cref="SagaInstance.ConcurrencyVersion"/> to the next version; <c>false</c> when another writer saved first.
    /// </summary>
    ValueTask<bool> UpdateSagaAsync(SagaInstance instance, long expectedVersion, CancellationToken cancellationToken);

    /// <summary>
    /// The saga log of <paramref name="transactionId"/> as this transaction sees it, oldest first: what is committed
    /// and what this transaction appended so far (a batch handles several replies of one instance in one transaction).
    /// </summary>
    ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken);

    /// <summary>Appends entries to the saga log.</summary>
    ValueTask AppendSagaLogAsync(IReadOnlyList<SagaLogEntry> entries, CancellationToken cancellationToken);
}

/// <summary>
/// Optional read-only saga queries for the CLI and the dashboard, on the same object as the store: lookups by
/// transaction id, listings, counts and the saga log.
/// </summary>
public interface ISagaQueries
{
    /// <summary>The saga instance of <paramref name="transactionId"/>; <c>null</c> when there is none.</summary>
    ValueTask<SagaInstance?> GetSagaAsync(string transactionId, CancellationToken cancellationToken);

    /// <summary>Saga instances matching <paramref name="query"/>, most recently started first.</summary>
    ValueTask<IReadOnlyList<SagaInstance>> QuerySagasAsync(SagaQuery query, CancellationToken cancellationToken);

    /// <summary>Instances counted per definition, version and state.</summary>
    ValueTask<IReadOnlyList<SagaCount>> CountSagasAsync(CancellationToken cancellationToken);

    /// <summary>Everything that happened to the saga instance of <paramref name="transactionId"/>, oldest first.</summary>
    ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken);
}
