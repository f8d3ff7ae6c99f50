using Converge.Contracts;

namespace Converge.Storage;

/// <summary>The inbox, outside a transaction: forgetting what was handled long ago.</summary>
public interface IInboxStore : IStore
{
    /// <summary>
    /// Deletes inbox records handled before <paramref name="handledBefore"/>, in short transactions; returns how many.
    /// </summary>
    ValueTask<int> PurgeInboxAsync(DateTimeOffset handledBefore, CancellationToken cancellationToken);
}

/// <summary>The inbox's writes inside a <see cref="IStoreTransaction"/>: a handler's effects and the record that it ran commit together.</summary>
public interface IInboxTransaction
{
    /// <summary>
    /// Records that <paramref name="consumer"/> handled <paramref name="envelope"/> (its id, type, correlation and
    /// causation, which the flow view reads back); <c>false</c> when it already had.
    /// </summary>
    ValueTask<bool> TryRecordInboxAsync(string consumer, Envelope envelope, CancellationToken cancellationToken);

    /// <summary>
    /// Records several handled messages at once; element <c>i</c> tells whether <paramref name="envelopes"/>[i] was
    /// new (a message id repeated in the list is new only the first time). Stores that pay a round trip per statement
    /// override this with one statement; the default records one by one.
    /// </summary>
    async ValueTask<IReadOnlyList<bool>> TryRecordInboxAsync(string consumer, IReadOnlyList<Envelope> envelopes, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(envelopes);
        var recorded = new bool[envelopes.Count];
        for (var i = 0; i < envelopes.Count; i++)
        {
            recorded[i] = await TryRecordInboxAsync(consumer, envelopes[i], cancellationToken);
        }

        return recorded;
    }
}

/// <summary>
/// Optional: taking an inbox record back inside a transaction. With it, a consumer that gives each message of a batch a
/// savepoint of its own still records the batch's inbox entries in one statement before the handlers run, and forgets
/// the entry of a message whose handling it undoes; without it, each message records its entry under its savepoint
/// (a statement per message).
/// </summary>
public interface IInboxRemovalTransaction
{
    /// <summary>
    /// Removes the record that <paramref name="consumer"/> handled message <paramref name="messageId"/>, in this
    /// transaction, so the message is new again when the transaction commits; <c>false</c> when there was none. Other
    /// consumers' records of the message stay.
    /// </summary>
    ValueTask<bool> ForgetInboxAsync(string consumer, Guid messageId, CancellationToken cancellationToken);
}
