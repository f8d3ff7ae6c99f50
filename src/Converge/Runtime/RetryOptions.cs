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

    /// <summary>Creates the default policy.</summary>
    public RetryOptions() => IsTransient = exception => IsTransientByDefault(exception, DatabaseErrors);

    /// <summary>
    /// Decides whether a failure is worth retrying; a failure it calls permanent is dead-lettered at once with
    /// reason <c>permanent-failure</c>. Default: <see cref="IsTransientByDefault(Exception, Func{DbException, bool}?)"/>
    /// with <see cref="DatabaseErrors"/>, read at each call. A replacement may call that method for the cases it
    /// does not decide itself.
    /// </summary>
    public Func<Exception, bool> IsTransient { get; set; }

    /// <summary>
    /// How the default classification judges a <see cref="DbException"/>: <c>true</c> when retrying can help. Set by
    /// the store's <c>Use...</c> method, because only the provider knows its codes (<c>UseSqlite</c>: busy and locked
    /// are transient, constraint violations and every other code are not; <c>UsePostgreSql</c>: by SQLSTATE).
    /// <c>null</c> (no store set it): <see cref="DbException.IsTransient"/>, which is <c>false</c> unless the provider
    /// overrides it.
    /// </summary>
    public Func<DbException, bool>? DatabaseErrors { get; set; }

    /// <summary>The default classification without a store's judgement of database errors; see <see cref="IsTransientByDefault(Exception, Func{DbException, bool}?)"/>.</summary>
    public static bool IsTransientByDefault(Exception exception) => IsTransientByDefault(exception, null);

    /// <summary>
    /// The default classification: a <see cref="HandlerFailureException"/> says so itself; a <see cref="DbException"/>
    /// (or an exception whose <see cref="Exception.InnerException"/> is one, as an ORM's update exception wraps the
    /// provider's) is judged by <paramref name="databaseErrors"/>, or by <see cref="DbException.IsTransient"/> when that
    /// is <c>null</c>; argument, format, JSON, cast and not-supported errors are permanent; anything else is transient.
    /// </summary>
    public static bool IsTransientByDefault(Exception exception, Func<DbException, bool>? databaseErrors) => exception switch
    {
        HandlerFailureException failure => !failure.NonRetryable,
        DbException database => databaseErrors?.Invoke(database) ?? database.IsTransient,
        ArgumentException or FormatException or JsonException or InvalidCastException or NotSupportedException or NotImplementedException => false,
        { InnerException: DbException database } => databaseErrors?.Invoke(database) ?? database.IsTransient,
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
