namespace Converge.Runtime;

/// <summary>
/// A fixed number of slots, waited for with awaits only: where <see cref="SemaphoreSlim"/> resumes a cancellable wait
/// through the thread pool, a waiter here resumes on the scheduler it waited on. A release wakes every waiter and the
/// first to run takes the slot (the others wait again), so a waiter that never runs again (a simulated process that
/// died) holds nothing. When <c>wakeOnReleasingThread</c> the wake-up is completed on the releasing thread, for a
/// scheduler that queues every continuation itself (a deterministic simulation's); otherwise on the thread pool.
/// </summary>
internal sealed class AsyncSlots(int count, bool wakeOnReleasingThread)
{
    readonly object _lock = new();
    readonly TaskCreationOptions _wakeOptions = wakeOnReleasingThread ? TaskCreationOptions.None : TaskCreationOptions.RunContinuationsAsynchronously;
    TaskCompletionSource? _released;
    int _free = count;

    /// <summary>Takes a slot, waiting until one is free; throws <see cref="OperationCanceledException"/> when <paramref name="cancellationToken"/> is cancelled first.</summary>
    public async ValueTask EnterAsync(CancellationToken cancellationToken)
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

                released = (_released ??= new TaskCompletionSource(_wakeOptions)).Task;
            }

            await released.WaitAsync(cancellationToken);
        }
    }

    /// <summary>Gives a slot back and wakes the waiters.</summary>
    public void Exit()
    {
        TaskCompletionSource? released;
        lock (_lock)
        {
            _free++;
            (released, _released) = (_released, null);
        }

        released?.TrySetResult();
    }
}
