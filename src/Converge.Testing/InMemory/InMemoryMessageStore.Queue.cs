using System.Collections.Immutable;
using Converge.Contracts;
using Converge.Storage;

namespace Converge.Testing.InMemory;

// The queue: enqueue, claim under a lease within a claim policy, renew, complete, retry later, release, dead-letter.
public sealed partial class InMemoryMessageStore
{
    /// <inheritdoc />
    public ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken) =>
        ClaimAsync(queue, max, lease, ClaimPolicy.Default, cancellationToken);

    /// <inheritdoc />
    public async ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken)
    {
        ClaimLimits.Validate(policy);

        // A look at the committed state first: an idle poll never takes the write gate.
        var now = Now;
        if (!Committed.RowsOf(queue).Values.Any(row => row.VisibleAt <= now))
        {
            return [];
        }

        return await WriteAsync(t => t.ClaimAsync(queue, max, lease, policy, cancellationToken), cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<DateTimeOffset?> NextVisibleAtAsync(string queue, CancellationToken cancellationToken)
    {
        // Rows an ordering key holds back are left out: waking for them would find nothing to claim.
        var state = Committed;
        var claimable = state.ClaimableRows(queue).ToList();
        return ValueTask.FromResult(claimable.Count == 0 ? null : (DateTimeOffset?)claimable.Min(static row => row.VisibleAt));
    }

    /// <inheritdoc />
    public async ValueTask<int> RenewLeasesAsync(IReadOnlyList<QueuedMessage> messages, TimeSpan lease, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        return await WriteAsync(t => ValueTask.FromResult(t.RenewLeases(messages, lease)), cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> messages, bool countAttempt, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        await WriteAsync(t => ValueTask.FromResult(t.Release(messages, countAttempt)), cancellationToken);
    }
}

internal sealed partial class InMemoryStoreTransaction
{
    long Insert(string queue, int priority, DateTimeOffset? dueAt, int attempts, ImmutableList<AttemptRecord> history, Contracts.Envelope envelope, string? orderingKey = null, long? orderingSeq = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(queue);
        ArgumentNullException.ThrowIfNull(envelope);
        var state = State;
        var now = Now;
        var id = state.LastQueueId + 1;
        var place = orderingKey is null ? 0 : orderingSeq ?? state.NextPlace(queue, orderingKey);
        var row = new MemoryQueueRow(id, queue, priority, dueAt is { } due && due > now ? due : now, attempts, null, history, envelope, orderingKey, place);
        State = state.WithRows(queue, state.RowsOf(queue).Add(id, row)) with { LastQueueId = id };
        RingOnCommit(queue);
        return id;
    }

    public ValueTask EnqueueAsync(OutgoingMessage message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentOutOfRangeException.ThrowIfNegative(message.Attempts);
        Insert(message.Queue, message.Priority, message.DueAt, message.Attempts, [.. message.History], message.Envelope,
            message.OrderingKey is null ? null : Runtime.SendOptions.ValidateOrderingKey(message.OrderingKey));
        return ValueTask.CompletedTask;
    }

    public ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken)
    {
        ClaimLimits.Validate(policy);
        var state = State;
        var now = Now;
        var rows = state.RowsOf(queue);
        var allowed = max;
        if (policy.MaxInFlight is { } maxInFlight)
        {
            allowed = (int)Math.Min(allowed, maxInFlight - rows.Values.LongCount(row => row.LeaseToken is not null && row.VisibleAt > now));
        }

        if (policy.RateLimit is { } rate)
        {
            var (tokens, refilledAt) = ClaimLimits.Refill(state.RateLimits.TryGetValue(queue, out var bucket) ? bucket : null, rate, now);
            allowed = Math.Min(allowed, ClaimLimits.Permits(tokens));
            var taken = allowed > 0 ? Math.Min(allowed, rows.Values.Count(row => row.VisibleAt <= now)) : 0;
            state = state with { RateLimits = state.RateLimits.SetItem(queue, (Math.Max(0, tokens - taken), refilledAt)) };
        }

        if (allowed <= 0)
        {
            State = state;
            return ValueTask.FromResult<IReadOnlyList<QueuedMessage>>([]);
        }

        var visible = state.ClaimableRows(queue).Where(row => row.VisibleAt <= now);
        var chosen = (policy.OldestFirst
                ? visible.OrderBy(static row => row.VisibleAt).ThenBy(static row => row.Id)
                : visible.OrderByDescending(static row => row.Priority).ThenBy(static row => row.VisibleAt).ThenBy(static row => row.Id))
            .Take(allowed)
            .ToList();
        var token = Guid.NewGuid();
        var builder = rows.ToBuilder();
        var claimed = new List<QueuedMessage>(chosen.Count);
        foreach (var row in chosen)
        {
            var leased = row with { VisibleAt = now + lease, LeaseToken = token, Attempts = row.Attempts + 1 };
            builder[row.Id] = leased;
            claimed.Add(leased.ToMessage());
        }

        State = state.WithRows(queue, builder.ToImmutable());
        claimed.Sort(static (a, b) => a.Priority != b.Priority ? b.Priority.CompareTo(a.Priority) : a.Id.CompareTo(b.Id));
        return ValueTask.FromResult<IReadOnlyList<QueuedMessage>>(claimed);
    }

    /// <summary>The row of <paramref name="message"/> if its lease token is still the one it was claimed with.</summary>
    MemoryQueueRow? Leased(QueuedMessage message) =>
        State.RowsOf(message.Queue).TryGetValue(message.Id, out var row) && row.LeaseToken == message.LeaseToken ? row : null;

    void Replace(MemoryQueueRow row) => State = State.WithRows(row.Queue, State.RowsOf(row.Queue).SetItem(row.Id, row));

    void Remove(MemoryQueueRow row) => State = State.WithRows(row.Queue, State.RowsOf(row.Queue).Remove(row.Id));

    public int RenewLeases(IReadOnlyList<QueuedMessage> messages, TimeSpan lease)
    {
        var until = Now + lease;
        var renewed = 0;
        foreach (var message in messages)
        {
            if (Leased(message) is { } row)
            {
                Replace(row with { VisibleAt = until });
                renewed++;
            }
        }

        return renewed;
    }

    public int Release(IReadOnlyList<QueuedMessage> messages, bool countAttempt)
    {
        var now = Now;
        var released = 0;
        foreach (var message in messages)
        {
            if (Leased(message) is { } row)
            {
                Replace(row with { VisibleAt = now, LeaseToken = null, Attempts = row.Attempts - (countAttempt ? 0 : 1) });
                RingOnCommit(row.Queue);
                released++;
            }
        }

        return released;
    }

    public ValueTask<bool> CompleteAsync(QueuedMessage message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (Leased(message) is not { } row)
        {
            return ValueTask.FromResult(false);
        }

        Remove(row);
        return ValueTask.FromResult(true);
    }

    public ValueTask<bool> RetryLaterAsync(QueuedMessage message, DateTimeOffset dueAt, AttemptRecord failure, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(failure);
        if (Leased(message) is not { } row)
        {
            return ValueTask.FromResult(false);
        }

        // The history travels with the message, as the SQL stores write it from the claimed copy.
        Replace(row with { VisibleAt = dueAt, LeaseToken = null, History = [.. message.History, failure] });
        return ValueTask.FromResult(true);
    }

    public ValueTask<bool> CancelScheduledAsync(string queue, Guid messageId, DateTimeOffset dueAt, CancellationToken cancellationToken)
    {
        var row = State.RowsOf(queue).Values.FirstOrDefault(row => row.VisibleAt == dueAt && row.Envelope.MessageId == messageId && row.LeaseToken is null);
        if (row is null)
        {
            return ValueTask.FromResult(false);
        }

        Remove(row);
        return ValueTask.FromResult(true);
    }
}
