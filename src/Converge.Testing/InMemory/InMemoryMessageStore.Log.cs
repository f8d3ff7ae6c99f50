using System.Collections.Immutable;
using Converge.Contracts;
using Converge.Storage;

namespace Converge.Testing.InMemory;

// The log: append with an expected version, read from a position or per stream, consumer-group checkpoints.
public sealed partial class InMemoryMessageStore
{
    /// <inheritdoc />
    public ValueTask<IReadOnlyList<LogEvent>> ReadLogAsync(long afterPosition, int max, CancellationToken cancellationToken)
    {
        var log = Committed.Log;
        var first = (int)Math.Clamp(afterPosition, 0, log.Count);
        var count = Math.Clamp(max, 0, log.Count - first);
        return ValueTask.FromResult<IReadOnlyList<LogEvent>>(log.GetRange(first, count));
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<LogEvent>> ReadStreamAsync(string stream, long fromVersion, int max, CancellationToken cancellationToken)
    {
        if (!Committed.Streams.TryGetValue(stream, out var events))
        {
            return ValueTask.FromResult<IReadOnlyList<LogEvent>>([]);
        }

        var first = (int)Math.Clamp(fromVersion - 1, 0, events.Count);
        var count = Math.Clamp(max, 0, events.Count - first);
        return ValueTask.FromResult<IReadOnlyList<LogEvent>>(events.GetRange(first, count));
    }

    /// <inheritdoc />
    public ValueTask<ConsumerGroupState?> GetConsumerGroupAsync(string group, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Committed.Groups.GetValueOrDefault(group));

    /// <inheritdoc />
    public ValueTask<long> GetLogHeadAsync(CancellationToken cancellationToken) => ValueTask.FromResult((long)Committed.Log.Count);
}

internal sealed partial class InMemoryStoreTransaction
{
    public ValueTask<IReadOnlyList<LogEvent>> AppendAsync(string stream, long? expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(events);
        var state = State;
        var streamEvents = state.Streams.GetValueOrDefault(stream, []);
        long version = streamEvents.Count;
        if (expectedVersion is { } expected && expected != version)
        {
            throw new StreamVersionConflictException(stream, expected, version);
        }

        var log = state.Log.ToBuilder();
        var appended = streamEvents.ToBuilder();
        var stored = new List<LogEvent>(events.Count);
        foreach (var envelope in events)
        {
            var logEvent = new LogEvent(log.Count + 1, stream, ++version, envelope);
            log.Add(logEvent);
            appended.Add(logEvent);
            stored.Add(logEvent);
        }

        State = state with { Log = log.ToImmutable(), Streams = state.Streams.SetItem(stream, appended.ToImmutable()) };
        _logWritten = true;
        return ValueTask.FromResult<IReadOnlyList<LogEvent>>(stored);
    }

    public ValueTask<bool> SaveConsumerGroupAsync(string group, long expectedPosition, long position, int failedAttempts, string? lastError, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(group);
        var state = State;

        // A group's first checkpoint is stored whatever was expected; later ones only from the expected position.
        if (state.Groups.TryGetValue(group, out var current) && current.Position != expectedPosition)
        {
            return ValueTask.FromResult(false);
        }

        State = state with { Groups = state.Groups.SetItem(group, new ConsumerGroupState(group, position, failedAttempts, lastError, Now, current?.Paused ?? false)) };
        return ValueTask.FromResult(true);
    }

    public ValueTask<bool> DeleteConsumerGroupAsync(string group, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(group);
        var state = State;
        if (!state.Groups.ContainsKey(group))
        {
            return ValueTask.FromResult(false);
        }

        State = state with { Groups = state.Groups.Remove(group) };
        return ValueTask.FromResult(true);
    }

    public ValueTask SetConsumerGroupPausedAsync(string group, bool paused, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(group);
        var state = State;
        var current = state.Groups.GetValueOrDefault(group) ?? new ConsumerGroupState(group, 0, 0, null, Now);
        State = state with { Groups = state.Groups.SetItem(group, current with { Paused = paused, UpdatedAt = Now }) };
        return ValueTask.CompletedTask;
    }
}
