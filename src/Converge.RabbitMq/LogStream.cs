using Converge.Storage;

namespace Converge.RabbitMq;

/// <summary>The event log mirrored to a stream.</summary>
internal sealed class LogStream : IAsyncDisposable
{
    public const string LockSuffix = ".relay-lock";

    readonly RabbitMqTransport _transport;
    readonly Doorbell _wake = new();

    public LogStream(RabbitMqTransport transport, string stream)
    {
        _transport = transport;
        BrokerName = transport.BrokerName(stream);
        RelayCheckpoint = "rabbitmq-stream:" + BrokerName;
    }

    public string BrokerName { get; }

    public string RelayCheckpoint { get; }

    public void Wake() => _wake.Ring();

    public async Task RunAsync(CancellationToken stopping)
    {
        try
        {
            await _wake.WaitAsync(Timeout.InfiniteTimeSpan, TimeProvider.System, stopping);
        }
        catch (OperationCanceledException)
        {
            // Stopped.
        }
    }

    public ValueTask<IReadOnlyList<LogEvent>> ReadAsync(long afterPosition, int max, CancellationToken cancellationToken) =>
        _transport.Inner.ReadLogAsync(afterPosition, max, cancellationToken);

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
