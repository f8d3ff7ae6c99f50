using Converge.Runtime;
using System.Data.Common;
using Converge.Jobs;
using Converge.Sagas;
using Converge.Storage;

namespace Converge.Testing.InMemory;

/// <summary>
/// A store that keeps everything in this process's memory: the queue, the log, the inbox, the dead letters, sagas and
/// jobs, with the same guarantees as the database stores (it passes the conformance suite) but nothing to set up and
/// nothing written to disk. For fast unit tests of handlers, sagas and jobs, and for two hosts in one test that stand
/// for two processes on one database (give both the same instance with
/// <see cref="InMemoryConvergeExtensions.UseInMemory(Converge.Runtime.ConvergeOptions, InMemoryMessageStore)"/>).
/// </summary>
/// <remarks>
/// <para>
/// Transactions are real: one writer at a time (like SQLite), whose writes become visible to everyone else when it
/// commits and vanish when it rolls back; savepoints work one level deep. Readers outside a transaction never wait:
/// they see the last committed state.
/// </para>
/// <para>
/// There is no database: it offers every contract but <see cref="IDatabaseStore"/> (the outbox with your own
/// <c>DbTransaction</c>, read connections, SQL in a transaction), so a handler that writes with SQL needs a database
/// store, and those calls throw <see cref="NotSupportedException"/> naming the missing contract. Nothing survives the process; disposing the store keeps its contents (a host that
/// stops and another that starts on the same instance find them, as after a restart).
/// </para>
/// <para>Thread-safe.</para>
/// </remarks>
public sealed partial class InMemoryMessageStore : IMessageStore, IStoreQueries, ISagaQueries, IJobStore, IJobQueries, IDeadLetterQueries, IOperatorLog, IActivityQueries
{
    // One writer at a time: held from BeginAsync until the transaction commits or ends.
    readonly AsyncSlots _writeGate;
    readonly TimeProvider _time;
    InMemoryState _committed = InMemoryState.Empty;

    /// <summary>Creates an empty store that reads every time from <paramref name="timeProvider"/> (the options' clock).</summary>
    public InMemoryMessageStore(TimeProvider timeProvider)
        : this(timeProvider, deterministic: false)
    {
    }

    /// <summary>
    /// Creates an empty store on <paramref name="timeProvider"/>. When <paramref name="deterministic"/>, every wake-up
    /// it gives (a commit's signal to a waiting consumer, the write gate to a waiting writer) completes on the thread
    /// that gives it rather than through the thread pool: for a simulation whose scheduler queues every continuation
    /// itself and must choose when each runs. Default <c>false</c>.
    /// </summary>
    public InMemoryMessageStore(TimeProvider timeProvider, bool deterministic)
    {
        _time = timeProvider ?? throw new ArgumentNullException(nameof(timeProvider));
        _writeGate = new AsyncSlots(1, deterministic);
        Signals = new CommitSignals(deterministic);
    }

    /// <inheritdoc />
    public string Name => "in-memory";

    /// <inheritdoc />
    public CommitSignals Signals { get; }

    internal DateTimeOffset Now => _time.GetUtcNow();

    /// <summary>The last committed state: what readers outside a transaction see.</summary>
    internal InMemoryState Committed => Volatile.Read(ref _committed);

    /// <summary>Nothing to migrate: completes at once.</summary>
    public ValueTask MigrateAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    /// <inheritdoc />
    public async ValueTask<IStoreTransaction> BeginAsync(CancellationToken cancellationToken) => await BeginOwnAsync(cancellationToken);

    internal async ValueTask<InMemoryStoreTransaction> BeginOwnAsync(CancellationToken cancellationToken)
    {
        await _writeGate.EnterAsync(cancellationToken);
        return new InMemoryStoreTransaction(this, Committed);
    }

    /// <summary>Publishes <paramref name="state"/> as committed; called by the transaction that holds the write gate.</summary>
    internal void Publish(InMemoryState state) => Volatile.Write(ref _committed, state);

    internal void EndWrite() => _writeGate.Exit();

    /// <summary>Runs <paramref name="write"/> in a transaction of its own and commits it.</summary>
    internal async ValueTask<T> WriteAsync<T>(Func<InMemoryStoreTransaction, ValueTask<T>> write, CancellationToken cancellationToken)
    {
        await using var transaction = await BeginOwnAsync(cancellationToken);
        var result = await write(transaction);
        await transaction.CommitAsync(cancellationToken);
        return result;
    }

    /// <summary>Keeps the contents: another host may still use this instance, as a restarted process finds its database.</summary>
    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
