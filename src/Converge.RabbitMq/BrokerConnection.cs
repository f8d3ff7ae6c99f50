using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;

namespace Converge.RabbitMq;

/// <summary>
/// The process's one connection to the broker, opened on first use and opened again after it is lost. The client's
/// own automatic recovery is off on purpose: after a loss the broker has already returned every unacknowledged
/// delivery, so the transport drops what it held and starts its consumers afresh, rather than keep delivery tags
/// that a recovered channel would no longer know.
/// </summary>
internal sealed class BrokerConnection : IAsyncDisposable
{
    /// <summary>
    /// How many publishes each publisher (the outbox relay, the log stream's) has awaiting their confirm at once: a
    /// default relay batch, so a batch costs one wait for confirms rather than one per 64 messages.
    /// </summary>
    public const int ConfirmWindow = 256;

    readonly ConnectionFactory _factory;
    readonly ILogger _logger;
    readonly SemaphoreSlim _lock = new(1, 1);
    readonly string _display;
    IConnection? _connection;
    bool _disposed;

    public BrokerConnection(RabbitMqTransportOptions options, ILogger logger)
    {
        _factory = new ConnectionFactory
        {
            Uri = options.Uri!,
            ClientProvidedName = options.ConnectionName,
            AutomaticRecoveryEnabled = false,
            TopologyRecoveryEnabled = false,
            RequestedConnectionTimeout = TimeSpan.FromSeconds(10),
        };
        _logger = logger;
        // Never the credentials: the address goes into log messages.
        _display = new UriBuilder(options.Uri!) { UserName = string.Empty, Password = string.Empty }.Uri.ToString();
    }

    /// <summary>Raised once for each connection that closes (not when this object is disposed).</summary>
    public event Action? Lost;

    /// <summary>The broker's address without credentials, for messages.</summary>
    public string Display => _display;

    /// <summary>Counts connections opened; a channel from an older one is gone.</summary>
    public int Generation { get; private set; }

    public bool IsOpen => _connection is { IsOpen: true };

    /// <summary>The open connection, connecting first when there is none.</summary>
    /// <exception cref="BrokerUnreachableException">The broker cannot be reached.</exception>
    public async Task<IConnection> GetAsync(CancellationToken cancellationToken)
    {
        if (_connection is { IsOpen: true } open)
        {
            return open;
        }

        await _lock.WaitAsync(cancellationToken);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_connection is { IsOpen: true } raced)
            {
                return raced;
            }

            if (_connection is { } old)
            {
                _connection = null;
                await CloseQuietlyAsync(old);
            }

            var connection = await _factory.CreateConnectionAsync(cancellationToken);
            connection.ConnectionShutdownAsync += OnShutdownAsync;
            connection.ConnectionBlockedAsync += OnBlockedAsync;
            connection.ConnectionUnblockedAsync += OnUnblockedAsync;
            _connection = connection;
            Generation++;
            RabbitMqLog.Connected(_logger, _display);
            return connection;
        }
        finally
        {
            _lock.Release();
        }
    }

    Task OnShutdownAsync(object sender, ShutdownEventArgs args)
    {
        if (!_disposed)
        {
            RabbitMqLog.ConnectionLost(_logger, args.ReplyText);
            Lost?.Invoke();
        }

        return Task.CompletedTask;
    }

    // A resource alarm on the broker (memory, disk) blocks publishing connections: said in the log, or an outage
    // looks like a hang.
    Task OnBlockedAsync(object sender, ConnectionBlockedEventArgs args)
    {
        RabbitMqLog.ConnectionBlocked(_logger, args.Reason);
        return Task.CompletedTask;
    }

    Task OnUnblockedAsync(object sender, AsyncEventArgs args)
    {
        RabbitMqLog.ConnectionUnblocked(_logger);
        return Task.CompletedTask;
    }

    /// <summary>Opens a channel; with <paramref name="confirms"/>, every publish awaits the broker's confirm.</summary>
    public async Task<IChannel> CreateChannelAsync(bool confirms, CancellationToken cancellationToken)
    {
        var connection = await GetAsync(cancellationToken);
        return await connection.CreateChannelAsync(
            // The client's default limit (128, throttled from 64) would hold publishes back below the publishers' own
            // windows. One limiter per channel: the permits of publishes a lost channel never settles die with it.
            confirms ? new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true, new ThrottlingRateLimiter(2 * ConfirmWindow)) : null,
            cancellationToken);
    }

    /// <summary>Whether <paramref name="queue"/> exists on the broker (a passive declare on a channel of its own, which a miss closes).</summary>
    public async Task<QueueDeclareOk?> InspectAsync(string queue, CancellationToken cancellationToken)
    {
        var channel = await CreateChannelAsync(confirms: false, cancellationToken);
        try
        {
            return await channel.QueueDeclarePassiveAsync(queue, cancellationToken);
        }
        catch (OperationInterruptedException exception) when (exception.ShutdownReason?.ReplyCode == Constants.NotFound)
        {
            return null;
        }
        finally
        {
            await CloseQuietlyAsync(channel);
        }
    }

    public static async Task CloseQuietlyAsync(IChannel channel)
    {
        try
        {
            if (channel.IsOpen)
            {
                await channel.CloseAsync();
            }
        }
        catch (Exception exception) when (exception is AlreadyClosedException or OperationInterruptedException or IOException or ObjectDisposedException or TimeoutException or OperationCanceledException)
        {
            // Closing a channel the broker or the network already closed: nothing is left to release.
        }

        channel.Dispose();
    }

    static async Task CloseQuietlyAsync(IConnection connection)
    {
        try
        {
            if (connection.IsOpen)
            {
                await connection.CloseAsync(TimeSpan.FromSeconds(5));
            }
        }
        catch (Exception exception) when (exception is AlreadyClosedException or OperationInterruptedException or IOException or ObjectDisposedException or TimeoutException or OperationCanceledException)
        {
            // Already gone: the broker returns its unacknowledged deliveries either way.
        }

        connection.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        await _lock.WaitAsync();
        try
        {
            _disposed = true;
            if (_connection is { } connection)
            {
                _connection = null;
                connection.ConnectionShutdownAsync -= OnShutdownAsync;
                await CloseQuietlyAsync(connection);
            }
        }
        finally
        {
            _lock.Release();
        }

        _lock.Dispose();
    }
}
