using Converge.Diagnostics;
using Converge.Storage;
using Microsoft.Extensions.Logging;

namespace Converge.Runtime.GroupCommit;

/// <summary>
/// The group commit every queue consumer shares: writes the outcomes of a group of claimed messages in one store
/// transaction, with a savepoint per item when one may fail alone, removes the group's messages from the queue in one
/// statement, claims the next messages in the same commit, and reports what committed. It also waits for work and
/// backs off between claims, renews leases and hands messages back. What differs between consumers (how an item runs, what its outcome writes) is their
/// <see cref="IOutcomeWriter{TItem, TScratch}"/>.
/// </summary>
/// <remarks>Thread-safe: several groups of one queue may commit at once (on a store with parallel writers).</remarks>
internal sealed class GroupCommitter(IMessageStore store, string queue, ConvergeOptions options, ObserverSet observers, ILogger logger)
{
    readonly TimeSpan _leaseDuration = options.LeaseDuration;

    /// <summary>
    /// Waits after a claim found nothing: until the queue's next message becomes visible, a commit rings
    /// <paramref name="bell"/>, or <see cref="ConvergeOptions.PollInterval"/> passed. When a message is visible already
    /// (the claim's limits held it back), returns at once, or waits with <paramref name="whenHeldBack"/> when given
    /// (called with the poll interval).
    /// </summary>
    public async Task WaitForWorkAsync(Doorbell bell, Func<TimeSpan, CancellationToken, Task>? whenHeldBack, CancellationToken stopping)
    {
        var wait = options.PollInterval;
        var next = await store.NextVisibleAtAsync(queue, stopping);
        if (next is { } visibleAt)
        {
            var untilVisible = visibleAt - options.TimeProvider.GetUtcNow();
            if (untilVisible <= TimeSpan.Zero)
            {
                if (whenHeldBack is not null)
                {
                    await whenHeldBack(wait, stopping);
                }

                return;
            }

            wait = untilVisible < wait ? untilVisible : wait;
        }

        await bell.WaitAsync(wait, options.TimeProvider, stopping);
    }

    /// <summary>
    /// After the <paramref name="failures"/>-th claim in a row failed with <paramref name="exception"/>: counts and logs
    /// it, and waits the retry backoff before the next claim.
    /// </summary>
    /// <returns><c>false</c> when <paramref name="stopping"/> cut the wait short.</returns>
    public Task<bool> BackOffAsync(Exception exception, int failures, CancellationToken stopping)
    {
        ConvergeDiagnostics.ConsumerErrors.Add(1);
        var delay = options.Retry.DelayBefore(failures + 1, options.Random.NextDouble());
        Log.ClaimFailed(logger, exception, queue, delay);
        return PauseAsync(delay, stopping);
    }

