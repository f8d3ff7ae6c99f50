using System.Collections.Immutable;
using Converge.Sagas;
using Converge.Storage;

namespace Converge.Testing.InMemory;

// Saga storage: instances under optimistic concurrency, and the saga log.
public sealed partial class InMemoryMessageStore
{
    /// <inheritdoc />
    public ValueTask<SagaInstance?> GetSagaAsync(string transactionId, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Committed.Sagas.TryGetValue(transactionId, out var stored) ? Copy(stored) : null);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<SagaInstance>> QuerySagasAsync(SagaQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        var (afterTicks, afterId) = query.After is { } after ? PageCursor.Parse(after) : (long.MaxValue, "");
        bool IsAfterCursor(SagaInstance s) => s.StartedAt.UtcTicks < afterTicks || (s.StartedAt.UtcTicks == afterTicks && string.CompareOrdinal(s.TransactionId, afterId) < 0);
        return ValueTask.FromResult<IReadOnlyList<SagaInstance>>([.. Committed.Sagas.Values
            .Where(s => (query.State is null || s.State == query.State) && (query.Definition is null || s.Definition == query.Definition) && (query.Version is null || s.Version == query.Version))
            .Where(IsAfterCursor)
            .OrderByDescending(static s => s.StartedAt.UtcTicks)
            .ThenByDescending(static s => s.TransactionId, StringComparer.Ordinal)
            .Take(Math.Max(0, query.Max))
            .Select(Copy)]);
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<SagaCount>> CountSagasAsync(CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<SagaCount>>([.. Committed.Sagas.Values
            .GroupBy(static s => (s.Definition, s.Version, s.State))
            .Select(static g => new SagaCount(g.Key.Definition, g.Key.Version, g.Key.State, g.LongCount()))
            .OrderBy(static c => c.Definition, StringComparer.Ordinal)
            .ThenBy(static c => c.Version)
            .ThenBy(static c => SagaStates.ToText(c.State), StringComparer.Ordinal)]);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<SagaLogEntry>>(Committed.SagaLog.GetValueOrDefault(transactionId, []));

    /// <summary>A copy the caller may change freely: stored instances are never shared with callers.</summary>
    internal static SagaInstance Copy(SagaInstance instance) => new()
    {
        TransactionId = instance.TransactionId,
        Definition = instance.Definition,
        Version = instance.Version,
        State = instance.State,
        StepIndex = instance.StepIndex,
        Awaiting = instance.Awaiting,
        StepAttempt = instance.StepAttempt,
        Steps = [.. instance.Steps],
        Data = instance.Data.ToArray(),
        Failure = instance.Failure,
        FailedStep = instance.FailedStep,
        LastError = instance.LastError,
        StuckReason = instance.StuckReason,
        TimeoutId = instance.TimeoutId,
        TimeoutAt = instance.TimeoutAt,
        Queue = instance.Queue,
        ConcurrencyVersion = instance.ConcurrencyVersion,
        StartedAt = instance.StartedAt,
        UpdatedAt = instance.UpdatedAt,
    };
}

internal sealed partial class InMemoryStoreTransaction
{
    public ValueTask<SagaInstance?> LoadSagaAsync(string transactionId, CancellationToken cancellationToken) =>
        ValueTask.FromResult(State.Sagas.TryGetValue(transactionId, out var stored) ? InMemoryMessageStore.Copy(stored) : null);

    public ValueTask<bool> InsertSagaAsync(SagaInstance instance, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(instance);
        var state = State;
        instance.ConcurrencyVersion = 1;
        instance.UpdatedAt = Now;
        if (state.Sagas.ContainsKey(instance.TransactionId))
        {
            return ValueTask.FromResult(false);
        }

        State = state with { Sagas = state.Sagas.Add(instance.TransactionId, InMemoryMessageStore.Copy(instance)) };
        return ValueTask.FromResult(true);
    }

    public ValueTask<bool> UpdateSagaAsync(SagaInstance instance, long expectedVersion, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(instance);
        var state = State;
        instance.UpdatedAt = Now;
        if (!state.Sagas.TryGetValue(instance.TransactionId, out var stored) || stored.ConcurrencyVersion != expectedVersion)
        {
            instance.ConcurrencyVersion = expectedVersion;
            return ValueTask.FromResult(false);
        }

        instance.ConcurrencyVersion = expectedVersion + 1;

        // What an update writes; the definition, version, steps and start time stay as inserted.
        var saved = InMemoryMessageStore.Copy(stored);
        saved.State = instance.State;
        saved.StepIndex = instance.StepIndex;
        saved.Awaiting = instance.Awaiting;
        saved.StepAttempt = instance.StepAttempt;
        saved.Data = instance.Data.ToArray();
        saved.Failure = instance.Failure;
        saved.FailedStep = instance.FailedStep;
        saved.LastError = instance.LastError;
        saved.StuckReason = instance.StuckReason;
        saved.TimeoutId = instance.TimeoutId;
        saved.TimeoutAt = instance.TimeoutAt;
        saved.Queue = instance.Queue;
        saved.ConcurrencyVersion = instance.ConcurrencyVersion;
        saved.UpdatedAt = instance.UpdatedAt;
        State = state with { Sagas = state.Sagas.SetItem(saved.TransactionId, saved) };
        return ValueTask.FromResult(true);
    }

    public ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<SagaLogEntry>>(State.SagaLog.GetValueOrDefault(transactionId, []));

    public ValueTask AppendSagaLogAsync(IReadOnlyList<SagaLogEntry> entries, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entries);
        var state = State;
        var log = state.SagaLog.ToBuilder();
        var id = state.LastSagaLogId;
        foreach (var entry in entries)
        {
            ArgumentNullException.ThrowIfNull(entry);
            log[entry.TransactionId] = log.GetValueOrDefault(entry.TransactionId, ImmutableList<SagaLogEntry>.Empty).Add(entry with { Id = ++id });
        }

        State = state with { SagaLog = log.ToImmutable(), LastSagaLogId = id };
        return ValueTask.CompletedTask;
    }
}
