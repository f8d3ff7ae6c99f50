namespace Converge.Storage;

/// <summary>
/// Retries and discards of several dead letters at once, for the dashboard and the CLI: a selection of ids, or every
/// dead letter of a (reason, source) group. Each dead letter goes through <see cref="IQueueStore.RetryDeadLetterAsync"/>
/// or <see cref="IQueueStore.DiscardDeadLetterAsync"/> in a transaction of its own, oldest first, so retried messages
/// go back in the order they failed, a keyed one takes back its place in its key, and a failure half-way leaves
/// every dead letter either acted on or untouched.
/// </summary>
public static class DeadLetterActions
{
    // Ids are gathered a page at a time: a group of a hundred thousand costs that many ids in memory, not letters.
    const int GatherPage = 1000;

    /// <summary>
    /// Moves the dead letters <paramref name="ids"/> back onto their queues with a fresh attempt count, oldest (lowest
    /// id) first. Ids that are gone, and parked log events (they have no queue), are skipped and reported.
    /// </summary>
    public static Task<DeadLetterActionOutcome> RetryDeadLettersAsync(this IMessageStore store, IReadOnlyCollection<long> ids, CancellationToken cancellationToken) =>
        ActAsync(store, ids, retry: true, cancellationToken);

    /// <summary>Deletes the dead letters <paramref name="ids"/>, oldest first; ids that are gone are skipped and reported.</summary>
    public static Task<DeadLetterActionOutcome> DiscardDeadLettersAsync(this IMessageStore store, IReadOnlyCollection<long> ids, CancellationToken cancellationToken) =>
        ActAsync(store, ids, retry: false, cancellationToken);

    /// <summary>
    /// Retries every dead letter of <paramref name="reason"/> from <paramref name="source"/> that exists when the call
    /// starts, oldest first (see <see cref="RetryDeadLettersAsync"/>). One that fails again while the call runs comes
    /// back as a new dead letter and is not retried twice. Needs <see cref="IDeadLetterQueries"/>.
    /// </summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="IDeadLetterQueries"/>.</exception>
    public static async Task<DeadLetterActionOutcome> RetryDeadLetterGroupAsync(this IMessageStore store, string reason, string source, CancellationToken cancellationToken) =>
        await ActAsync(store, await GroupIdsAsync(store, reason, source, cancellationToken), retry: true, cancellationToken);

    /// <summary>
    /// Discards every dead letter of <paramref name="reason"/> from <paramref name="source"/> that exists when the call
    /// starts. Needs <see cref="IDeadLetterQueries"/>.
    /// </summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="IDeadLetterQueries"/>.</exception>
    public static async Task<DeadLetterActionOutcome> DiscardDeadLetterGroupAsync(this IMessageStore store, string reason, string source, CancellationToken cancellationToken) =>
        await ActAsync(store, await GroupIdsAsync(store, reason, source, cancellationToken), retry: false, cancellationToken);

    static async Task<List<long>> GroupIdsAsync(IMessageStore store, string reason, string source, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(reason);
        ArgumentNullException.ThrowIfNull(source);
        var queries = store.DeadLetterQueries();
        var ids = new List<long>();
        string? after = null;
        do
        {
            var page = await queries.ListDeadLettersAsync(new DeadLetterQuery { Reason = reason, Source = source, After = after, Max = GatherPage }, cancellationToken);
            ids.AddRange(page.Items.Select(static letter => letter.Id));
            after = page.Next;
        }
        while (after is not null);

        return ids;
    }

    static async Task<DeadLetterActionOutcome> ActAsync(IMessageStore store, IReadOnlyCollection<long> ids, bool retry, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(ids);
        var done = new List<long>();
        var skipped = new List<SkippedDeadLetter>();
        foreach (var id in ids.Distinct().Order())
        {
            if (retry ? await store.RetryDeadLetterAsync(id, cancellationToken) : await store.DiscardDeadLetterAsync(id, cancellationToken))
            {
                done.Add(id);
                continue;
            }

            // Only a retry can fail for a letter that is still there: it is a parked event, which has no queue.
            var parked = retry
                && StoreContracts.Find<IDeadLetterQueries>(store) is { } queries
                && await queries.GetDeadLetterAsync(id, cancellationToken) is { LogPosition: not null };
            skipped.Add(new SkippedDeadLetter(id, parked ? DeadLetterSkipReason.ParkedEvent : DeadLetterSkipReason.NotFound));
        }

        return new DeadLetterActionOutcome(done, skipped);
    }
}

/// <summary>What a retry or discard of several dead letters did.</summary>
/// <param name="Done">The ids retried or discarded, in the order they were.</param>
/// <param name="Skipped">The ids left alone, and why.</param>
public sealed record DeadLetterActionOutcome(IReadOnlyList<long> Done, IReadOnlyList<SkippedDeadLetter> Skipped);

/// <summary>A dead letter a retry or discard of several left alone.</summary>
/// <param name="Id">Its id.</param>
/// <param name="Reason">Why.</param>
public sealed record SkippedDeadLetter(long Id, DeadLetterSkipReason Reason);

/// <summary>Why a retry or discard of several dead letters left one alone.</summary>
public enum DeadLetterSkipReason
{
    /// <summary>There is no dead letter with the id (never was, or someone else retried or discarded it first).</summary>
    NotFound,

    /// <summary>It is a log event a consumer group parked: it has no queue to go back to. Handle it by hand, then discard it.</summary>
    ParkedEvent,
}
