namespace Converge.Storage;

/// <summary>
/// Optional record of what operators did to the store (retried a dead letter, resumed a saga, cancelled a job), on the
/// same object as the store: who, what, to what, when. The dashboard records every action it takes; the CLI records
/// its write commands when the store offers it. Reach it with <see cref="OperatorLogExtensions.OperatorLog(IStore)"/>;
/// inside a transaction, record with <see cref="IOperatorLogTransaction"/> so the record commits with the action.
/// </summary>
public interface IOperatorLog
{
    /// <summary>Records <paramref name="action"/> in a transaction of its own; returns the id it was stored under.</summary>
    ValueTask<long> RecordAsync(OperatorAction action, CancellationToken cancellationToken);

    /// <summary>
    /// Recorded actions, newest (highest id) first, whatever their <see cref="OperatorAction.At"/>, after <paramref name="after"/> (the <see cref="Page{T}.Next"/> of
    /// the previous page; <c>null</c> for the newest), at most <paramref name="max"/>.
    /// </summary>
    ValueTask<Page<OperatorAction>> ListAsync(string? after, int max, CancellationToken cancellationToken);
}

/// <summary>
/// Optional operator log inside a transaction, on the same object as the store's <c>IStoreTransaction</c>: the record
/// commits or rolls back with the action it describes.
/// </summary>
public interface IOperatorLogTransaction
{
    /// <summary>Records <paramref name="action"/> in this transaction; returns the id it was stored under.</summary>
    ValueTask<long> RecordOperatorActionAsync(OperatorAction action, CancellationToken cancellationToken);
}

/// <summary>One thing an operator did.</summary>
public sealed record OperatorAction
{
    /// <summary>The store's id of the record; 0 before it is stored. Ids grow: a later record has a higher one.</summary>
    public long Id { get; init; }

    /// <summary>When it was done, by the caller's clock (the options' <see cref="TimeProvider"/>).</summary>
    public required DateTimeOffset At { get; init; }

    /// <summary>Who did it: a user name as the dashboard's sign-in or the operating system knows it.</summary>
    public required string Actor { get; init; }

    /// <summary>What was done, as a stable dotted name such as <c>dead-letters.retry</c> (see <see cref="OperatorActions"/>).</summary>
    public required string Action { get; init; }

    /// <summary>What it was done to, such as <c>dead-letter:42</c>, <c>saga:order-7</c> or <c>dead-letters:max-attempts-exceeded@orders</c>.</summary>
    public required string Target { get; init; }

    /// <summary>Anything more: what was selected, the outcome, a note the operator gave; <c>null</c> when nothing.</summary>
    public string? Detail { get; init; }
}

/// <summary>The action names Converge's own tools record. Stable strings: the dashboard filters by them.</summary>
public static class OperatorActions
{
    /// <summary>Dead letters were put back on their queues.</summary>
    public const string RetryDeadLetters = "dead-letters.retry";

    /// <summary>Dead letters were deleted.</summary>
    public const string DiscardDeadLetters = "dead-letters.discard";

    /// <summary>A stuck saga was resumed.</summary>
    public const string ResumeSaga = "sagas.resume";

    /// <summary>A job was cancelled.</summary>
    public const string CancelJob = "jobs.cancel";

    /// <summary>A job was retried from the dead letters.</summary>
    public const string RetryJob = "jobs.retry";

    /// <summary>A consumer group was paused or resumed.</summary>
    public const string PauseGroup = "groups.pause";
}

/// <summary>Finds the optional operator log on a store or a transaction.</summary>
public static class OperatorLogExtensions
{
    /// <summary><paramref name="store"/>'s operator log.</summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="IOperatorLog"/>.</exception>
    public static IOperatorLog OperatorLog(this IStore store) => StoreContracts.Require<IOperatorLog>(store, "The operator log");

    /// <summary><paramref name="transaction"/>'s operator log.</summary>
    /// <exception cref="NotSupportedException">The store's transactions do not offer <see cref="IOperatorLogTransaction"/>.</exception>
    public static IOperatorLogTransaction OperatorLog(this IStoreTransaction transaction) => StoreContracts.Require<IOperatorLogTransaction>(transaction, "The operator log");
}
