using System.Threading.Channels;
using Converge.Consistency;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing.InMemory;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests.Consistency;

/// <summary>
/// Waits for a consumer group on the in-memory store, on a fake clock that tells the test each time the wait goes to
/// sleep, so that every step is taken when the wait is known to be waiting.
/// </summary>
public sealed class ConsistencyWaiterTests : IAsyncDisposable
{
    static readonly TimeSpan Guard = TimeSpan.FromSeconds(10);
    readonly SleepingTime _time = new();
    readonly InMemoryMessageStore _store;
    readonly ConsistencyWaiter _waiter;

    public ConsistencyWaiterTests()
    {
        _store = new InMemoryMessageStore(_time);
        _waiter = new ConsistencyWaiter(new ConvergeOptions { TimeProvider = _time }, _store);
    }

    [Fact]
    public async Task A_group_at_or_past_the_token_has_reached_it_at_once()
    {
        await MoveGroupAsync(0, 5);

        var exact = await _waiter.WaitForGroupAsync("billing", new ConsistencyToken(5), TimeSpan.Zero);
        var earlier = await _waiter.WaitForGroupAsync("billing", new ConsistencyToken(3), TimeSpan.Zero);
        var never = await _waiter.WaitForGroupAsync("never-ran", ConsistencyToken.None, TimeSpan.Zero);

        Assert.Equal(new ConsistencyWaitResult(true, new ConsistencyToken(5), "billing", "billing", 5), exact);
        Assert.True(earlier.Reached);
        Assert.Null(earlier.Reason);
        Assert.Equal((true, 0L), (never.Reached, never.Position));
    }

    [Fact]
    public async Task A_group_behind_the_token_is_waited_for_until_the_timeout_and_not_a_moment_less()
    {
        await MoveGroupAsync(0, 4);
        var wait = _waiter.WaitForGroupAsync("billing", new ConsistencyToken(5), TimeSpan.FromSeconds(2)).AsTask();
        await _time.NextSleepAsync();

        _time.Advance(TimeSpan.FromSeconds(2) - TimeSpan.FromMilliseconds(1));
        await _time.NextSleepAsync();
        Assert.False(wait.IsCompleted);

        _time.Advance(TimeSpan.FromMilliseconds(1));
        var result = await wait.WaitAsync(Guard);
        Assert.False(result.Reached);
        Assert.Equal(4, result.Position);
        Assert.Equal("consumer group 'billing' is at position 4; cv1.5 needs position 5", result.Reason);
    }

    [Fact]
    public async Task A_checkpoint_moved_by_another_process_is_seen_within_the_longest_interval()
    {
        await MoveGroupAsync(0, 4);
        var wait = _waiter.WaitForGroupAsync("billing", new ConsistencyToken(5), TimeSpan.FromSeconds(10)).AsTask();

        // Let the intervals grow to their longest (1, 2, 4 ... ms, then 50 ms) before the checkpoint moves.
        for (var slept = 0; slept < 10; slept++)
        {
            await _time.NextSleepAsync();
            Assert.False(wait.IsCompleted);
            _time.Advance(ConsistencyWaiter.MaxInterval);
        }

        await _time.NextSleepAsync();
        await MoveGroupAsync(4, 5);
        _time.Advance(ConsistencyWaiter.MaxInterval);

        var result = await wait.WaitAsync(Guard);
        Assert.True(result.Reached);
        Assert.Equal(5, result.Position);
    }

    [Fact]
    public async Task A_checkpoint_committed_in_this_process_wakes_the_wait_without_the_clock_moving()
    {
        await MoveGroupAsync(0, 4);
        var started = _time.GetUtcNow();
        var wait = _waiter.WaitForGroupAsync("billing", new ConsistencyToken(5), TimeSpan.FromSeconds(10)).AsTask();
        await _time.NextSleepAsync();
        Assert.False(wait.IsCompleted);

        await MoveGroupAsync(4, 5);
        _store.Signals.Checkpoints.Ring();

        var result = await wait.WaitAsync(Guard);
        Assert.True(result.Reached);
        Assert.Equal(started, _time.GetUtcNow());
    }

    [Fact]
    public async Task A_cancelled_wait_throws_and_a_negative_timeout_is_refused()
    {
        using var cancel = new CancellationTokenSource();
        var wait = _waiter.WaitForGroupAsync("billing", new ConsistencyToken(5), Timeout.InfiniteTimeSpan, cancel.Token).AsTask();
        await _time.NextSleepAsync();

        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => wait.WaitAsync(Guard));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => _waiter.WaitForGroupAsync("billing", new ConsistencyToken(5), TimeSpan.FromSeconds(-2)).AsTask());
    }

    [Fact]
    public async Task A_projection_wait_on_a_store_without_a_database_says_so()
    {
        var error = await Assert.ThrowsAsync<NotSupportedException>(() => _waiter.WaitForProjectionAsync("orders", new ConsistencyToken(1), TimeSpan.Zero).AsTask());

        Assert.Contains("Use SQLite or PostgreSQL", error.Message, StringComparison.Ordinal);
    }

    async Task MoveGroupAsync(long from, long to)
    {
        await using var transaction = await _store.BeginAsync(CancellationToken.None);
        Assert.True(await transaction.SaveConsumerGroupAsync("billing", from, to, 0, null, CancellationToken.None));
        await transaction.CommitAsync(CancellationToken.None);
    }

    public ValueTask DisposeAsync() => _store.DisposeAsync();

    /// <summary>A fake clock that counts the timers created on it: each is a wait going to sleep.</summary>
    sealed class SleepingTime() : FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero))
    {
        readonly Channel<bool> _sleeps = Channel.CreateUnbounded<bool>();

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = base.CreateTimer(callback, state, dueTime, period);
            _sleeps.Writer.TryWrite(true);
            return timer;
        }

        public async Task NextSleepAsync()
        {
            await _sleeps.Reader.ReadAsync().AsTask().WaitAsync(Guard);
        }
    }
}