    /// <summary>Waits <paramref name="delay"/> on the options' clock; <c>false</c> when <paramref name="stopping"/> cut it short.</summary>
    public async Task<bool> PauseAsync(TimeSpan delay, CancellationToken stopping)
    {
        try
        {
            await Task.Delay(delay, options.TimeProvider, stopping);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>
    /// Commits <paramref name="group"/>: a <see cref="IOutcomeWriter{TItem, TScratch}.Replayable"/> group first at once,
    /// then, when any item fails to apply or a lease was lost, again with a savepoint per item; any other group with a
    /// savepoint per item from the start. Reports the committed outcomes (metrics, observers).
    /// </summary>
    /// <param name="writer">What the items' outcomes write.</param>
    /// <param name="group">The items to commit.</param>
    /// <param name="begun">A transaction already begun for the group, or <c>null</c>; disposed here.</param>
    /// <param name="cancellationToken">Cancels the group's writes (never its commit).</param>
    /// <returns>Item i's outcome at i; <c>null</c> where its lease was lost and nothing of it committed.</returns>
    /// <exception cref="LeasesLostException">A group that is not replayable lost a lease: nothing committed.</exception>
    /// <remarks>When this throws, nothing of the group committed; the caller hands its messages back.</remarks>
    public async Task<HandlingOutcome?[]> CommitAsync<TItem, TScratch>(IOutcomeWriter<TItem, TScratch> writer, IReadOnlyList<TItem> group, IStoreTransaction? begun, CancellationToken cancellationToken)
    {
        var outcomes = new HandlingOutcome?[group.Count];
        if (writer.Replayable)
        {
            if (!await TryCommitAsync(writer, group, outcomes, begun, isolated: false, cancellationToken))
            {
                await TryCommitAsync(writer, group, outcomes, null, isolated: true, cancellationToken);
            }
        }
        else
        {
            await TryCommitAsync(writer, group, outcomes, begun, isolated: true, cancellationToken);
        }

        for (var i = 0; i < group.Count; i++)
        {
            if (outcomes[i] is { } outcome)
            {
                ConvergeDiagnostics.CountHandled(queue, outcome);
                if (observers.Any)
                {
                    observers.Handled(writer.MessageOf(group[i]).Envelope, queue, outcome);
                }
            }
        }

        return outcomes;
    }

    /// <returns><c>false</c> when a replayable group failed to apply while not <paramref name="isolated"/> (nothing was committed).</returns>
    async Task<bool> TryCommitAsync<TItem, TScratch>(IOutcomeWriter<TItem, TScratch> writer, IReadOnlyList<TItem> group, HandlingOutcome?[] outcomes, IStoreTransaction? begun, bool isolated, CancellationToken cancellationToken)
    {
        // Only a replayable group may give up and try again isolated; any other failure is the caller's.
        var retryable = writer.Replayable && !isolated;
        var scratch = writer.NewScratch();
        var transaction = begun ?? await store.BeginAsync(cancellationToken);
        try
        {
            // The group's inbox records and its removals from the queue are one statement each (a store that pays a
            // round trip per statement spends most of a no-op item's commit on those two). An isolated replay removes
            // each item on its own, so one lost lease costs only that item.
            bool?[]? recordedInbox;
            var completions = retryable || !writer.Replayable ? new List<QueuedMessage>(group.Count) : null;
            if (retryable)
            {
                try
                {
                    recordedInbox = await writer.RecordInboxAsync(transaction, group, cancellationToken);
                }
                catch (Exception exception) when (exception is not OperationCanceledException)
                {
                    return false;
                }
            }
            else
            {
                recordedInbox = StoreContracts.Find<IInboxRemovalTransaction>(transaction) is not null
                    ? await RecordInboxAheadAsync(writer, transaction, group, cancellationToken)
                    : null;
            }

            for (var i = 0; i < group.Count; i++)
            {
                var item = group[i];
                if (!isolated)
                {
                    try
                    {
                        outcomes[i] = await writer.ApplyAsync(transaction, item, scratch, recordedInbox?[i], completions, cancellationToken);
                    }
                    catch (Exception exception) when (!writer.Abandons(exception) && !cancellationToken.IsCancellationRequested)
                    {
                        // An item failed: the isolated pass finds which. An abandoned handler still holds the
                        // transaction, and a stop is the group's: those are not retried.
                        return false;
                    }

                    if (outcomes[i] is null)
                    {
                        return false;
                    }
                }
                else
                {
                    outcomes[i] = await ApplyIsolatedAsync(writer, transaction, group, i, scratch, recordedInbox, completions, cancellationToken);
                }

                writer.Applied(item);
            }

            // A lease lost meanwhile (the group outlived it and another consumer claimed a message): a replayable
            // group finds which in an isolated pass and commits the others; any other undoes the whole group rather
            // than commit effects someone else now owns.
            if (completions is { Count: > 0 })
            {
                int completed;
                try
                {
                    completed = await transaction.CompleteAsync(completions, cancellationToken);
                }
                catch (Exception exception) when (retryable && exception is not OperationCanceledException)
                {
                    return false;
                }

                if (completed != completions.Count)
                {
                    return retryable ? false : throw new LeasesLostException(completions.Count - completed);
                }
            }

            // Writes the store held back went with the removals when those were a statement; otherwise (none, or a
            // broker's acknowledgements after the commit) they are sent here, where a failure is still the group's to
            // replay rather than its commit's.
            if (retryable && StoreContracts.Find<IDatabaseTransaction>(transaction) is { } database)
            {
                try
                {
                    await database.FlushWritesAsync(cancellationToken);
                }
                catch (Exception exception) when (exception is not OperationCanceledException)
                {
                    return false;
                }
            }

            // The slots these items held free up with this commit: fill them in the same transaction, in a savepoint
            // of its own: a claim that fails must not undo the outcomes it rides with.
            IReadOnlyList<QueuedMessage> next = [];
            var plan = writer.PlanClaim(group.Count);
            if (plan is { } claim)
            {
                await transaction.SavepointAsync(cancellationToken);
                try
                {
                    next = await transaction.ClaimAsync(queue, claim.Count, _leaseDuration, claim.Policy, cancellationToken);
                    await transaction.ReleaseSavepointAsync(cancellationToken);
                }
                catch (Exception exception) when (exception is not OperationCanceledException)
                {
                    await transaction.RollbackToSavepointAsync(cancellationToken);
                    Log.ClaimFailed(logger, exception, queue, TimeSpan.Zero);
                }
            }

            await writer.BeforeCommitAsync(transaction, scratch, cancellationToken);
            await transaction.CommitAsync(CancellationToken.None);
            if (next.Count > 0)
            {
                writer.Claimed(next, plan!.Value);
            }

            return true;
        }
        catch (Exception exception) when (writer.Abandons(exception))
        {
            // Roll back now, releasing the write lock, while whatever ran the item may still hold the transaction.
            await transaction.AbandonAsync();
            throw;
        }
        finally
        {
            await transaction.DisposeAsync();
        }
    }

    /// <summary>
    /// Records the inbox entries of an isolated group in one statement before its first item, under a savepoint of its
    /// own, on a store that can take an entry back (<see cref="IInboxRemovalTransaction"/>): they stand outside the
    /// items' savepoints, so an item whose writes are undone forgets its entry (<see cref="ApplyIsolatedAsync"/>). On
    /// PostgreSQL that saves each item a round trip. When the statement fails, nothing is lost: each item records its
    /// own entry under its savepoint instead, and a failure there is that item's.
    /// </summary>
    /// <returns>Item i's entry was new, was there already, or (<c>null</c>) is the item's to record.</returns>
    async ValueTask<bool?[]?> RecordInboxAheadAsync<TItem, TScratch>(IOutcomeWriter<TItem, TScratch> writer, IStoreTransaction transaction, IReadOnlyList<TItem> group, CancellationToken cancellationToken)
    {
        await transaction.SavepointBeforeNextAsync(cancellationToken);
        try
        {
            var recorded = await writer.RecordInboxAsync(transaction, group, cancellationToken);
            await transaction.ReleaseSavepointAsync(cancellationToken);
            return recorded;
        }
        catch (Exception exception) when (exception is not OperationCanceledException)
        {
            await transaction.RollbackToSavepointAsync(cancellationToken);
            Log.InboxAheadFailed(logger, exception, queue, group.Count);
            return null;
        }
    }

    /// <summary>
    /// Applies item <paramref name="index"/> of <paramref name="group"/> under a savepoint of its own, so its failure
    /// undoes only its writes. The savepoint may go with the item's first statement
    /// (<see cref="IStoreTransaction.SavepointBeforeNextAsync"/>): a writer flushes before anything else uses the
    /// transaction. <paramref name="recordedInbox"/> holds what the group's statement recorded before the items'
    /// savepoints (<c>null</c> when it did not run): undoing an item whose entry it made new forgets the entry too, or a
    /// later delivery would be taken for a duplicate.
    /// </summary>
    async ValueTask<HandlingOutcome?> ApplyIsolatedAsync<TItem, TScratch>(IOutcomeWriter<TItem, TScratch> writer, IStoreTransaction transaction, IReadOnlyList<TItem> group, int index, TScratch scratch, bool?[]? recordedInbox, List<QueuedMessage>? completions, CancellationToken cancellationToken)
    {
        var item = group[index];
        var completing = completions?.Count ?? 0;
        await transaction.SavepointBeforeNextAsync(cancellationToken);
        HandlingOutcome? outcome;
        try
        {
            outcome = await writer.ApplyAsync(transaction, item, scratch, recordedInbox?[index], completions, cancellationToken);
            if (outcome is null)
            {
                await transaction.RollbackToSavepointAsync(cancellationToken);
                await ForgetInboxAsync(writer, transaction, group, index, recordedInbox, cancellationToken);
            }
            else
            {
                // A store that held the item's writes sends them here at the latest, so their failure is still the item's.
                await transaction.ReleaseSavepointAsync(cancellationToken);
            }
        }
        catch (Exception exception) when (writer.FailsAlone(item, exception))
        {
            // Its handler, or its recorded effects, failed (a constraint, a bad statement): that is the item failing. A
            // removal it asked for goes with the rest of its writes.
            completions?.RemoveRange(completing, completions.Count - completing);
            await transaction.RollbackToSavepointAsync(cancellationToken);
            await ForgetInboxAsync(writer, transaction, group, index, recordedInbox, cancellationToken);
            await transaction.SavepointBeforeNextAsync(cancellationToken);
            outcome = await writer.ApplyFailedAsync(transaction, item, exception, scratch, cancellationToken);
            await transaction.ReleaseSavepointAsync(cancellationToken);
        }

        return outcome;
    }

    /// <summary>
    /// Takes back the inbox entry that the group's statement made for item <paramref name="index"/>, when it made one.
    /// A later copy of the same message in the group was told the entry existed because this item made it: it records
    /// its own under its savepoint instead, so it is handled rather than dropped as a duplicate.
    /// </summary>
    async ValueTask ForgetInboxAsync<TItem, TScratch>(IOutcomeWriter<TItem, TScratch> writer, IStoreTransaction transaction, IReadOnlyList<TItem> group, int index, bool?[]? recordedInbox, CancellationToken cancellationToken)
    {
        if (recordedInbox?[index] != true)
        {
            return;
        }

        var messageId = writer.MessageOf(group[index]).Envelope.MessageId;
        await StoreContracts.Require<IInboxRemovalTransaction>(transaction, "Inbox entries recorded ahead").ForgetInboxAsync(queue, messageId, cancellationToken);
        for (var later = index + 1; later < group.Count; later++)
        {
            if (recordedInbox[later] == false && writer.MessageOf(group[later]).Envelope.MessageId == messageId)
            {
                recordedInbox[later] = null;
            }
        }
    }

    /// <summary>
    /// Extends the leases of <paramref name="messages"/>, so work that outlives a third of its lease is not delivered
    /// again meanwhile. A failure is logged and reported as <c>false</c>: losing a renewal only risks a second delivery,
    /// which the inbox absorbs.
    /// </summary>
    public async Task<bool> RenewQuietlyAsync(IReadOnlyList<QueuedMessage> messages)
    {
        try
        {
            await store.RenewLeasesAsync(messages, _leaseDuration, CancellationToken.None);
            return true;
        }
        catch (Exception exception)
        {
            ConvergeDiagnostics.ConsumerErrors.Add(1);
            Log.RenewalFailed(logger, exception, queue, messages.Count);
            return false;
        }
    }

    /// <summary>
    /// Hands leased messages back to the queue, counting the attempt or not (a stop that never ran them does not); a
    /// failure is logged and otherwise ignored, because the leases expire and the messages are delivered again then.
    /// </summary>
    public Task HandBackAsync(IReadOnlyList<QueuedMessage> messages, bool countAttempt) =>
        QueueOutcomes.ReleaseQuietlyAsync(store, messages, countAttempt, logger, queue);
}
