using Converge.Jobs;
using Converge.Storage;
using Converge.Testing;

namespace Converge.Tests.Jobs;

/// <summary>Batches: callbacks on success and on completion, failures counted, jobs that add to their own batch.</summary>
public sealed class BatchTests : JobsTest
{

    static JobBatchOptions Batch(string id) => new()
    {
        Id = id,
        OnSuccess = new Tick(id + ":success"),
        OnComplete = new Tick(id + ":complete"),
    };

    static async Task<JobBatchRecord> WaitForFinishAsync(ConvergeTestHost host, string id)
    {
        JobBatchRecord? batch = null;
        try
        {
            await JobsFixture.WaitUntilAsync(async () => (batch = await host.Jobs.GetBatchAsync(id))?.FinishedAt is not null, $"batch {id} to finish");
        }
        catch (TimeoutException)
        {
            var jobs = await host.Store.JobQueries().ListJobsAsync(new JobQuery { Max = 100 }, CancellationToken.None);
            var status = await host.Store.Queries().GetStatusAsync(CancellationToken.None);
            Assert.Fail($"batch {batch}; jobs {string.Join("; ", jobs.Select(j => $"{j.Id} {j.Queue} {j.State} {j.BatchId} {j.Attempts} {j.Error}"))}; queues {string.Join(", ", status.Queues)}");
        }
        await JobsFixture.WaitUntilAsync(async () => (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.All(q => q.Ready + q.InFlight == 0), "the callbacks to run");
        return batch!;
    }

    [Fact]
    public async Task A_batch_that_succeeds_runs_both_callbacks_once_after_its_last_job()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time);

        Assert.True(await host.Jobs.StartBatchAsync(Batch("b1")));
        Assert.False(await host.Jobs.StartBatchAsync(Batch("b1")));
        for (var i = 0; i < 5; i++)
        {
            await host.Jobs.EnqueueAsync(new Work(i), new JobOptions { BatchId = "b1" });
        }

        await host.Jobs.SealBatchAsync("b1");
        var batch = await WaitForFinishAsync(host, "b1");

        Assert.Equal((5L, 0L, 5L, 0L), (batch.Total, batch.Pending, batch.Succeeded, batch.Failed));
        Assert.Equal(["b1:complete", "b1:success"], Log.Ticks.Select(t => t.Job.Name).Order());
        Assert.Equal(5, Log.Runs.Count);
    }

    [Fact]
    public async Task A_batch_with_a_dead_job_runs_only_the_completion_callback()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time);

        await host.Jobs.StartBatchAsync(Batch("b2"));
        await host.Jobs.EnqueueAsync(new Work(1), new JobOptions { BatchId = "b2" });
        await host.Jobs.EnqueueAsync(new Work(2, "fail"), new JobOptions { BatchId = "b2" });
        await host.Jobs.SealBatchAsync("b2");
        var batch = await WaitForFinishAsync(host, "b2");

        Assert.Equal((2L, 1L, 1L), (batch.Total, batch.Succeeded, batch.Failed));
        Assert.Equal(["b2:complete"], Log.Ticks.Select(t => t.Job.Name));
    }

    [Fact]
    public async Task Jobs_that_add_to_their_batch_keep_it_open_until_their_children_finish()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time);

        await host.Jobs.StartBatchAsync(Batch("b3"));
        await host.Jobs.SealBatchAsync("b3");
        Assert.NotNull((await host.Jobs.GetBatchAsync("b3"))!.FinishedAt);

        await host.Jobs.StartBatchAsync(Batch("b4"));
        for (var i = 1; i <= 3; i++)
        {
            await host.Jobs.EnqueueAsync(new Work(i, "child"), new JobOptions { BatchId = "b4" });
        }

        await host.Jobs.SealBatchAsync("b4");
        var batch = await WaitForFinishAsync(host, "b4");

        Assert.Equal((6L, 6L), (batch.Total, batch.Succeeded));
        Assert.Equal([1, 2, 3, 100, 200, 300], Log.Runs.Select(r => r.Job.N).Order());
        Assert.Equal(["b3:complete", "b3:success", "b4:complete", "b4:success"], Log.Ticks.Select(t => t.Job.Name).Order());
    }

    [Fact]
    public async Task A_job_id_enqueued_twice_into_a_batch_runs_once_and_the_batch_still_finishes()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time);

        await host.Jobs.StartBatchAsync(Batch("b6"));
        var id = Guid.NewGuid();
        await host.Jobs.EnqueueAsync(new Work(1), new JobOptions { BatchId = "b6", JobId = id });
        await host.Jobs.EnqueueAsync(new Work(1), new JobOptions { BatchId = "b6", JobId = id });
        await host.Jobs.SealBatchAsync("b6");
        var batch = await WaitForFinishAsync(host, "b6");

        Assert.Equal((1L, 1L, 0L), (batch.Total, batch.Succeeded, batch.Failed));
        Assert.Equal(["b6:complete", "b6:success"], Log.Ticks.Select(t => t.Job.Name).Order());
    }

    [Fact]
    public async Task Callbacks_fire_once_when_the_last_job_is_cancelled()
    {
        await using var host = await JobsFixture.StartAsync(DbPath, Log, Time);

        await host.Jobs.StartBatchAsync(Batch("b5"));
        var waiting = await host.Jobs.EnqueueAsync(new Work(1), new JobOptions { BatchId = "b5", Delay = TimeSpan.FromHours(1) });
        await host.Jobs.SealBatchAsync("b5");
        Assert.Equal(JobCancelOutcome.Cancelled, await host.Jobs.CancelAsync(waiting.Id));
        var batch = await WaitForFinishAsync(host, "b5");

        Assert.Equal((1L, 1L), (batch.Total, batch.Failed));
        Assert.Equal(["b5:complete"], Log.Ticks.Select(t => t.Job.Name));
    }
}
