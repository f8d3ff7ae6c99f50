using System.Collections.Concurrent;

namespace Converge.Storage;

/// <summary>
/// In-process wake-ups: a store rings a queue's bell after committing a message to it, so a consumer in the
/// same process starts at once instead of at its next poll.
/// </summary>
public sealed class CommitSignals
{
    readonly ConcurrentDictionary<string, Doorbell> _queues = new(StringComparer.Ordinal);
    readonly bool _wakeOnRingingThread;

    /// <summary>Signals whose rings wake their waiters on another thread, never on the committing one.</summary>
    public CommitSignals()
        : this(wakeOnRingingThread: false)
    {
    }

    /// <summary>
    /// Signals that, when <paramref name="wakeOnRingingThread"/>, complete a waiter on the ringing thread: only for
    /// waiters on a scheduler that queues every continuation itself, as a deterministic simulation's does, where a hop
    /// through the thread pool would land at a moment nobody chose. Default (the other constructor) <c>false</c>: a
    /// commit never runs a consumer's loop on its own thread.
    /// </summary>
    public CommitSignals(bool wakeOnRingingThread)
    {
        _wakeOnRingingThread = wakeOnRingingThread;
        Log = new Doorbell(wakeOnRingingThread);
        Checkpoints = new Doorbell(wakeOnRingingThread);
    }

    /// <summary>The bell rung when events are appended to the log.</summary>
    public Doorbell Log { get; }

    /// <summary>
    /// The bell rung after a consumer group or projection version run by this process commits its checkpoint, and after a
    /// projection version is switched live here: read-your-writes waits (<c>IConsistency</c>) listen to it through
    /// <see cref="Doorbell.Rung"/>. Checkpoints moved by another process ring nothing; such waits also read on an interval.
    /// </summary>
    public Doorbell Checkpoints { get; }

    /// <summary>The bell of one queue.</summary>
    public Doorbell Queue(string queue) => _queues.GetOrAdd(queue, static (_, synchronous) => new Doorbell(synchronous), _wakeOnRingingThread);

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
    readonly TaskCreationOptions _waiterOptions;
    TaskCompletionSource _waiter;
    int _rung;

    /// <summary>A bell that wakes its waiter on another thread than the ringing one.</summary>
    public Doorbell()
        : this(wakeOnRingingThread: false)
    {
    }

    /// <summary>A bell that wakes its waiter on the ringing thread when <paramref name="wakeOnRingingThread"/> (see <see cref="CommitSignals(bool)"/>).</summary>
    public Doorbell(bool wakeOnRingingThread)
    {
        _waiterOptions = wakeOnRingingThread ? TaskCreationOptions.None : TaskCreationOptions.RunContinuationsAsynchronously;
        _waiter = new TaskCompletionSource(_waiterOptions);
    }

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

        Interlocked.Exchange(ref _waiter, new TaskCompletionSource(_waiterOptions)).TrySetResult();
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
        // Cancelled here, not through CancelAsync: the only callback is the delay's own (it drops its timer), and
        // resuming after CancelAsync would hop through the thread pool, out of a simulation scheduler's hands.
#pragma warning disable CA1849
        delayCancellation.Cancel();
#pragma warning restore CA1849
        cancellationToken.ThrowIfCancellationRequested();
        if (first == waiter)
        {
            Interlocked.Exchange(ref _rung, 0);
            return true;
        }

        return Interlocked.Exchange(ref _rung, 0) == 1;
    }
}
