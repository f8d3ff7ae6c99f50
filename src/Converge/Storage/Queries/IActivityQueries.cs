namespace Converge.Storage;

/// <summary>
/// Recent throughput, for the dashboard's charts: how many messages each queue handled and how many it dead-lettered
/// since a moment. Optional: a store without it runs every capability, and the charts say it is missing.
/// </summary>
public interface IActivityQueries
{
    /// <summary>
    /// Per queue (an inbox consumer, or a dead letters' source): the messages whose handling committed at or after
    /// <paramref name="since"/> (inbox records, so a queue that records no inbox counts none, and records purged by the
    /// inbox's retention are not counted) and the dead letters recorded at or after it. Sorted by queue (ordinal); a
    /// queue with neither is left out. Reads the indexes on the inbox's and the dead letters' times: keep the window short.
    /// </summary>
    ValueTask<IReadOnlyList<QueueActivity>> CountActivitySinceAsync(DateTimeOffset since, CancellationToken cancellationToken);
}

/// <summary>What one queue did since a moment.</summary>
/// <param name="Queue">The queue (inbox consumer or dead-letter source).</param>
/// <param name="Handled">Messages whose handling committed.</param>
/// <param name="DeadLettered">Dead letters recorded.</param>
public sealed record QueueActivity(string Queue, long Handled, long DeadLettered);

/// <summary>Finds <see cref="IActivityQueries"/> on a store.</summary>
public static class ActivityQueryExtensions
{
    /// <summary><paramref name="store"/>'s activity queries.</summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="IActivityQueries"/>.</exception>
    public static IActivityQueries ActivityQueries(this IStore store) => StoreContracts.Require<IActivityQueries>(store, "Activity queries");
}
