using System.Data.Common;
using Converge.Jobs;
using Converge.Sagas;
using Converge.Storage;

namespace Converge.Testing.InMemory;

/// <summary>
/// A write transaction on the in-memory store. It holds the store's write gate from begin to commit or disposal and
/// works on its own version of the state (<see cref="InMemoryState"/>): commit publishes that version, rollback drops
/// it, and a savepoint remembers it.
/// </summary>
internal sealed partial class InMemoryStoreTransaction : IStoreTransaction, IInboxRemovalTransaction, ISagaTransaction, IJobTransaction, IConsumerGroupTransaction, IOperatorLogTransaction
{
    readonly InMemoryMessageStore _store;
    InMemoryState _state;
    InMemoryState? _savepoint;
    int _callbacksAtSavepoint;
    List<Action>? _afterCommit;
    HashSet<string>? _queuesWritten;
    bool _logWritten;
    int _ended;

    bool Finished => Volatile.Read(ref _ended) == 1;

    public InMemoryStoreTransaction(InMemoryMessageStore store, InMemoryState state)
    {
        _store = store;
        _state = state;
    }

    /// <summary>The store this transaction writes to.</summary>
    public InMemoryMessageStore Store => _store;

    /// <summary>The state as this transaction sees it; throws once the transaction ended (an abandoned handler woke up).</summary>
    InMemoryState State
    {
        get
        {
            ObjectDisposedException.ThrowIf(Finished, this);
            return _state;
        }

        set
        {
            ObjectDisposedException.ThrowIf(Finished, this);
            _state = value;
        }
    }

    DateTimeOffset Now => _store.Now;

    public ValueTask SavepointAsync(CancellationToken cancellationToken)
    {
        _savepoint = State;
        _callbacksAtSavepoint = _afterCommit?.Count ?? 0;
        return ValueTask.CompletedTask;
    }

    public ValueTask RollbackToSavepointAsync(CancellationToken cancellationToken)
    {
        State = _savepoint ?? throw new InvalidOperationException("There is no savepoint to roll back to.");
        _savepoint = null;

        // What was undone must not announce itself at commit: callbacks registered since the savepoint go with it.
        _afterCommit?.RemoveRange(_callbacksAtSavepoint, _afterCommit.Count - _callbacksAtSavepoint);
        return ValueTask.CompletedTask;
    }

    public ValueTask ReleaseSavepointAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Finished, this);
        _savepoint = null;
        return ValueTask.CompletedTask;
    }

    public void OnCommitted(Action callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        ObjectDisposedException.ThrowIf(Finished, this);
        (_afterCommit ??= []).Add(callback);
    }

    void RingOnCommit(string queue) => (_queuesWritten ??= new HashSet<string>(StringComparer.Ordinal)).Add(queue);

    public ValueTask CommitAsync(CancellationToken cancellationToken = default)
    {
        // Ended here, before publishing, so an abandon racing this commit either wins (nothing is published) or finds it ended.
        ObjectDisposedException.ThrowIf(Interlocked.Exchange(ref _ended, 1) == 1, this);
        _store.Publish(_state);
        _savepoint = null;
        _store.EndWrite();
        if (_queuesWritten is { } queues)
        {
            foreach (var queue in queues)
            {
                _store.Signals.RingQueue(queue);
            }
        }

        if (_logWritten)
        {
            _store.Signals.Log.Ring();
        }

        if (_afterCommit is { } callbacks)
        {
            foreach (var callback in callbacks)
            {
                callback();
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>Rolls back and releases the write gate; later calls through this transaction throw <see cref="ObjectDisposedException"/>.</summary>
    public ValueTask AbandonAsync() => DisposeAsync();

    public ValueTask DisposeAsync()
    {
        Finish();
        return ValueTask.CompletedTask;
    }

    /// <summary>Ends the transaction once: a dispose racing an abandon (from the supervisor) releases the gate once.</summary>
    void Finish()
    {
        if (Interlocked.Exchange(ref _ended, 1) == 0)
        {
            _savepoint = null;
            _store.EndWrite();
        }
    }
}
