using Converge.Jobs;
using Converge.Storage;
using Converge.Testing;

namespace Converge.Tests.Jobs;

/// <summary>A job's life: now, later, at a time; its effects once; retries, dead jobs, progress and cancellation.</summary>
public sealed class JobLifecycleTests : JobsTest
{

    [Fact]
    public async Task A_job_enqueued_now_runs_and_reads_back_as_succeeded()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time);

        var asOf = Time.GetUtcNow() - TimeSpan.FromMinutes(5);
        var job = await host.Jobs.EnqueueAsync(new Work(1), new JobOptions { AsOf = asOf, CorrelationId = "tx-1" });
        await JobsFixture.WaitUntilAsync(async () => (await host.Jobs.GetAsync(job.Id))?.State == JobState.Succeeded, "the job to succeed");

        Assert.False(job.Duplicate);
        Assert.Equal([("a", new Work(1), (DateTimeOffset?)asOf)], Log.Runs);
        var info = await host.Jobs.GetAsync(job.Id);
        Assert.Equal(("work", "test.work@1", "tx-1"), (info!.Queue, info.Type, info.CorrelationId));
    }

    [Fact]
    public async Task Delayed_andTimed_jobs_wait_for_theirTime()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time);

        var later = await host.Jobs.EnqueueAsync(new Work(1), new JobOptions { Delay = TimeSpan.FromMinutes(10) });
        var at = await host.Jobs.EnqueueAsync(new Work(2), new JobOptions { RunAt = Time.GetUtcNow() + TimeSpan.FromMinutes(20) });
        Assert.Equal(JobState.Scheduled, (await host.Jobs.GetAsync(later.Id))!.State);

        Time.Advance(TimeSpan.FromMinutes(10));
        await JobsFixture.WaitUntilAsync(() => Log.Runs.Count == 1, () => "the delayed job to run");
        Assert.Equal(JobState.Scheduled, (await host.Jobs.GetAsync(at.Id))!.State);

        // The handler records its run before its completion commits. Moving the clock ten minutes (past the lease)
        // before that commit would let the worker claim the delayed job again.
        await JobsFixture.WaitUntilAsync(async () => (await host.Jobs.GetAsync(later.Id))?.State == JobState.Succeeded, "the delayed job's run to commit");
        Time.Advance(TimeSpan.FromMinutes(10));
        await JobsFixture.WaitUntilAsync(() => Log.Runs.Count == 2, () => "the timed job to run");
        Assert.Equal([1, 2], Log.Runs.Select(r => r.Job.N));
    }

    [Fact]
    public async Task Recorded_writes_commit_with_the_job_once_even_when_it_is_enqueued_twice_with_one_id()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time);
        await using (var setup = await host.Bus.BeginTransactionAsync())
        {
            await setup.Database().ExecuteAsync("CREATE TABLE job_effects (n INTEGER)", [], CancellationToken.None);
            await setup.CommitAsync();
        }

        var id = Guid.NewGuid();
        await host.Jobs.EnqueueAsync(new Work(7, "write"), new JobOptions { JobId = id });
        await host.Jobs.EnqueueAsync(new Work(7, "write"), new JobOptions { JobId = id });
        await JobsFixture.WaitUntilAsync(async () => (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.All(q => q.Ready + q.InFlight + q.Scheduled == 0) && Log.Runs.Count >= 1, "both copies to be handled");

        await using var read = await host.Store.Database().OpenReadConnectionAsync(CancellationToken.None);
        await using var count = read.CreateCommand();
        count.CommandText = "SELECT count(*) FROM job_effects WHERE n = 7";
        Assert.Equal(1L, await count.ExecuteScalarAsync());
    }

    [Fact]
    public async Task A_job_that_fails_for_good_is_dead_and_can_be_retried()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time);

        var job = await host.Jobs.EnqueueAsync(new Work(3, "fail"));
        await JobsFixture.WaitUntilAsync(async () => (await host.Jobs.GetAsync(job.Id))?.State == JobState.Dead, "the job to die");
        var dead = await host.Jobs.GetAsync(job.Id);

        Assert.Equal(DeadLetterReasons.PermanentFailure, dead!.Error?.Split(':')[0]);
        Assert.NotNull(dead.DeadLetterId);
        Assert.True(await host.Store.RetryDeadLetterAsync(dead.DeadLetterId!.Value, CancellationToken.None));
        await JobsFixture.WaitUntilAsync(async () => Log.Runs.Count == 2 && (await host.Jobs.GetAsync(job.Id))?.State == JobState.Dead, "the retried job to run and die again");
    }

    [Fact]
    public async Task Progress_is_visible_while_a_job_runs_and_a_running_job_can_be_cancelled()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time);

        var job = await host.Jobs.EnqueueAsync(new Gated(1));
        await JobsFixture.WaitUntilAsync(async () => (await host.Jobs.GetAsync(job.Id))?.Progress == 50, "progress 50");
        var running = await host.Jobs.GetAsync(job.Id);
        Assert.Equal((JobState.Processing, "waiting at the gate"), (running!.State, running.ProgressNote));

        Assert.Equal(JobCancelOutcome.Requested, await host.Jobs.CancelAsync(job.Id));
        Time.Advance(host.Options.Jobs.CancellationCheckInterval);
        await JobsFixture.WaitUntilAsync(async () => (await host.Jobs.GetAsync(job.Id))?.State == JobState.Cancelled, "the running job to be cancelled");
        Assert.Equal(0, Log.Running);
    }

    [Fact]
    public async Task A_waiting_job_is_cancelled_before_it_runs()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time);

        var job = await host.Jobs.EnqueueAsync(new Work(4), new JobOptions { Delay = TimeSpan.FromHours(1) });
        Assert.Equal(JobCancelOutcome.Cancelled, await host.Jobs.CancelAsync(job.Id));
        Time.Advance(TimeSpan.FromHours(2));

        Assert.Equal(JobState.Cancelled, (await host.Jobs.GetAsync(job.Id))!.State);
        Assert.Equal(JobCancelOutcome.NotFound, await host.Jobs.CancelAsync(job.Id));
        Assert.Empty(Log.Runs);
    }

    [Fact]
    public async Task A_unique_job_is_not_enqueued_twice_within_its_window()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time);
        var options = new JobOptions { UniqueKey = "report:2030-01", UniqueFor = TimeSpan.FromMinutes(30), Delay = TimeSpan.FromHours(1) };

        var first = await host.Jobs.EnqueueAsync(new Work(1), options);
        var second = await host.Jobs.EnqueueAsync(new Work(2), options);
        Time.Advance(TimeSpan.FromMinutes(31));
        var third = await host.Jobs.EnqueueAsync(new Work(3), options with { Delay = null });
        await JobsFixture.WaitUntilAsync(() => Log.Runs.Count == 1, () => "the third job to run");

        Assert.Equal((false, true, first.Id, false), (first.Duplicate, second.Duplicate, second.Id, third.Duplicate));
        Assert.NotEqual(first.Id, third.Id);
        Assert.Equal([3], Log.Runs.Select(r => r.Job.N));
    }
}
