using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests;

public sealed class DoorbellTests
{
    [Fact]
    public async Task A_ring_before_the_wait_is_remembered()
    {
        var bell = new Doorbell();
        bell.Ring();

        Assert.True(await bell.WaitAsync(TimeSpan.FromHours(1), new FakeTimeProvider(), CancellationToken.None));
    }

    [Fact]
    public async Task A_ring_during_the_wait_wakes_the_waiter_and_is_consumed()
    {
        var time = new FakeTimeProvider();
        var bell = new Doorbell();
        var waiting = bell.WaitAsync(TimeSpan.FromHours(1), time, CancellationToken.None);

        bell.Ring();

        Assert.True(await waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        var next = bell.WaitAsync(TimeSpan.FromSeconds(5), time, CancellationToken.None);
        Assert.False(next.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(5));
        Assert.False(await next.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task Cancellation_ends_the_wait()
    {
        using var cancellation = new CancellationTokenSource();
        var waiting = new Doorbell().WaitAsync(TimeSpan.FromHours(1), new FakeTimeProvider(), cancellation.Token);

        await cancellation.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(TimeSpan.FromSeconds(10)));
    }
}
