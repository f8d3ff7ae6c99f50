namespace Converge.Sagas;

/// <summary>
/// How a saga re-sends a step that must be answered before it can go on: a retriable step or a pivot that failed
/// or timed out, and a compensation that was refused or timed out. Each re-send waits for an exponential backoff with
/// jitter; after <see cref="MaxAttempts"/> sends the instance stops and becomes <see cref="SagaState.Stuck"/>
/// until an operator resumes it. Set the defaults on <c>ConvergeOptions.SagaRetry</c>; a saga
/// (<see cref="SagaBuilder{TData}.Retry"/>) or a step (<see cref="StepBuilder{TData}.Retry"/>) overrides them.
/// </summary>
public sealed class SagaRetryOptions
{
    /// <summary>Sends of one step's command (or of its compensation), counting the first, before the instance is stuck. Default 10; at least 1.</summary>
    public int MaxAttempts { get; set; } = 10;

    /// <summary>The pause before the first re-send. Default 1 second.</summary>
    public TimeSpan InitialDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>The longest pause between sends. Default 5 minutes.</summary>
    public TimeSpan MaxDelay { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// The pause before send <paramref name="nextAttempt"/> (2 for the first re-send): <see cref="InitialDelay"/>
    /// doubled per earlier re-send, capped at <see cref="MaxDelay"/>, with "equal jitter" (between half and all of
    /// it, from <paramref name="random"/> in [0, 1)) so that instances failing together do not re-send in lockstep.
    /// </summary>
    public static TimeSpan DelayBefore(int nextAttempt, TimeSpan initialDelay, TimeSpan maxDelay, double random)
    {
        var exponent = Math.Min(Math.Max(nextAttempt - 2, 0), 30);
        var ceiling = Math.Min(initialDelay.TotalMilliseconds * Math.Pow(2, exponent), maxDelay.TotalMilliseconds);
        return TimeSpan.FromMilliseconds((ceiling / 2) + (ceiling / 2 * random));
    }

    internal static IEnumerable<string> Validate(string where, int? maxAttempts, TimeSpan? initialDelay, TimeSpan? maxDelay)
    {
        if (maxAttempts is < 1)
        {
            yield return $"{where}: saga MaxAttempts is {maxAttempts}; set it to 1 or more (1 sends a step once and never re-sends it).";
        }

        if (initialDelay < TimeSpan.Zero || maxDelay < TimeSpan.Zero || (initialDelay is { } initial && maxDelay is { } max && max < initial))
        {
            yield return $"{where}: saga retry delays are inconsistent (InitialDelay {initialDelay}, MaxDelay {maxDelay}); use 0 <= InitialDelay <= MaxDelay.";
        }

        if (maxDelay > TimeSpan.FromDays(30))
        {
            yield return $"{where}: saga retry MaxDelay is {maxDelay}; set at most 30 days.";
        }
    }

    internal IEnumerable<string> Validate() => Validate("SagaRetry", MaxAttempts, InitialDelay, MaxDelay);
}

/// <summary>A saga's or a step's overrides of <see cref="SagaRetryOptions"/>; unset values fall back.</summary>
internal sealed record SagaRetryOverrides(int? MaxAttempts, TimeSpan? InitialDelay, TimeSpan? MaxDelay);

/// <summary>What <see cref="ISagaClient.ResumeAsync"/> did.</summary>
public enum SagaResumeResult
{
    /// <summary>The instance was stuck; its step (or compensation) was sent again, counting attempts from 1.</summary>
    Resumed,

    /// <summary>The instance is not stuck; nothing changed.</summary>
    NotStuck,

    /// <summary>No instance has that transaction id.</summary>
    NotFound,
}
