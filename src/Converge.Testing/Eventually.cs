namespace Converge.Testing;

/// <summary>Awaits a condition instead of sleeping: checks it again after short pauses until it holds or time runs out.</summary>
public static class Eventually
{
    /// <summary>The default time allowed: 30 seconds.</summary>
    public static TimeSpan DefaultTimeout { get; } = TimeSpan.FromSeconds(30);

    /// <summary>Returns once <paramref name="condition"/> holds; throws a <see cref="TimeoutException"/> naming <paramref name="what"/> after <paramref name="timeout"/> (default 30 s).</summary>
    public static Task UntilAsync(Func<bool> condition, Func<string> what, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        return UntilAsync(() => Task.FromResult(condition()), what, timeout);
    }

    /// <inheritdoc cref="UntilAsync(Func{bool}, Func{string}, TimeSpan?)"/>
    public static Task UntilAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null) =>
        UntilAsync(condition, () => what, timeout);

    /// <inheritdoc cref="UntilAsync(Func{bool}, Func{string}, TimeSpan?)"/>
    public static async Task UntilAsync(Func<Task<bool>> condition, Func<string> what, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        ArgumentNullException.ThrowIfNull(what);
        var wait = timeout ?? DefaultTimeout;
        var started = WallClock.Instance.GetTimestamp();
        while (!await condition())
        {
            if (WallClock.Instance.GetElapsedTime(started) > wait)
            {
                throw new TimeoutException($"Still waiting after {wait}: {what()}.");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(2));
        }
    }
}
