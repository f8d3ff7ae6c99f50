using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Converge.RabbitMq.Tests;

/// <summary>
/// A TCP forwarder to the broker that a test opens and closes: closed, its port refuses connections as an unreachable
/// broker does; closing it also cuts the connections going through it, as a broker restart or a network failure does.
/// </summary>
internal sealed class TcpProxy : IAsyncDisposable
{
    readonly DnsEndPoint _target;
    readonly ConcurrentDictionary<TcpClient, byte> _open = new();
    TcpListener? _listener;
    CancellationTokenSource? _accepting;

    public TcpProxy(Uri broker)
    {
        _target = new DnsEndPoint(broker.Host, broker.Port > 0 ? broker.Port : 5672);
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        Port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        Uri = new UriBuilder(broker) { Host = "127.0.0.1", Port = Port }.Uri;
    }

    public int Port { get; }

    /// <summary>The broker's address through the proxy (with the broker's credentials and virtual host).</summary>
    public Uri Uri { get; }

    public void Open()
    {
        var listener = new TcpListener(IPAddress.Loopback, Port);
        listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Start();
        _listener = listener;
        _accepting = new CancellationTokenSource();
        _ = AcceptAsync(listener, _accepting.Token);
    }

    async Task AcceptAsync(TcpListener listener, CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await listener.AcceptTcpClientAsync(cancellationToken);
            }
            catch (Exception exception) when (exception is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            var upstream = new TcpClient();
            try
            {
                await upstream.ConnectAsync(_target.Host, _target.Port, cancellationToken);
            }
            catch (Exception exception) when (exception is OperationCanceledException or SocketException)
            {
                client.Dispose();
                upstream.Dispose();
                continue;
            }

            _open[client] = 0;
            _open[upstream] = 0;
            _ = PipeAsync(client, upstream);
            _ = PipeAsync(upstream, client);
        }
    }

    async Task PipeAsync(TcpClient from, TcpClient to)
    {
        try
        {
            await from.GetStream().CopyToAsync(to.GetStream());
        }
        catch (Exception exception) when (exception is IOException or ObjectDisposedException or InvalidOperationException or SocketException)
        {
            // The other side (or the test) closed the connection.
        }
        finally
        {
            Close(from);
            Close(to);
        }
    }

    void Close(TcpClient client)
    {
        if (_open.TryRemove(client, out _))
        {
            client.Dispose();
        }
    }

    /// <summary>Stops accepting and cuts every connection through the proxy.</summary>
    public async Task CloseAsync()
    {
        if (_accepting is { } accepting)
        {
            await accepting.CancelAsync();
            accepting.Dispose();
            _accepting = null;
        }

        _listener?.Stop();
        _listener = null;
        foreach (var client in _open.Keys)
        {
            Close(client);
        }
    }

    public async ValueTask DisposeAsync() => await CloseAsync();
}
