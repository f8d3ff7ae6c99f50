using Converge.Projections;
using Converge.Runtime;
using Converge.Storage;

namespace Converge.Consistency;

/// <summary>
/// Waits for checkpoints (<see cref="IConsistency"/>): reads the checkpoint, and until it is far enough waits for this
/// process's checkpoint bell (<see cref="CommitSignals.Checkpoints"/>) or a backing-off interval, whichever comes first.
/// </summary>
internal sealed class ConsistencyWaiter(ConvergeOptions options, IMessageStore store) : IConsistency
{
    /// <summary>The first interval between reads.</summary>
    internal static readonly TimeSpan FirstInterval = TimeSpan.FromMilliseconds(1);

    /// <summary>The longest interval between reads.</summary>
    internal static readonly TimeSpan MaxInterval = TimeSpan.FromMilliseconds(50);

    ProjectionCatalog? _catalog;

    public ValueTask<ConsistencyWaitResult> WaitForGroupAsync(string group, ConsistencyToken token, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(group);
        ValidateTimeout(timeout);
        return WaitAsync(
            async ct => new ConsistencyWaitResult(false, token, group, group, (await store.GetConsumerGroupAsync(group, ct))?.Position ?? 0),
            token,
            timeout,
            cancellationToken);
    }

    public ValueTask<ConsistencyWaitResult> WaitForProjectionAsync(string projection, ConsistencyToken token, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ProjectionNames.ValidateName(projection);
        ValidateTimeout(timeout);
        var catalog = _catalog ??= new ProjectionCatalog(store, options.TimeProvider);
        return WaitAsync(
            async ct =>
            {
                if (await catalog.GetLiveVersionAsync(projection, ct) is not { } version)
                {
                    return new ConsistencyWaitResult(false, token, projection, null, 0);
                }

                var group = ProjectionNames.Group(projection, version);
                return new ConsistencyWaitResult(false, token, projection, group, (await store.GetConsumerGroupAsync(group, ct))?.Position ?? 0);
            },
            token,
            timeout,
            cancellationToken);
    }

    /// <summary>
    /// Reads with <paramref name="read"/> until its position reaches <paramref name="token"/> or <paramref name="timeout"/>
    /// passes; a read whose <see cref="ConsistencyWaitResult.Group"/> is <c>null</c> has reached nothing.
    /// </summary>
    async ValueTask<ConsistencyWaitResult> WaitAsync(Func<CancellationToken, ValueTask<ConsistencyWaitResult>> read, ConsistencyToken token, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var time = options.TimeProvider;
        var started = time.GetTimestamp();
        var interval = FirstInterval;
        var bell = new Bell();
        store.Signals.Checkpoints.Rung += bell.Ring;
        try
        {
            while (true)
            {
                // Taken before the read: a checkpoint committed between the read and the wait still wakes it.
                var rung = bell.Next;
                var result = await read(cancellationToken);
                if (result.Group is not null && result.Position >= token.Position)
                {
                    return result with { Reached = true };
                }

                var remaining = timeout == Timeout.InfiniteTimeSpan ? interval : timeout - time.GetElapsedTime(started);
                if (remaining <= TimeSpan.Zero)
                {
                    return result;
                }

                using var stopWaiting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                var delay = Task.Delay(remaining < interval ? remaining : interval, time, stopWaiting.Token);
                await Task.WhenAny(rung, delay);
                await stopWaiting.CancelAsync();
                cancellationToken.ThrowIfCancellationRequested();
                interval = interval * 2 < MaxInterval ? interval * 2 : MaxInterval;
            }
        }
        finally
        {
            store.Signals.Checkpoints.Rung -= bell.Ring;
        }
    }

    static void ValidateTimeout(TimeSpan timeout)
    {
        if (timeout < TimeSpan.Zero && timeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "Give a timeout of zero or more (zero checks once), or Timeout.InfiniteTimeSpan to wait until reached or cancelled.");
        }
    }

    /// <summary>Every ring completes the current task and starts the next, so the wait hears each ring after it took the task.</summary>
    sealed class Bell
    {
        TaskCompletionSource _next = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Next => Volatile.Read(ref _next).Task;

        public void Ring() => Interlocked.Exchange(ref _next, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }
}
