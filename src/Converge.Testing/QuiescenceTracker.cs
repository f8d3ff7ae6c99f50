using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;

namespace Converge.Testing;

/// <summary>
/// Follows causation ids from a root message: everything the root caused, and everything those caused, until
/// nothing is left pending (every queue message completed or dead-lettered, every event handled by each
/// consumer group in this process that subscribes to its type).
/// </summary>
public sealed class QuiescenceTracker : IMessageObserver
{
    readonly object _lock = new();
    readonly Func<string, IReadOnlyList<string>> _groupsFor;
    readonly HashSet<Guid> _tree = [];
    readonly HashSet<(Guid Id, string Where)> _pending = [];
    readonly HashSet<(Guid Id, string Where)> _finishedEarly = [];
    readonly List<TrackedMessage> _history = [];
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, TaskCompletionSource<long>> _paused = new(StringComparer.Ordinal);
    TaskCompletionSource _quiet = NewQuiet();

    internal QuiescenceTracker(Func<string, IReadOnlyList<string>> groupsFor) => _groupsFor = groupsFor;

    /// <summary>Everything that happened to tracked messages, in the order observed.</summary>
    public IReadOnlyList<TrackedMessage> History
    {
        get
        {
            lock (_lock)
            {
                return [.. _history];
            }
        }
    }

    /// <summary>Starts following <paramref name="messageId"/>, to be sent to <paramref name="queue"/>.</summary>
    public void Track(Guid messageId, string queue)
    {
        lock (_lock)
        {
            _tree.Add(messageId);
            _pending.Add((messageId, queue));
            if (_quiet.Task.IsCompleted)
            {
                _quiet = NewQuiet();
            }
        }
    }

    /// <summary>
    /// Completes with the position at which a runner of <paramref name="group"/> in this process found the group paused
    /// (at once when one already did): from then on that runner starts no batch until the group is resumed.
    /// </summary>
    public Task<long> WhenGroupPausedAsync(string group) => PausedSource(group).Task;

    void IMessageObserver.OnGroupPaused(string group, long position) => PausedSource(group).TrySetResult(position);

    TaskCompletionSource<long> PausedSource(string group) =>
        _paused.GetOrAdd(group, static _ => new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously));

    /// <summary>Completes when nothing tracked is pending.</summary>
    public Task WhenQuietAsync()
    {
        lock (_lock)
        {
            return _pending.Count == 0 ? Task.CompletedTask : _quiet.Task;
        }
    }

    /// <summary>What is still pending, for a timeout message.</summary>
    public string DescribePending()
    {
        lock (_lock)
        {
            return string.Join(", ", _pending.Select(p => $"{p.Id} at {p.Where}"));
        }
    }

    void IMessageObserver.OnSent(Envelope envelope, string queue)
    {
        lock (_lock)
        {
            if (!IsOurs(envelope))
            {
                return;
            }

            _tree.Add(envelope.MessageId);
            _history.Add(new TrackedMessage(envelope, queue, "sent"));
            if (!_finishedEarly.Remove((envelope.MessageId, queue)))
            {
                _pending.Add((envelope.MessageId, queue));
            }
        }
    }

    void IMessageObserver.OnAppended(IReadOnlyList<LogEvent> events)
    {
        lock (_lock)
        {
            foreach (var logEvent in events)
            {
                if (!IsOurs(logEvent.Envelope))
                {
                    continue;
                }

                _tree.Add(logEvent.Envelope.MessageId);
                _history.Add(new TrackedMessage(logEvent.Envelope, logEvent.Stream, "appended"));
                foreach (var group in _groupsFor(logEvent.Envelope.MessageType))
                {
                    var key = (logEvent.Envelope.MessageId, "log:" + group);
                    if (!_finishedEarly.Remove(key))
                    {
                        _pending.Add(key);
                    }
                }
            }
        }
    }

    void IMessageObserver.OnHandled(Envelope envelope, string queue, HandlingOutcome outcome)
    {
        if (outcome == HandlingOutcome.RetryScheduled)
        {
            lock (_lock)
            {
                if (IsOurs(envelope))
                {
                    _history.Add(new TrackedMessage(envelope, queue, "retry-scheduled"));
                }
            }

            return;
        }

        Finish(envelope, queue, outcome.ToString().ToLowerInvariant());
    }

    void IMessageObserver.OnEventHandled(LogEvent logEvent, string group, HandlingOutcome outcome) =>
        Finish(logEvent.Envelope, "log:" + group, outcome.ToString().ToLowerInvariant());

    void Finish(Envelope envelope, string where, string what)
    {
        TaskCompletionSource? quiet = null;
        lock (_lock)
        {
            if (!IsOurs(envelope))
            {
                return;
            }

            _tree.Add(envelope.MessageId);
            _history.Add(new TrackedMessage(envelope, where, what));
            if (!_pending.Remove((envelope.MessageId, where)))
            {
                _finishedEarly.Add((envelope.MessageId, where));
            }

            if (_pending.Count == 0)
            {
                quiet = _quiet;
            }
        }

        quiet?.TrySetResult();
    }

    bool IsOurs(Envelope envelope) =>
        _tree.Contains(envelope.MessageId) || (envelope.CausationId is { } cause && _tree.Contains(cause));

    static TaskCompletionSource NewQuiet() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>One observation of a tracked message.</summary>
/// <param name="Envelope">The message or event.</param>
/// <param name="Where">The queue, the stream, or <c>log:GROUP</c>.</param>
/// <param name="What">sent, appended, completed, duplicate, retry-scheduled or deadlettered.</param>
public sealed record TrackedMessage(Envelope Envelope, string Where, string What);
