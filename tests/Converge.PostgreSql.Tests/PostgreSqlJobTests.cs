using System.Collections.Concurrent;
using Converge.Jobs;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Converge.PostgreSql.Tests;

public sealed record Charge(int N);

public sealed record ChargesDone(string Batch);

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
}
