using System.Collections.Concurrent;

namespace Converge.Storage;

/// <summary>
/// In-process wake-ups: a store rings a queue's bell after committing a message to it, so a consumer in the
/// same process starts at once instead of at its next poll.
/// </summary>
public sealed class CommitSignals
{
    readonly ConcurrentDictionary<string, Doorbell> _queues = new(StringComparer.Ordinal);

    /// <summary>The bell rung when events are appended to the log.</summary>
    public Doorbell Log { get; } = new();

    /// <summary>
    /// The bell rung after a consumer group or projection version run by this process commits its checkpoint, and after a
    /// projection version is switched live here: read-your-writes waits (<c>IConsistency</c>) listen to it through
    /// <see cref="Doorbell.Rung"/>. Checkpoints moved by another process ring nothing; such waits also read on an interval.
    /// </summary>
    public Doorbell Checkpoints { get; } = new();

    /// <summary>The bell of one queue.</summary>
    public Doorbell Queue(string queue) => _queues.GetOrAdd(queue, static _ => new Doorbell());

    /// <summary>Rings the bell of <paramref name="queue"/>.</summary>
    public void RingQueue(string queue)
    {
        if (_queues.TryGetValue(queue, out var bell))
        {
            bell.Ring();
        }
    }

    /// <summary>Rings every queue's bell: after a gap in a store's notifications, consumers look once instead of waiting out their poll.</summary>
    public void RingAll()
    {
        foreach (var bell in _queues.Values)
        {
            bell.Ring();
        }
    }
}

/// <summary>An auto-reset signal: a ring is remembered until the next wait consumes it.</summary>
public sealed class Doorbell
{
    TaskCompletionSource _waiter = new(TaskCreationOptions.RunContinuationsAsynchronously);
    int _rung;

    /// <summary>
    /// Raised by every <see cref="Ring"/>, before the waiter wakes: for listeners that must each hear every ring (a
    /// wait consumes a ring, so only one waiter hears it). Handlers run on the ringing thread and must not block.
    /// </summary>
    public event Action? Rung;

    /// <summary>Wakes the current waiter, or the next one if none is waiting.</summary>
    public void Ring()
    {
        Rung?.Invoke();

        // Already rung and not yet consumed: the next wait returns at once anyway.
        if (Interlocked.Exchange(ref _rung, 1) == 1)
        {
            return;
        }

        Interlocked.Exchange(ref _waiter, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }

    /// <summary>Waits until rung or <paramref name="timeout"/> passes on <paramref name="timeProvider"/>; <c>true</c> when rung.</summary>
    public async Task<bool> WaitAsync(TimeSpan timeout, TimeProvider timeProvider, CancellationToken cancellationToken)
    {
        // Take the waiter before checking the flag: a ring between the two completes this waiter.
        var waiter = Volatile.Read(ref _waiter).Task;
        if (Interlocked.Exchange(ref _rung, 0) == 1)
        {
            return true;
        }

        using var delayCancellation = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var delay = Task.Delay(timeout, timeProvider, delayCancellation.Token);
        var first = await Task.WhenAny(waiter, delay);
        await delayCancellation.CancelAsync();
        cancellationToken.ThrowIfCancellationRequested();
        if (first == waiter)
        {
            Interlocked.Exchange(ref _rung, 0);
            return true;
        }

        return Interlocked.Exchange(ref _rung, 0) == 1;
    }
}
