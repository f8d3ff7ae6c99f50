using Converge.Storage;

namespace Converge.Testing.InMemory;

// Dead-letter pages and groups, and the operator log: what a dashboard reads and records.
public sealed partial class InMemoryMessageStore
{
    /// <inheritdoc />
    public ValueTask<Page<DeadLetter>> ListDeadLettersAsync(DeadLetterQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (query.Max <= 0)
        {
            return ValueTask.FromResult(new Page<DeadLetter>([], null));
        }

        var (afterTicks, afterId) = query.After is { } after ? PageCursor.ParseNumbered(after) : (long.MaxValue, long.MaxValue);
        var letters = Committed.DeadLetters.Values
            .Where(letter => (query.Source is null || letter.Source == query.Source)
                && (query.Reason is null || letter.Reason == query.Reason)
                && (query.OrderingKey is null || letter.OrderingKey == query.OrderingKey)
                && (letter.DeadLetteredAt.UtcTicks < afterTicks || (letter.DeadLetteredAt.UtcTicks == afterTicks && letter.Id < afterId)))
            .OrderByDescending(static letter => letter.DeadLetteredAt.UtcTicks)
            .ThenByDescending(static letter => letter.Id)
            .Take(query.Max + 1)
            .ToList();
        return ValueTask.FromResult(Page.OfFirst(letters, query.Max, DeadLetterQuery.CursorOf));
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<DeadLetterGroup>> GroupDeadLettersAsync(CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<DeadLetterGroup>>([.. Committed.DeadLetters.Values
            .GroupBy(static letter => (letter.Reason, letter.Source))
            .Select(static g => new DeadLetterGroup(g.Key.Reason, g.Key.Source, g.LongCount(), g.Max(static letter => letter.DeadLetteredAt)))
            .OrderBy(static g => g.Reason, StringComparer.Ordinal)
            .ThenBy(static g => g.Source, StringComparer.Ordinal)]);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<QueueActivity>> CountActivitySinceAsync(DateTimeOffset since, CancellationToken cancellationToken)
    {
        var state = Committed;
        var handled = state.Inbox.Values.Where(r => r.HandledAt >= since).GroupBy(static r => r.Consumer).ToDictionary(static g => g.Key, static g => g.LongCount(), StringComparer.Ordinal);
        var dead = state.DeadLetters.Values.Where(l => l.DeadLetteredAt >= since).GroupBy(static l => l.Source).ToDictionary(static g => g.Key, static g => g.LongCount(), StringComparer.Ordinal);
        return ValueTask.FromResult<IReadOnlyList<QueueActivity>>([.. handled.Keys.Union(dead.Keys).Order(StringComparer.Ordinal)
            .Select(q => new QueueActivity(q, handled.GetValueOrDefault(q), dead.GetValueOrDefault(q)))]);
    }

    /// <inheritdoc />
    public ValueTask<DeadLetter?> GetDeadLetterAsync(long id, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Committed.DeadLetters.GetValueOrDefault(id));

    /// <inheritdoc />
    public async ValueTask<long> RecordAsync(OperatorAction action, CancellationToken cancellationToken) =>
        await WriteAsync(transaction => transaction.RecordOperatorActionAsync(action, cancellationToken), cancellationToken);

    /// <inheritdoc />
    public ValueTask<Page<OperatorAction>> ListAsync(string? after, int max, CancellationToken cancellationToken)
    {
        if (max <= 0)
        {
            return ValueTask.FromResult(new Page<OperatorAction>([], null));
        }

        var before = after is null ? long.MaxValue : PageCursor.ParseNumbered(after).Number;
        var actions = Committed.OperatorLog.Values.Reverse().Where(action => action.Id < before).Take(max + 1).ToList();
        return ValueTask.FromResult(Page.OfFirst(actions, max, static action => PageCursor.CreateNumbered(action.At.UtcTicks, action.Id)));
    }

}

internal sealed partial class InMemoryStoreTransaction
{
    public ValueTask<long> RecordOperatorActionAsync(OperatorAction action, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(action);
        var state = State;
        var id = state.LastOperatorActionId + 1;
        State = state with { OperatorLog = state.OperatorLog.Add(id, action with { Id = id }), LastOperatorActionId = id };
        return ValueTask.FromResult(id);
    }
}
