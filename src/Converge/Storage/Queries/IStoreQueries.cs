namespace Converge.Storage;

/// <summary>
/// Read-only queries of the core for the CLI and the dashboard: status, dead letters, and a business transaction's
/// flow. Optional: a store without it runs every capability, and only the tools that read it say it is missing. The
/// saga and job capabilities have query contracts of their own (<c>ISagaQueries</c>, <c>IJobQueries</c>).
/// </summary>
public interface IStoreQueries
{
    /// <summary>Queue depths, dead letters, log head and consumer-group lag.</summary>
    ValueTask<StoreStatus> GetStatusAsync(CancellationToken cancellationToken);

    /// <summary>Lists dead letters, newest first, optionally of one source only.</summary>
    ValueTask<IReadOnlyList<DeadLetter>> ListDeadLettersAsync(string? source, int max, CancellationToken cancellationToken);

    /// <summary>
    /// Every message and event that carries <paramref name="correlationId"/>: handled (from the inbox), still queued,
    /// dead-lettered, or appended to the log. Unordered; the flow view orders them by causation.
    /// </summary>
    ValueTask<IReadOnlyList<FlowItem>> ReadFlowAsync(string correlationId, CancellationToken cancellationToken);
}
