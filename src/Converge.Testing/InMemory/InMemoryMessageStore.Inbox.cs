using Converge.Contracts;
using Converge.Jobs;
using Converge.Storage;

namespace Converge.Testing.InMemory;

// The inbox and the dead letters.
public sealed partial class InMemoryMessageStore
{
    /// <inheritdoc />
    public ValueTask<IReadOnlyList<DeadLetter>> ListDeadLettersAsync(string? source, int max, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<DeadLetter>>([.. Committed.DeadLetters.Values.Reverse().Where(letter => source is null || letter.Source == source).Take(Math.Max(0, max))]);

    /// <inheritdoc />
    public async ValueTask<bool> RetryDeadLetterAsync(long id, CancellationToken cancellationToken) =>
        await WriteAsync(t => t.RetryDeadLetterAsync(id, cancellationToken), cancellationToken);

    /// <inheritdoc />
    public async ValueTask<bool> DiscardDeadLetterAsync(long id, CancellationToken cancellationToken) =>
        await WriteAsync(t => ValueTask.FromResult(t.DiscardDeadLetter(id)), cancellationToken);

    /// <inheritdoc />
    public async ValueTask<int> PurgeInboxAsync(DateTimeOffset handledBefore, CancellationToken cancellationToken) =>
        await WriteAsync(t => ValueTask.FromResult(t.PurgeInbox(handledBefore)), cancellationToken);
}

internal sealed partial class InMemoryStoreTransaction
{
    public ValueTask<bool> TryRecordInboxAsync(string consumer, Envelope envelope, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(consumer);
        ArgumentNullException.ThrowIfNull(envelope);
        var state = State;
        var key = (consumer, envelope.MessageId);
        if (state.Inbox.ContainsKey(key))
        {
            return ValueTask.FromResult(false);
        }

        var row = new MemoryInboxRow(consumer, envelope.MessageId, Now, envelope.MessageType, envelope.CorrelationId, envelope.CausationId, envelope.SentAt, JobRows.BatchOf(envelope));
        State = state with { Inbox = state.Inbox.Add(key, row) };
        return ValueTask.FromResult(true);
    }

    public ValueTask<bool> ForgetInboxAsync(string consumer, Guid messageId, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(consumer);
        var state = State;
        var key = (consumer, messageId);
        if (!state.Inbox.ContainsKey(key))
        {
            return ValueTask.FromResult(false);
        }

        State = state with { Inbox = state.Inbox.Remove(key) };
        return ValueTask.FromResult(true);
    }

    public int PurgeInbox(DateTimeOffset handledBefore)
    {
        var state = State;
        var purged = state.Inbox.Where(pair => pair.Value.HandledAt < handledBefore).Select(static pair => pair.Key).ToList();
        State = state with { Inbox = state.Inbox.RemoveRange(purged) };
        return purged.Count;
    }

    public ValueTask<bool> DeadLetterAsync(QueuedMessage message, string reason, string? exception, AttemptRecord? failure, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (Leased(message) is not { } row)
        {
            return ValueTask.FromResult(false);
        }

        Remove(row);

        // A keyed dead letter keeps its key, which it holds, and its place, where a retry puts it back.
        InsertDeadLetter(message.Queue, message.Envelope, message.Priority, reason, exception, message.Attempt, failure is null ? message.History : [.. message.History, failure], null, row.OrderingKey, row.OrderingSeq);
        return ValueTask.FromResult(true);
    }

    public ValueTask RecordDeadLetterAsync(DeadLetterRecord letter, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(letter);
        ArgumentException.ThrowIfNullOrEmpty(letter.Source);
        ArgumentException.ThrowIfNullOrEmpty(letter.Reason);
        InsertDeadLetter(letter.Source, letter.Envelope, letter.Priority, letter.Reason, letter.Exception, letter.Attempts, letter.History, letter.LogPosition);
        return ValueTask.CompletedTask;
    }

    void InsertDeadLetter(string source, Envelope envelope, int priority, string reason, string? exception, int attempts, IReadOnlyList<AttemptRecord> history, long? logPosition, string? orderingKey = null, long orderingSeq = 0)
    {
        var state = State;
        var id = state.LastDeadLetterId + 1;
        var letter = new DeadLetter
        {
            Id = id,
            Source = source,
            Envelope = envelope,
            Reason = reason,
            Exception = exception,
            Attempts = attempts,
            History = [.. history],
            DeadLetteredAt = Now,
            Priority = priority,
            LogPosition = logPosition,
            OrderingKey = orderingKey,
        };
        State = state with
        {
            DeadLetters = state.DeadLetters.Add(id, letter),
            LastDeadLetterId = id,
            DeadLetterPlaces = orderingKey is null ? state.DeadLetterPlaces : state.DeadLetterPlaces.SetItem(id, orderingSeq),
        };
    }

    public ValueTask<bool> RetryDeadLetterAsync(long id, CancellationToken cancellationToken)
    {
        if (!State.DeadLetters.TryGetValue(id, out var letter) || letter.LogPosition is not null)
        {
            return ValueTask.FromResult(false);
        }

        // Back on its queue with a fresh attempt count; a keyed one in its old place, ahead of the followers it held.
        var place = State.DeadLetterPlaces.TryGetValue(id, out var kept) ? kept : (long?)null;
        State = State with { DeadLetters = State.DeadLetters.Remove(id), DeadLetterPlaces = State.DeadLetterPlaces.Remove(id) };
        Insert(letter.Source, letter.Priority, null, 0, [], letter.Envelope, letter.OrderingKey, place);
        if (JobRows.BatchOf(letter.Envelope) is { } batchId)
        {
            // Counted as failed in its batch; pending again until it finishes anew. A finished batch stays as it ended.
            CountOutcomes(batchId, 0, -1);
        }

        return ValueTask.FromResult(true);
    }

    public bool DiscardDeadLetter(long id)
    {
        var state = State;
        if (!state.DeadLetters.ContainsKey(id))
        {
            return false;
        }

        State = state with { DeadLetters = state.DeadLetters.Remove(id), DeadLetterPlaces = state.DeadLetterPlaces.Remove(id) };
        return true;
    }
}
