namespace Converge.Hosting;

/// <summary>
/// The thresholds of the health checks <c>AddConvergeHealthChecks</c> registers. Validated when the checks are
/// registered, with messages that name the fix.
/// </summary>
public sealed class ConvergeHealthCheckOptions
{
    /// <summary>
    /// How long the store check waits for its query before reporting the store unreachable. Default 5 seconds, on the
    /// application's clock (<c>ConvergeOptions.TimeProvider</c>).
    /// </summary>
    public TimeSpan StoreTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// A consumer group more than this many events behind the head of the log makes the consumer-group check report
    /// Degraded. Default 10,000 events.
    /// </summary>
    public long MaxConsumerGroupLag { get; set; } = 10_000;

    /// <summary>
    /// This many stuck saga instances (or more) make the saga check report Degraded: they wait for an operator to resume
    /// them. Default 1, so any stuck instance shows.
    /// </summary>
    public long StuckSagasDegraded { get; set; } = 1;

    /// <summary>
    /// This many stuck saga instances (or more) make the saga check report Unhealthy; <c>null</c> (the default) never
    /// does. At least <see cref="StuckSagasDegraded"/> when set.
    /// </summary>
    public long? StuckSagasUnhealthy { get; set; }

    /// <summary>The tags of every check, for filtering in <c>MapHealthChecks</c>. Default <c>converge</c>.</summary>
    public IList<string> Tags { get; } = ["converge"];

    /// <summary>Every problem with the options, each naming its fix; empty when they are valid.</summary>
    public IEnumerable<string> Validate()
    {
        if (StoreTimeout <= TimeSpan.Zero)
        {
            yield return $"StoreTimeout is {StoreTimeout}; set a positive duration (default 5 seconds).";
        }

        if (MaxConsumerGroupLag < 0)
        {
            yield return $"MaxConsumerGroupLag is {MaxConsumerGroupLag}; set 0 or more events (default 10,000).";
        }

        if (StuckSagasDegraded < 1)
        {
            yield return $"StuckSagasDegraded is {StuckSagasDegraded}; set at least 1 (default 1).";
        }

        if (StuckSagasUnhealthy is { } unhealthy && unhealthy < StuckSagasDegraded)
        {
            yield return $"StuckSagasUnhealthy is {unhealthy}, below StuckSagasDegraded ({StuckSagasDegraded}); set it at least as high, or null for never.";
        }
    }
}
