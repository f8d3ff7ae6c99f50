namespace Converge.Runtime;

/// <summary>
/// A fixed number of slots, waited for with awaits only: where <see cref="SemaphoreSlim"/> resumes a cancellable wait
/// through the thread pool, a waiter here resumes on the scheduler it waited on.
/// <para>
/// By default a release hands its slot to the longest waiter, whose wake-up runs on the thread pool. When
/// <c>wakeOnReleasingThread</c> (a deterministic simulation's scheduler, which queues every continuation itself) a
/// release instead wakes every waiter on the releasing thread and the first to run takes the slot: a waiter that never
/// runs again (its simulated process died) must hold nothing.
/// </para>
/// </summary>
internal sealed class AsyncSlots(int count, bool wakeOnReleasingThread)
{
    readonly object _lock = new();
    readonly Queue<TaskCompletionSource> _waiters = new();
    TaskCompletionSource? _released;
    int _free = count;

    /// <summary>Takes a slot, waiting until one is free; throws <see cref="OperationCanceledException"/> when <paramref name="cancellationToken"/> is cancelled first.</summary>
    public ValueTask EnterAsync(CancellationToken cancellationToken) =>
        wakeOnReleasingThread ? EnterWhenWokenAsync(cancellationToken) : EnterInTurnAsync(cancellationToken);

    /// <summary>Gives a slot back: to the longest waiter, or (woken mode) to whichever waiter runs first.</summary>
    public void Exit()
    {
        if (wakeOnReleasingThread)
        {
            TaskCompletionSource? released;
            lock (_lock)
            {
                _free++;
                (released, _released) = (_released, null);
            }

            released?.TrySetResult();
            return;
        }

        while (true)
        {
            TaskCompletionSource? next;
            lock (_lock)
            {
                if (!_waiters.TryDequeue(out next))
                {
                    _free++;
                    return;
                }
            }

            // A waiter cancelled meanwhile refuses the slot; the next one gets it.
            if (next.TrySetResult())
            {
                return;
            }
        }
    }

    async ValueTask EnterInTurnAsync(CancellationToken cancellationToken)
    {
        TaskCompletionSource turn;
        lock (_lock)
        {
            if (_free > 0)
            {
                _free--;
                return;
            }

            turn = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Enqueue(turn);
        }

        using (cancellationToken.Register(static state => ((TaskCompletionSource)state!).TrySetCanceled(), turn))
        {
            try
            {
                await turn.Task;
            }
            catch (OperationCanceledException)
            {
                throw new OperationCanceledException(cancellationToken);
            }
        }
    }

    async ValueTask EnterWhenWokenAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            Task released;
            lock (_lock)
            {
                if (_free > 0)
                {
                    _free--;
                    return;
                }

                released = (_released ??= new TaskCompletionSource()).Task;
            }

            await released.WaitAsync(cancellationToken);
        }
    }
}
