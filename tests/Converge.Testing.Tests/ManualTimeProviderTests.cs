namespace Converge.Testing.Tests;

public sealed class ManualTimeProviderTests
{
    [Fact]
    public void Time_moves_only_when_advanced()
    {
        var time = new ManualTimeProvider(new DateTimeOffset(2031, 5, 1, 0, 0, 0, TimeSpan.Zero));

        time.Advance(TimeSpan.FromMinutes(3));

        Assert.Equal(new DateTimeOffset(2031, 5, 1, 0, 3, 0, TimeSpan.Zero), time.GetUtcNow());
    }

    [Fact]
    public void Timers_fire_in_due_order_with_the_clock_at_their_due_time()
    {
        var time = new ManualTimeProvider();
        var start = time.GetUtcNow();
        var fired = new List<(string Name, TimeSpan At)>();
        using var late = time.CreateTimer(_ => fired.Add(("late", time.GetUtcNow() - start)), null, TimeSpan.FromSeconds(20), Timeout.InfiniteTimeSpan);
        using var early = time.CreateTimer(_ => fired.Add(("early", time.GetUtcNow() - start)), null, TimeSpan.FromSeconds(10), Timeout.InfiniteTimeSpan);

        time.Advance(TimeSpan.FromSeconds(30));

        Assert.Equal([("early", TimeSpan.FromSeconds(10)), ("late", TimeSpan.FromSeconds(20))], fired);
    }

    [Fact]
    public void Periodic_timers_fire_every_period_until_disposed()
    {
        var time = new ManualTimeProvider();
        var count = 0;
        var timer = time.CreateTimer(_ => count++, null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));

        time.Advance(TimeSpan.FromSeconds(3.5));
        timer.Dispose();
        time.Advance(TimeSpan.FromSeconds(10));

        Assert.Equal(3, count);
    }

    [Fact]
    public async Task Task_Delay_on_the_manual_clock_completes_when_advanced()
    {
        var time = new ManualTimeProvider();
        var delay = Task.Delay(TimeSpan.FromMinutes(1), time);

        Assert.False(delay.IsCompleted);
        time.Advance(TimeSpan.FromMinutes(1));

        await delay.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
