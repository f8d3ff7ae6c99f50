using Microsoft.Extensions.Time.Testing;

namespace Converge.Testing.Tests;

/// <summary>
/// What Converge's tests rely on from <see cref="FakeTimeProvider"/>: time moves only when advanced, timers and
/// <c>Task.Delay</c> fire during <c>Advance</c> on the caller's thread and in due order. Unlike a clock that stops at
/// each due time, callbacks read the time advanced to; no test depends on the clock reading at a timer's due time.
/// </summary>
public sealed class FakeTimeProviderTests
{
    [Fact]
    public void Time_moves_only_when_advanced()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2031, 5, 1, 0, 0, 0, TimeSpan.Zero));
        var timestamp = time.GetTimestamp();

        time.Advance(TimeSpan.FromMinutes(3));

        Assert.Equal(new DateTimeOffset(2031, 5, 1, 0, 3, 0, TimeSpan.Zero), time.GetUtcNow());
        Assert.Equal(TimeSpan.FromMinutes(3), time.GetElapsedTime(timestamp));
        Assert.Equal(TimeSpan.Zero, time.AutoAdvanceAmount);
    }

    [Fact]
    public void Timers_fire_during_advance_in_due_order()
    {
        var time = new FakeTimeProvider();
        var fired = new List<string>();
        using var late = time.CreateTimer(_ => fired.Add("late"), null, TimeSpan.FromSeconds(20), Timeout.InfiniteTimeSpan);
        using var early = time.CreateTimer(_ => fired.Add("early"), null, TimeSpan.FromSeconds(10), Timeout.InfiniteTimeSpan);

        time.Advance(TimeSpan.FromSeconds(15));
        Assert.Equal(["early"], fired);

        time.Advance(TimeSpan.FromSeconds(15));
        Assert.Equal(["early", "late"], fired);
    }

    [Fact]
    public void Periodic_timers_fire_every_period_until_disposed()
    {
        var time = new FakeTimeProvider();
        var count = 0;
        var timer = time.CreateTimer(_ => count++, null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));

        time.Advance(TimeSpan.FromSeconds(3.5));
        timer.Dispose();
        time.Advance(TimeSpan.FromSeconds(10));

        Assert.Equal(3, count);
    }

    [Fact]
    public async Task Task_Delay_on_the_fake_clock_completes_when_advanced()
    {
        var time = new FakeTimeProvider();
        var delay = Task.Delay(TimeSpan.FromMinutes(1), time);

        time.Advance(TimeSpan.FromSeconds(59));
        Assert.False(delay.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(1));

        await delay.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
