using Converge.Jobs;
using Converge.Storage;
using Converge.Testing;

namespace Converge.Tests.Jobs;

/// <summary>Recurring jobs: each occurrence once across processes, misfires after downtime, time zones.</summary>
public sealed class RecurringJobTests() : JobsTest(Start)
{
    static readonly DateTimeOffset Start = new(2030, 1, 1, 0, 0, 30, TimeSpan.Zero);
    static readonly TimeSpan Nudge = TimeSpan.FromMilliseconds(250);

    static Action<Runtime.ConvergeOptions> EveryMinute(MisfirePolicy misfire = MisfirePolicy.RunOnce) => o =>
    {
        o.AddRecurringJob("minutely", "* * * * *", new Tick("minutely"), r => r.Misfire = misfire);
        o.Jobs.MisfireThreshold = TimeSpan.FromSeconds(20);

        // These tests move the clock by minutes; leases outlast that, so no run is handed to the other process by a
        // lease that expired only on the test's clock.
        o.LeaseDuration = TimeSpan.FromHours(1);
    };

    static async Task<bool> TicksQueueIdleAsync(ConvergeTestHost host) =>
        (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.Where(q => q.Queue == "ticks").All(q => q.Ready + q.InFlight + q.Scheduled == 0);

    [Fact]
    public async Task Each_occurrence_runs_exactly_once_across_two_processes()
    {
        await using var a = await JobsFixture.StartAsync(DbPath, Log, Time, "a", EveryMinute());
        await using var b = await JobsFixture.StartAsync(DbPath, Log, Time, "b", EveryMinute());

        for (var minute = 1; minute <= 10; minute++)
        {
            Time.Advance(TimeSpan.FromMinutes(1));
            var expected = minute;
            await JobsFixture.AdvanceUntilAsync(Time, Nudge, () => Log.Ticks.Count >= expected, () => $"occurrence {expected} ({Log.Ticks.Count} so far)");

            // Let its run commit before the clock jumps a minute: a jump past a lease hands a running job to the
            // other process, which at-least-once delivery allows (the inbox then keeps its effects single).
            await JobsFixture.WaitUntilAsync(async () => await TicksQueueIdleAsync(a), "the occurrence's run to commit");
        }

        var occurrences = Log.Ticks.Select(t => t.AsOf!.Value).ToList();
        Assert.True(occurrences.Count == 10, string.Join(", ", Log.Ticks.Select(t => $"{t.Host}:{t.AsOf:HH:mm:ss}")));
        Assert.Equal(Enumerable.Range(1, 10).Select(m => Start.AddSeconds(-30).AddMinutes(m)), occurrences.Order());
        var schedule = Assert.Single(await a.Store.JobQueries().ListRecurringJobsAsync(CancellationToken.None));
        Assert.Equal((Start.AddSeconds(-30).AddMinutes(11), Start.AddSeconds(-30).AddMinutes(10)), (schedule.NextAt, schedule.LastAt));
    }

    [Fact]
    public async Task After_downtime_the_run_once_policy_runs_one_occurrence_for_all_it_missed()
    {
        await (await JobsFixture.StartAsync(DbPath, Log, Time, "a", EveryMinute())).DisposeAsync();

        Time.Advance(TimeSpan.FromHours(1));
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time, "a", EveryMinute());
        Time.Advance(TimeSpan.FromSeconds(1));
        await JobsFixture.WaitUntilAsync(() => Log.Ticks.Count >= 1, () => "the catch-up occurrence");
        await JobsFixture.AdvanceUntilAsync(Time, Nudge, () => Log.Ticks.Count >= 2, () => "the next occurrence on time");

        // At 01:00:30 every occurrence since 00:01 is more than 20 s late: one run stands for all of them.
        var latestMissed = Start.AddSeconds(-30).AddMinutes(60);
        Assert.Equal([latestMissed, latestMissed.AddMinutes(1)], Log.Ticks.Select(t => t.AsOf!.Value));
    }

    [Fact]
    public async Task After_a_long_outage_the_run_once_policy_still_runs_once()
    {
        await (await JobsFixture.StartAsync(DbPath, Log, Time, "a", EveryMinute())).DisposeAsync();

        Time.Advance(TimeSpan.FromHours(50));
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time, "a", EveryMinute());
        await JobsFixture.WaitUntilAsync(async () => (await host.Store.JobQueries().ListRecurringJobsAsync(CancellationToken.None)).Single().NextAt > Time.GetUtcNow(), "the schedule to move past the outage");
        await JobsFixture.WaitUntilAsync(() => Log.Ticks.Count >= 1, () => "the catch-up occurrence");

