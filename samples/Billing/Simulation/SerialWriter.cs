using System.Threading.Channels;
using Microsoft.Data.Sqlite;

namespace Converge.Samples.Billing.Simulation;

/// <summary>
/// The one writer of a simulated service's own SQLite file. Callers queue writes from any thread; a single loop
/// takes everything queued, runs it in one transaction (each write in a savepoint of its own, so one failure does
/// not undo the others) and answers every caller after the commit (group commit). Thousands of calls per second
/// then cost a few commits per second instead of one each, and no caller sees a result that was not committed.
/// </summary>
/// <typeparam name="TState">Prepared commands on the writer's connection, used only by the loop.</typeparam>
internal sealed class SerialWriter<TState> : IAsyncDisposable, IDisposable
{
    const int MaxBatch = 1024;

    readonly SqliteConnection _connection;
    readonly TState _state;
    readonly Channel<Work> _queue = Channel.CreateUnbounded<Work>(new UnboundedChannelOptions { SingleReader = true });
    readonly Task _loop;

    /// <param name="path">The file; created when missing.</param>
    /// <param name="schema">Statements that create the tables idempotently.</param>
    /// <param name="prepare">Prepares the commands the writes use.</param>
    public SerialWriter(string path, IEnumerable<string> schema, Func<SqliteConnection, TState> prepare)
    {
        _connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        _connection.Open();

        // synchronous=NORMAL: this is a simulator's own file. In WAL mode it survives a killed process (a crash
        // test SIGKILLs the worker that hosts it) and only an operating-system crash or power loss could roll back
        // its last commits. A real provider's ledger is not ours to tune; the store's own file keeps FULL.
        Execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000;");
        foreach (var statement in schema)
        {
            Execute(statement);
        }

        _state = prepare(_connection);
        _loop = Task.Run(RunAsync);
    }

    /// <summary>Queues <paramref name="write"/>; completes with its result once the transaction that ran it committed.</summary>
    public Task<T> WriteAsync<T>(Func<TState, SqliteTransaction, T> write, CancellationToken cancellationToken)
    {
        var work = new Work<T>(write);
        if (!_queue.Writer.TryWrite(work))
        {
            throw new ObjectDisposedException(nameof(SerialWriter<TState>), "The simulated service is shutting down.");
        }

        return work.Result.WaitAsync(cancellationToken);
    }

    async Task RunAsync()
    {
        var batch = new List<Work>(MaxBatch);
        while (await _queue.Reader.WaitToReadAsync())
        {
            while (batch.Count < MaxBatch && _queue.Reader.TryRead(out var work))
            {
                batch.Add(work);
            }

            try
            {
                using var transaction = _connection.BeginTransaction();
                foreach (var work in batch)
                {
                    transaction.Save("write");
                    try
                    {
                        work.Run(_state, transaction);
                        transaction.Release("write");
                    }
                    catch (Exception exception)
                    {
                        transaction.Rollback("write");
                        transaction.Release("write");
                        work.Fail(exception);
                    }
                }

                transaction.Commit();
                foreach (var work in batch)
                {
                    work.Complete();
                }
            }
            catch (Exception exception)
            {
                foreach (var work in batch)
                {
                    work.Fail(exception);
                }
            }

            batch.Clear();
        }
    }

    void Execute(string sql)
    {
        using var command = _connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    /// <summary>Lets the queued writes finish, then closes the file.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    public async ValueTask DisposeAsync()
    {
        if (!_queue.Writer.TryComplete())
        {
            return;
        }

        await _loop;
        if (_state is IDisposable disposable)
        {
            disposable.Dispose();
        }

        await _connection.DisposeAsync();
    }

    abstract class Work
    {
        public abstract void Run(TState state, SqliteTransaction transaction);

        public abstract void Complete();

        public abstract void Fail(Exception exception);
    }

    sealed class Work<T>(Func<TState, SqliteTransaction, T> write) : Work
    {
        readonly TaskCompletionSource<T> _result = new(TaskCreationOptions.RunContinuationsAsynchronously);
        T? _value;
        bool _failed;

        public Task<T> Result => _result.Task;

        public override void Run(TState state, SqliteTransaction transaction) => _value = write(state, transaction);

        public override void Complete()
        {
            if (!_failed)
            {
                _result.TrySetResult(_value!);
            }
        }

        public override void Fail(Exception exception)
        {
            _failed = true;
            _result.TrySetException(exception);
        }
    }
}
