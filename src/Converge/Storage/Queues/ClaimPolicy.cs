
namespace Converge.Storage;

/// <summary>
/// How a claim picks and limits messages. The default claims by priority, then due time, with no limits beyond
/// <c>max</c>; job queues set the rest.
/// </summary>
public sealed record ClaimPolicy
{
    /// <summary>The default policy: highest priority first, no limits.</summary>
    public static ClaimPolicy Default { get; } = new();

    /// <summary>
    /// Claim the longest-waiting visible messages regardless of priority. A consumer that takes some claims this
    /// way keeps low priorities moving while high priorities keep arriving. Default <c>false</c>.
    /// </summary>
    public bool OldestFirst { get; init; }

    /// <summary>
    /// The most messages of the queue leased at once across every process; <c>null</c> (default) for no limit. The
    /// store counts live leases inside the claim, so processes cannot overshoot together.
    /// </summary>
    public int? MaxInFlight { get; init; }

    /// <summary>Starts allowed per second across every process, as a token bucket kept in the store; <c>null</c> (default) for no limit.</summary>
    public RateLimit? RateLimit { get; init; }
}
