using System.Diagnostics;

namespace Converge.Bench;

/// <summary>
/// Waits until a <see cref="Stopwatch"/> timestamp with sub-millisecond precision: a timer sleep for all but
/// the last ~1.5 ms (timers fire late by up to a tick), then a spin that yields the core to other threads.
/// </summary>
public static class PreciseWait
{
    static readonly long SpinWindow = Stopwatch.Frequency * 3 / 2000;

    /// <summary>Returns at or just after <paramref name="timestamp"/>; at once when it has passed.</summary>
    public static async ValueTask UntilAsync(long timestamp, CancellationToken cancellationToken)
    {
        var remaining = timestamp - Stopwatch.GetTimestamp();
        if (remaining > SpinWindow)
        {
            await Task.Delay(TimeSpan.FromSeconds((double)(remaining - SpinWindow) / Stopwatch.Frequency), cancellationToken);
        }

        var spinner = default(SpinWait);
        while (Stopwatch.GetTimestamp() < timestamp)
        {
            cancellationToken.ThrowIfCancellationRequested();
            spinner.SpinOnce(sleep1Threshold: -1);
        }
    }
}
