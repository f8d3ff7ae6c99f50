using System.Collections.Concurrent;
using Converge.Jobs;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Converge.PostgreSql.Tests;

public sealed record Charge(int N);

public sealed record ChargesDone(string Batch);

/// <summary>A job that, below <see cref="Children"/>, enqueues its successor into its own batch as it finishes.</summary>
public sealed record Step(int N, int Children);

public sealed class StepHandler(ChargeLog log) : IJobHandler<Step>
{
    public Task ExecuteAsync(Step job, JobContext context, CancellationToken cancellationToken)
    {
        log.Runs.AddOrUpdate(job.N, 1, (_, runs) => runs + 1);
        if (job.N < job.Children)
        {
            context.Enqueue(new Step(job.N + job.Children, job.Children), new JobOptions { BatchId = context.BatchId });
        }

        return Task.CompletedTask;
    }
}

/// <summary>Counts each job's runs across every host of a test.</summary>
public sealed class ChargeLog
{
    public ConcurrentDictionary<int, int> Runs { get; } = new();

    public TaskCompletionSource<string> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

public sealed class ChargeHandler(ChargeLog log) : IJobHandler<Charge>
{
    public Task ExecuteAsync(Charge job, JobContext context, CancellationToken cancellationToken)
    {
        log.Runs.AddOrUpdate(job.N, 1, (_, runs) => runs + 1);

        // A write of the job's own, committed with its inbox record.
        context.Execute("INSERT INTO charges (n) VALUES (@n)", ("@n", job.N));
        return Task.CompletedTask;
    }
}

public sealed class ChargesDoneHandler(ChargeLog log) : IJobHandler<ChargesDone>
{
    public Task ExecuteAsync(ChargesDone job, JobContext context, CancellationToken cancellationToken)
    {
        log.Done.TrySetResult(job.Batch);
        return Task.CompletedTask;
    }
}

/// <summary>Jobs on PostgreSQL: two worker processes, each committing finished jobs in parallel groups.</summary>
public sealed class PostgreSqlJobTests : IAsyncDisposable
{
    readonly TestDatabase _database = new();

    public ValueTask DisposeAsync() => _database.DisposeAsync();

    static Task<ConvergeTestHost> StartAsync(string schema, ChargeLog log, bool runWorkers) =>
        ConvergeTestHost.StartAsync(
            o =>
            {
                o.UsePostgreSql(TestDatabase.ConnectionStringFor(schema), s => s.Schema = schema);
                o.Messages.Register<Charge>("test.charge");
                o.Messages.Register<ChargesDone>("test.charges-done");
                o.Messages.Register<Step>("test.step");
                o.Job<Step, StepHandler>("steps");
                o.Queue("steps", q => q.Concurrency = 32);
                o.Job<Charge, ChargeHandler>("charges");
                o.Job<ChargesDone, ChargesDoneHandler>("reports");
                o.Queue("charges", q => q.Concurrency = 32);
                o.RunConsumers = runWorkers;
            },
            services => services.AddSingleton(log));

    [Fact]
    public async Task Two_workers_run_every_job_of_a_batch_once_and_the_batch_finishes()
    {
        const int Jobs = 3000;
        var schema = _database.Schema("jobs");
        var log = new ChargeLog();
        await using var client = await StartAsync(schema, log, runWorkers: false);
        await using (var connection = await ((PostgreSqlMessageStore)client.Store).OpenConnectionAsync())
        await using (var create = new NpgsqlCommand("CREATE TABLE charges (n integer NOT NULL)", connection))
        {
            await create.ExecuteNonQueryAsync();
        }

        await client.Jobs.StartBatchAsync(new JobBatchOptions { Id = "close", OnComplete = new ChargesDone("close") });
        for (var first = 0; first < Jobs; first += 500)
        {
            await using var transaction = await client.Bus.BeginTransactionAsync();
            for (var n = first; n < first + 500; n++)
            {
                await client.Jobs.EnqueueAsync(new Charge(n), transaction.Transaction, new JobOptions { BatchId = "close" });
            }

            await transaction.CommitAsync();
        }

        await client.Jobs.SealBatchAsync("close");
        await using var one = await StartAsync(schema, log, runWorkers: true);
        await using var two = await StartAsync(schema, log, runWorkers: true);

        Assert.Equal("close", await log.Done.Task.WaitAsync(TimeSpan.FromSeconds(60)));
        var batch = await client.Jobs.GetBatchAsync("close");
        Assert.Equal((Jobs, 0L, Jobs, 0L), (batch!.Total, batch.Pending, batch.Succeeded, batch.Failed));
        Assert.Equal(Jobs, log.Runs.Count);
        await using var check = await ((PostgreSqlMessageStore)client.Store).OpenConnectionAsync();
        await using var count = new NpgsqlCommand("SELECT count(*), count(DISTINCT n) FROM charges", check);
        await using var reader = await count.ExecuteReaderAsync();
        await reader.ReadAsync();
        Assert.Equal((Jobs, Jobs), (reader.GetInt64(0), reader.GetInt64(1)));
    }

    [Fact]
    public async Task Jobs_that_add_their_successors_to_their_batch_leave_it_exact_and_finish_it_once()
    {
        const int Parents = 1000;
        var schema = _database.Schema("steps");
        var log = new ChargeLog();
        await using var client = await StartAsync(schema, log, runWorkers: false);
        await client.Jobs.StartBatchAsync(new JobBatchOptions { Id = "chain", OnComplete = new ChargesDone("chain"), OnSuccess = new ChargesDone("chain-ok") });
        await using (var transaction = await client.Bus.BeginTransactionAsync())
        {
            for (var n = 0; n < Parents; n++)
            {
                await client.Jobs.EnqueueAsync(new Step(n, Parents), transaction.Transaction, new JobOptions { BatchId = "chain" });
            }

            await transaction.CommitAsync();
        }

        await client.Jobs.SealBatchAsync("chain");
        await using var one = await StartAsync(schema, log, runWorkers: true);
        await using var two = await StartAsync(schema, log, runWorkers: true);

        await Eventually.UntilAsync(async () => (await client.Jobs.GetBatchAsync("chain"))?.FinishedAt is not null, "the batch to finish", TimeSpan.FromSeconds(60));
        var batch = await client.Jobs.GetBatchAsync("chain");
        Assert.Equal((2L * Parents, 0L, 2L * Parents, 0L), (batch!.Total, batch.Pending, batch.Succeeded, batch.Failed));
        Assert.Equal(2 * Parents, log.Runs.Count);
        Assert.All(log.Runs.Values, runs => Assert.Equal(1, runs));

        await using var check = await ((PostgreSqlMessageStore)client.Store).OpenConnectionAsync();
        await using var callbacks = new NpgsqlCommand($"SELECT count(*) FROM \"{schema}\".inbox WHERE consumer = 'reports'", check);
        await Eventually.UntilAsync(async () => (long)(await callbacks.ExecuteScalarAsync())! == 2, "OnComplete and OnSuccess to run", TimeSpan.FromSeconds(30));
        Assert.Equal(2L, (long)(await callbacks.ExecuteScalarAsync())!);
    }
}
