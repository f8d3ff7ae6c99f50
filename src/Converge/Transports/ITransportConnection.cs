namespace Converge.Transports;

/// <summary>
/// A transport that keeps a connection to a broker, for the broker health check (<c>AddConvergeHealthChecks</c>).
/// Optional: a transport without it is reported as connected.
/// </summary>
public interface ITransportConnection
{
    /// <summary>
    /// Whether the connection to the broker is open now. Must be cheap and must not block or connect: the health check
    /// reads it on every probe. While it is <c>false</c> messages wait in the outbox.
    /// </summary>
    bool IsConnected { get; }

    /// <summary>The broker's address, without credentials, for the health report.</summary>
    string Broker { get; }
}
