using System.Collections.Concurrent;
using Converge.Storage;
using Npgsql;

namespace Converge.PostgreSql;

/// <summary>
/// Listens on the schema's channel and turns other processes' commits into wake-ups. Transactions that wrote to
/// a queue or the log call <c>pg_notify</c>; PostgreSQL delivers a notification only when its transaction
/// commits, so a wake-up always finds the rows it announces. A caller's own transaction, which gives no commit
/// event, registers its commit callbacks under a token that comes back the same way.
/// </summary>
internal sealed class PostgreSqlNotifications : IAsyncDisposable
{
    /// <summary>Commit callbacks of transactions that never committed are dropped after this long.</summary>
    static readonly TimeSpan CallbackLifetime = TimeSpan.FromMinutes(30);

    readonly NpgsqlDataSource _dataSource;
    readonly string _channel;
    readonly CommitSignals _signals;
    readonly TimeProvider _time;
    readonly TimeSpan _reconnectDelay;
    readonly ConcurrentDictionary<Guid, (Action Callback, long RegisteredAt)> _callbacks = new();
    readonly CancellationTokenSource _stopping = new();
    readonly object _gate = new();
    TaskCompletionSource _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);
    Task? _loop;

    public PostgreSqlNotifications(NpgsqlDataSource dataSource, string channel, CommitSignals signals, TimeProvider time, TimeSpan reconnectDelay)
    {
        _dataSource = dataSource;
        _channel = channel;
        _signals = signals;
        _time = time;
        _reconnectDelay = reconnectDelay;
    }

    public const string LogPayload = "l";
    public const string QueuePrefix = "q:";
    public const string CallbackPrefix = "c:";

    /// <summary>Starts listening (once) and waits until the first <c>LISTEN</c> is in place.</summary>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            _loop ??= Task.Run(() => ListenAsync(_stopping.Token), CancellationToken.None);
        }

        return _listening.Task.WaitAsync(cancellationToken);
    }

    /// <summary>Remembers <paramref name="callback"/> until the notification carrying the returned token arrives.</summary>
    public Guid Register(Action callback)
    {
        var token = Guid.NewGuid();
        var now = _time.GetTimestamp();
        _callbacks[token] = (callback, now);
        if (_callbacks.Count > 1024)
        {
            foreach (var (key, entry) in _callbacks)
            {
                if (_time.GetElapsedTime(entry.RegisteredAt) > CallbackLifetime)
                {
                    _callbacks.TryRemove(key, out _);
                }
            }
        }

        return token;
    }

    async Task ListenAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await using var connection = await _dataSource.OpenConnectionAsync(stopping);
                connection.Notification += (_, e) => Deliver(e.Payload);
                await using (var listen = new NpgsqlCommand($"LISTEN {PostgreSqlSchema.Quote(_channel)}", connection))
                {
                    await listen.ExecuteNonQueryAsync(stopping);
                }

                _listening.TrySetResult();

                // Missed while reconnecting: wake every consumer once, so none waits a full poll interval.
                RingAll();
                while (!stopping.IsCancellationRequested)
                {
                    await connection.WaitAsync(stopping);
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception exception) when (exception is NpgsqlException or IOException or TimeoutException or InvalidOperationException)
            {
                // The server went away or refused: workers poll meanwhile; listen again after a pause.
                _listening.TrySetResult();
                try
                {
                    await Task.Delay(_reconnectDelay, _time, stopping);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    void Deliver(string payload)
    {
        if (payload == LogPayload)
        {
            _signals.Log.Ring();
        }
        else if (payload.StartsWith(QueuePrefix, StringComparison.Ordinal))
        {
            _signals.RingQueue(payload[QueuePrefix.Length..]);
        }
        else if (payload.StartsWith(CallbackPrefix, StringComparison.Ordinal)
            && Guid.TryParse(payload.AsSpan(CallbackPrefix.Length), out var token)
            && _callbacks.TryRemove(token, out var entry))
        {
            entry.Callback();
        }
    }

    void RingAll()
    {
        _signals.Log.Ring();
        _signals.RingAll();
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        if (_loop is { } loop)
        {
            try
            {
                await loop;
            }
            catch (OperationCanceledException)
            {
                // Stopping.
            }
        }

        _stopping.Dispose();
    }
}