        Assert.Equal([Start.AddSeconds(-30).AddHours(50)], Log.Ticks.Select(t => t.AsOf!.Value));
    }

    [Fact]
    public async Task A_schedule_no_longer_registered_stops_firing()
    {
        await (await JobsFixture.StartAsync(DbPath, Log, Time, "a", EveryMinute())).DisposeAsync();

        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time, "a", o => o.AddRecurringJob("renamed", "* * * * *", new Tick("renamed")));
        for (var minute = 1; minute <= 3; minute++)
        {
            Time.Advance(TimeSpan.FromMinutes(1));
            var expected = minute;
            await JobsFixture.AdvanceUntilAsync(Time, Nudge, () => Log.Ticks.Count >= expected, () => $"occurrence {expected} of the renamed schedule");
            await JobsFixture.WaitUntilAsync(async () => await TicksQueueIdleAsync(host), "the occurrence's run to commit");
        }

        Assert.All(Log.Ticks, t => Assert.Equal("renamed", t.Job.Name));
        Assert.Equal(2, (await host.Store.JobQueries().ListRecurringJobsAsync(CancellationToken.None)).Count);
    }

    [Fact]
    public async Task After_downtime_the_skip_policy_waits_for_the_next_occurrence()
    {
        await (await JobsFixture.StartAsync(DbPath, Log, Time, "a", EveryMinute(MisfirePolicy.Skip))).DisposeAsync();

        Time.Advance(TimeSpan.FromHours(1));
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time, "a", EveryMinute(MisfirePolicy.Skip));
        Time.Advance(TimeSpan.FromSeconds(1));
        await JobsFixture.WaitUntilAsync(async () => (await host.Store.JobQueries().ListRecurringJobsAsync(CancellationToken.None)).Single().NextAt > Time.GetUtcNow(), "the schedule to move past the missed occurrences");
        Assert.Empty(Log.Ticks);

        await JobsFixture.AdvanceUntilAsync(Time, Nudge, () => Log.Ticks.Count >= 1, () => "the next occurrence");
        Assert.Equal([Start.AddSeconds(-30).AddMinutes(61)], Log.Ticks.Select(t => t.AsOf!.Value));
    }

    [Fact]
    public async Task A_trigger_runs_an_occurrence_now_outside_the_schedule()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time, "a", o => o.AddRecurringJob("monthly", "0 0 1 * *", new Tick("monthly")));

        var job = await host.Jobs.TriggerRecurringAsync("monthly");
        await JobsFixture.WaitUntilAsync(() => Log.Ticks.Count == 1, () => "the triggered occurrence");

        // The handler records its tick before its completion commits, so wait for the commit too.
        await JobsFixture.WaitUntilAsync(async () => (await host.Jobs.GetAsync(job.Id))?.State == JobState.Succeeded, "the triggered occurrence to commit as succeeded");

        Assert.False(job.Duplicate);
        Assert.Equal(("monthly", Time.GetUtcNow()), (Log.Ticks[0].Job.Name, Log.Ticks[0].AsOf));
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await host.Jobs.TriggerRecurringAsync("nope"));
    }

    [Fact]
    public void Cron_is_read_in_itsTime_zone_across_daylight_saving()
    {
        var berlin = CronSchedule.Parse("30 2 * * *", "Europe/Berlin");

        // 2030-03-31: clocks go from 02:00 to 03:00 in Berlin; 02:30 does not exist and runs right after the gap.
        var spring = berlin.Next(new DateTimeOffset(2030, 3, 30, 12, 0, 0, TimeSpan.Zero))!.Value;
        var afterSpring = berlin.Next(spring)!.Value;
        Assert.Equal(new DateTimeOffset(2030, 3, 31, 1, 0, 0, TimeSpan.Zero), spring);
        Assert.Equal(new DateTimeOffset(2030, 4, 1, 0, 30, 0, TimeSpan.Zero), afterSpring);

        // 2030-10-27: 02:30 happens twice in Berlin; the job runs once.
        var autumn = berlin.Between(new DateTimeOffset(2030, 10, 26, 12, 0, 0, TimeSpan.Zero), new DateTimeOffset(2030, 10, 27, 12, 0, 0, TimeSpan.Zero), 10).ToList();
        Assert.Single(autumn);
    }

    [Theory]
    [InlineData("not cron", "UTC", "is not a cron expression")]
    [InlineData("0 0 1 * *", "Mars/Olympus", "is not known on this machine")]
    public void Invalid_schedules_are_refused_with_the_fix(string cron, string zone, string expected)
    {
        var options = new Runtime.ConvergeOptions();
        options.Messages.Register<Tick>("test.tick");
        options.Job<Tick, TickHandler>("ticks");
        options.AddRecurringJob("bad", cron, new Tick("bad"), r => r.TimeZone = zone);
        options.StoreFactory = _ => throw new InvalidOperationException();

        Assert.Contains(options.Validate(), e => e.Contains(expected, StringComparison.Ordinal));
    }
}
