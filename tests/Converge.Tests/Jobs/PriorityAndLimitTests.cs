using Converge.Jobs;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;

namespace Converge.Tests.Jobs;

/// <summary>Priorities without starvation; concurrency and rate limits that hold across processes.</summary>
public sealed class PriorityAndLimitTests : JobsTest
{

    /// <summary>Enqueues from a process that runs no workers: 40 low-priority jobs first, then 200 high-priority ones.</summary>
    async Task EnqueueLowThenHighAsync()
    {
        await using var producer = await JobsFixture.StartAsync(DbPath, Log, Time, "producer", o => o.RunConsumers = false);
        await using var transaction = await producer.Bus.BeginTransactionAsync();
        for (var i = 0; i < 40; i++)
        {
            await producer.Jobs.EnqueueAsync(new Work(i, "low"), transaction.Transaction, new JobOptions { Priority = 0 });
        }

        Time.Advance(TimeSpan.FromSeconds(1));
        for (var i = 0; i < 200; i++)
        {
            await producer.Jobs.EnqueueAsync(new Work(1000 + i, "high"), transaction.Transaction, new JobOptions { Priority = 10 });
        }

        await transaction.CommitAsync();
    }

    async Task<IReadOnlyList<string>> RunAllAsync(int oldestFirstEvery)
    {
        await EnqueueLowThenHighAsync();
        await using var worker = await JobsFixture.StartAsync(DbPath, Log, Time, "worker", o => o.Queue(JobsFixture.Queue, q =>
        {
            q.Concurrency = 1;
            q.BatchSize = 4;
            q.OldestFirstEvery = oldestFirstEvery;
        }));
        await JobsFixture.WaitUntilAsync(() => Log.Runs.Count == 240, () => $"all 240 jobs to run ({Log.Runs.Count} so far)");
        return [.. Log.Runs.Select(r => r.Job.Kind)];
    }

    [Fact]
    public async Task Low_priority_jobs_keep_moving_while_high_priority_ones_wait()
    {
        var order = await RunAllAsync(oldestFirstEvery: 4);

        // Every fourth claim takes the oldest jobs: low-priority work gets a share long before the high ones run out.
        var lowInFirstHundred = order.Take(100).Count(k => k == "low");
        Assert.InRange(lowInFirstHundred, 15, 40);
    }

    [Fact]
    public async Task Without_the_oldest_first_share_priority_is_strict()
    {
        var order = await RunAllAsync(oldestFirstEvery: 0);

        // A worker holds up to Concurrency + BatchSize claimed jobs (5 here), which may start in any order.
        Assert.All(order.Take(195), k => Assert.Equal("high", k));
    }

    [Fact]
    public async Task The_in_flight_limit_holds_across_two_processes()
    {
        void Limit(Runtime.ConvergeOptions o) => o.Queue("gated", q =>
        {
            q.Concurrency = 5;
            q.MaxInFlight = 3;
        });
        await using var a = await JobsFixture.StartAsync(DbPath, Log, Time, "a", Limit);
        await using var b = await JobsFixture.StartAsync(DbPath, Log, Time, "b", Limit);

        var ids = new List<Guid>();
        for (var i = 0; i < 12; i++)
        {
            ids.Add((await a.Jobs.EnqueueAsync(new Gated(i))).Id);
        }

        await JobsFixture.WaitUntilAsync(() => Log.Running == 3, () => $"three jobs to be running ({Log.Running})");

        // Both processes poll; give them every chance to overshoot before opening the gate.
        for (var i = 0; i < 5; i++)
        {
            Time.Advance(a.Options.PollInterval);
            await JobsFixture.WaitUntilAsync(async () => (await a.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.Single(q => q.Queue == "gated").InFlight == 3, "three leases");
        }

        Assert.Equal(3, Log.MaxRunning);
        Log.Gate.SetResult();
        await JobsFixture.WaitUntilAsync(async () => (await Task.WhenAll(ids.Select(id => a.Jobs.GetAsync(id).AsTask()))).All(j => j?.State == JobState.Succeeded), "all gated jobs to succeed");
        Assert.Equal(3, Log.MaxRunning);
    }

    [Fact]
    public async Task The_rate_limit_holds_across_two_processes()
    {
        void Limit(Runtime.ConvergeOptions o)
        {
            o.LeaseDuration = TimeSpan.FromHours(1);
            o.Queue(JobsFixture.Queue, q =>
            {
                q.Concurrency = 8;
                q.RateLimit = new RateLimit(PermitsPerSecond: 10, Burst: 2);
            });
        }
        await using var a = await JobsFixture.StartAsync(DbPath, Log, Time, "a", Limit);
        await using var b = await JobsFixture.StartAsync(DbPath, Log, Time, "b", Limit);
        await using (var transaction = await a.Bus.BeginTransactionAsync())
        {
            for (var i = 0; i < 50; i++)
            {
                await a.Jobs.EnqueueAsync(new Work(i), transaction.Transaction);
            }

            await transaction.CommitAsync();
        }

        // A full bucket allows the burst of 2; after that one start per 100 ms, whichever process takes it. At no
        // point may the starts outrun the bucket, and 22 starts cannot happen in less than 2 s of the clock.
        await JobsFixture.WaitUntilAsync(() => Log.Runs.Count >= 2, () => "the burst to run");
        var started = Time.GetUtcNow();
        await JobsFixture.AdvanceUntilAsync(
            Time,
            TimeSpan.FromMilliseconds(20),
            () =>
            {
                var allowed = 2 + (int)Math.Floor((Time.GetUtcNow() - started).TotalSeconds * 10);
                Assert.InRange(Log.Runs.Count, 0, allowed);
                return Log.Runs.Count >= 22;
            },
            () => $"22 starts ({Log.Runs.Count} so far)");

        Assert.True(Time.GetUtcNow() - started >= TimeSpan.FromSeconds(2), $"22 starts took {Time.GetUtcNow() - started} of the clock");

        // Workers that lag behind the clock have permits saved up (up to the burst), so a start or two may land
        // between the last look and this one: every start so far, however many, is a different job.
        var runs = Log.Runs.Select(r => r.Job.N).ToList();
        Assert.True(runs.Count >= 22, $"{runs.Count} starts");
        Assert.Equal(runs.Count, runs.Distinct().Count());
    }
}
