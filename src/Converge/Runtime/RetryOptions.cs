using System.Data.Common;
using System.Text.Json;

namespace Converge.Runtime;

/// <summary>How failed handler attempts are retried.</summary>
public sealed class RetryOptions
{
    /// <summary>Attempts before a message is dead-lettered, counting the first. Default 5; at least 1.</summary>
    public int MaxAttempts { get; set; } = 5;

    /// <summary>Delay before the second attempt. Default 200 ms.</summary>
    public TimeSpan InitialDelay { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Upper bound on any delay. Default 5 minutes.</summary>
    public TimeSpan MaxDelay { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Decides whether a failure is worth retrying. Default <see cref="IsTransientByDefault"/>: a
    /// <see cref="HandlerFailureException"/> says so itself, a <see cref="DbException"/> asks
    /// <see cref="DbException.IsTransient"/> or is treated as transient, and argument, format, JSON, cast and
    /// not-supported errors are permanent.
    /// </summary>
    public Func<Exception, bool> IsTransient { get; set; } = IsTransientByDefault;

    /// <summary>The default classification; see <see cref="IsTransient"/>.</summary>
    public static bool IsTransientByDefault(Exception exception) => exception switch
    {
        HandlerFailureException failure => !failure.NonRetryable,
        DbException => true,
        ArgumentException or FormatException or JsonException or InvalidCastException or NotSupportedException or NotImplementedException => false,
        _ => true,
    };

    /// <summary>
    /// The delay before attempt <paramref name="nextAttempt"/>: exponential from <see cref="InitialDelay"/>,
    /// capped at <see cref="MaxDelay"/>, with "equal jitter" (between half and all of it) so that a burst of
    /// failures does not retry in lockstep.
    /// </summary>
    public TimeSpan DelayBefore(int nextAttempt, double random)
    {
        var exponent = Math.Min(Math.Max(nextAttempt - 2, 0), 30);
        var ceiling = Math.Min(InitialDelay.TotalMilliseconds * Math.Pow(2, exponent), MaxDelay.TotalMilliseconds);
        return TimeSpan.FromMilliseconds((ceiling / 2) + (ceiling / 2 * random));
    }

    internal IEnumerable<string> Validate()
    {
        if (MaxAttempts < 1)
        {
            yield return $"Retry.MaxAttempts is {MaxAttempts}; set it to 1 or more (1 means no retries).";
        }

        if (InitialDelay < TimeSpan.Zero || MaxDelay < InitialDelay)
        {
            yield return $"Retry delays are inconsistent (InitialDelay {InitialDelay}, MaxDelay {MaxDelay}); use 0 <= InitialDelay <= MaxDelay.";
        }
    }
}

/// <summary>A source of randomness, injectable so tests and simulations control chance.</summary>
public interface IRandomSource
{
    /// <summary>A number in [0, 1). Must be thread-safe.</summary>
    double NextDouble();
}

/// <summary>The default random source, backed by <see cref="Random.Shared"/>.</summary>
public sealed class SharedRandomSource : IRandomSource
{
    /// <summary>The single instance.</summary>
    public static SharedRandomSource Instance { get; } = new();

    /// <inheritdoc />
    public double NextDouble() => Random.Shared.NextDouble();
}
