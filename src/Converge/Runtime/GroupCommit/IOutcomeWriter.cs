using Converge.Storage;

namespace Converge.Runtime.GroupCommit;

/// <summary>
/// What a consumer contributes to <see cref="GroupCommitter"/>: how one claimed item's outcome is written in the group's
/// transaction, and what the group writes besides. The committer owns the rest: the transaction, savepoints, the
/// group's removals from the queue, the claim of the next items in the same commit, and reporting the outcomes.
/// </summary>
/// <typeparam name="TItem">A claimed message with what the consumer knows of it (its handler, or its job's result).</typeparam>
/// <typeparam name="TScratch">What one attempt at committing a group collects (for example counters), new for every attempt.</typeparam>
internal interface IOutcomeWriter<TItem, TScratch>
{
    /// <summary>
    /// Whether <see cref="ApplyAsync"/> may run twice for one item because it only replays what ran before (a job's
    /// recorded effects). Then a group is written at once without savepoints, and only when that fails again with a
    /// savepoint per item. When <c>false</c> (a message handler runs inside the transaction), every item has its
    /// savepoint from the start, and a lease lost at the group's removal undoes the group
    /// (<see cref="LeasesLostException"/>).
    /// </summary>
    bool Replayable { get; }

    /// <summary>The claimed message <paramref name="item"/> stands for.</summary>
    QueuedMessage MessageOf(TItem item);

    /// <summary>A new scratch for one attempt at committing a group.</summary>
    TScratch NewScratch();

    /// <summary>
    /// Records the inbox entries of the group in one call, before any item is applied, when that saves statements;
    /// element i is item i's (<c>null</c>: the item records its own). Only called on a first, not isolated, attempt of
    /// a <see cref="Replayable"/> group. Returns <c>null</c> when nothing was recorded.
    /// </summary>
    ValueTask<bool?[]?> RecordInboxAsync(IStoreTransaction transaction, IReadOnlyList<TItem> group, CancellationToken cancellationToken);

    /// <summary>
    /// Writes <paramref name="item"/>'s outcome in <paramref name="transaction"/>, collecting what the group writes at
    /// its end in <paramref name="scratch"/>. <paramref name="recordedInbox"/> tells whether its inbox record was new,
    /// when <see cref="RecordInboxAsync"/> recorded it already. Its removal from the queue goes to
    /// <paramref name="completions"/> when given (the committer removes them all in one statement), or is done at once.
    /// </summary>
    /// <remarks>
    /// An isolated item runs under a savepoint the store may hold back until its next statement: before anything
    /// outside the store uses <paramref name="transaction"/> (a handler), call <see cref="IStoreTransaction.FlushAsync"/>.
    /// The same holds for <see cref="ApplyFailedAsync"/>.
    /// </remarks>
    /// <returns>The outcome, or <c>null</c> when the lease was lost and nothing of this item may commit.</returns>
    ValueTask<HandlingOutcome?> ApplyAsync(IStoreTransaction transaction, TItem item, TScratch scratch, bool? recordedInbox, List<QueuedMessage>? completions, CancellationToken cancellationToken);

    /// <summary>
    /// Whether <paramref name="exception"/>, thrown by <see cref="ApplyAsync"/> under the item's own savepoint, is that
    /// item failing (it is undone and written with <see cref="ApplyFailedAsync"/>) rather than the group's (it is undone).
    /// </summary>
    bool FailsAlone(TItem item, Exception exception);

    /// <summary>Writes the failed attempt of <paramref name="item"/> after its <see cref="ApplyAsync"/> threw <paramref name="exception"/>.</summary>
    /// <returns>The outcome, or <c>null</c> when the lease was lost and nothing was recorded.</returns>
    ValueTask<HandlingOutcome?> ApplyFailedAsync(IStoreTransaction transaction, TItem item, Exception exception, TScratch scratch, CancellationToken cancellationToken);

    /// <summary>Called after each item is applied; throws <see cref="LeasesLostException"/> when the group's leases are known lost.</summary>
    void Applied(TItem item);

    /// <summary>How many items to claim in the group's commit, and how; <c>null</c> for none.</summary>
    /// <param name="committing">How many items the commit finishes.</param>
    ClaimPlan? PlanClaim(int committing);

    /// <summary>Writes what the group collected in <paramref name="scratch"/>, last before the commit.</summary>
    ValueTask BeforeCommitAsync(IStoreTransaction transaction, TScratch scratch, CancellationToken cancellationToken);

    /// <summary>Whether the transaction is abandoned (<see cref="IStoreTransaction.AbandonAsync"/>) rather than disposed when <paramref name="exception"/> ends it.</summary>
    bool Abandons(Exception exception);

    /// <summary>Takes the items claimed by the commit of a group, once it committed.</summary>
    void Claimed(IReadOnlyList<QueuedMessage> claimed, ClaimPlan plan);
}

/// <summary>
/// A claim made in a group's commit: up to <paramref name="Count"/> messages under <paramref name="Policy"/>;
/// <paramref name="OldestFirst"/> tells whether the policy takes the oldest first (the consumer counts its claims by order).
/// </summary>
internal readonly record struct ClaimPlan(int Count, ClaimPolicy Policy, bool OldestFirst);

/// <summary>Leases of a group expired and other consumers took its messages: the group was undone.</summary>
internal sealed class LeasesLostException(int lost) : Exception($"{lost} message(s) of the batch were claimed by another consumer after their leases expired; the batch was undone and the rest handed back.")
{
    /// <summary>How many messages were found lost.</summary>
    public int Lost { get; } = lost;
}
