using System.Collections.Concurrent;
using Converge.Jobs;
using Converge.Storage;
using Converge.Testing.Conformance;
using Converge.Testing.Faults;
using Converge.Verification;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Converge.Testing.Tests;

public sealed record CloseAccount(int Account);

public sealed record CloseFinished(string Batch);

public sealed record CloseEffect(string Key);

/// <summary>
/// Where the close's jobs keep their effects: in the transaction that completes the job (<see cref="JobContext.Execute"/>);
/// or, when <see cref="Careless"/>, in a list of their own the moment the job runs (the fault the matrix must find).
/// </summary>
public sealed class CloseRecords(bool careless)
{
    readonly ConcurrentQueue<string> _careless = new();

    public bool Careless { get; } = careless;

    public void Write(JobContext context, string effect)
    {
        if (Careless)
        {
            _careless.Enqueue(effect);
            return;
        }

        if (context.Services.GetRequiredService<IMessageStore>() is var store && Faults.CrashingStore.Unwrap(store) is InMemory.InMemoryMessageStore)
        {
            // No SQL in memory: the effect is an event on the log, which the completing transaction appends.
            context.Publish(EffectStream, new CloseEffect(effect));
            return;
        }

        context.Execute(
            "INSERT INTO conformance_effects (message_id, consumer, item_key) VALUES (@id, @consumer, @key)",
            ("@id", context.JobId.ToString("N")),
            ("@consumer", context.Queue),
            ("@key", effect));
    }

    /// <summary>The stream the in-memory store's effects go to.</summary>
    public const string EffectStream = "close-effects";

    public IReadOnlyList<string> CarelessEffects => [.. _careless];
}

public sealed class CloseDesk(CloseRecords records) : IJobHandler<CloseAccount>, IJobHandler<CloseFinished>
{
    public Task ExecuteAsync(CloseAccount job, JobContext context, CancellationToken cancellationToken)
    {
        records.Write(context, "account-" + job.Account);
        return Task.CompletedTask;
    }

    public Task ExecuteAsync(CloseFinished job, JobContext context, CancellationToken cancellationToken)
    {
        records.Write(context, "finished-" + job.Batch);
        return Task.CompletedTask;
    }
}

/// <summary>
/// The crash-point matrix of a month close's shape on SQLite and on the in-memory store: a sealed batch of jobs, one per account, whose callback
/// job runs when the last one finishes. A worker host dies at its Nth store operation, for every N until a run finishes
/// without dying; a new worker then runs the close to the end. Judged from the jobs' own records and the batch's
/// counters. A job's effect is SQL run in its completing transaction on SQLite, an event its completing transaction
/// appends to the log in memory (which has no SQL).
/// </summary>
public sealed class JobCrashMatrixTests(ITestOutputHelper output)
{
    const int Accounts = 50;
    const string Batch = "close-2026-11";

    [Theory]
    [InlineData("sqlite")]
    [InlineData("in-memory")]
    public async Task A_batch_of_jobs_survives_a_crash_at_every_store_operation(string database)
    {
        var result = await RunMatrixAsync(database, careless: false);

        Assert.True(result.Points.Count >= 200, $"only {result.Points.Count} crash points");
        Assert.Empty(result.Violations);
    }

    [Theory]
    [InlineData("sqlite")]
    [InlineData("in-memory")]
    public async Task The_matrix_finds_a_job_whose_effect_is_not_in_its_completing_transaction(string database)
    {
        var result = await RunMatrixAsync(database, careless: true);

        Assert.Contains(result.Violations, v => v.Contains(" times", StringComparison.Ordinal));
    }

    [Fact]
    public void The_judge_names_a_repeated_effect_a_missing_one_and_counters_that_are_off()
    {
        var effects = Enumerable.Range(0, Accounts).Select(i => "account-" + i).Where(e => e != "account-7").Append("account-3").ToList();
        var batch = new JobBatchRecord { Id = Batch, Total = Accounts, Succeeded = Accounts - 1, Pending = 1, Sealed = true };

        Assert.Equal(
            ["account-3 taken 2 times", "account-7 taken 0 times", $"finished-{Batch} taken 0 times", $"batch {Batch} counts total {Accounts}, succeeded {Accounts - 1}, failed 0, pending 1, not finished; expected total {Accounts}, succeeded {Accounts}, failed 0"],
            Judge(effects, batch));
    }

    /// <summary>The matrix of the close, reported to the test's output.</summary>
    async Task<CrashMatrixResult> RunMatrixAsync(string name, bool careless)
    {
        var result = await CrashMatrix.RunAsync(async plan =>
        {
            await using ShopDatabase database = name == "sqlite" ? new SqliteShopDatabase() : new InMemoryShopDatabase();
            return await RunWithCrashAsync(plan, database, new CloseRecords(careless));
        });
        CrashMatrix.Report(output, name, result);
        return result;
    }

    /// <summary>Places the close, then runs it on a worker that dies as <paramref name="plan"/> says and on a new one to the end; what is wrong.</summary>
    static async Task<List<string>> RunWithCrashAsync(CrashPlan plan, ShopDatabase database, CloseRecords records)
    {
        // The close is placed first, by a process that does not run jobs and does not die.
        await using (var client = await StartAsync(database, null, records, runJobs: false))
        {
            await client.Jobs.StartBatchAsync(new JobBatchOptions { Id = Batch, OnComplete = new CloseFinished(Batch) });
            for (var i = 0; i < Accounts; i++)
            {
                await client.Jobs.EnqueueAsync(new CloseAccount(i), new JobOptions { BatchId = Batch });
            }

            await client.Jobs.SealBatchAsync(Batch);
        }

        await CrashMatrix.CrashThenRecoverAsync(
            plan,
            database.Clock,
            crash => StartAsync(database, crash, records, runJobs: true),
            _ => Task.CompletedTask,
            () => SettledAsync(database.Observer));

        var effects = records.Careless ? records.CarelessEffects
            : database is InMemoryShopDatabase ? await LoggedEffectsAsync(database.Observer)
            : await database.EffectsAsync();
        var violations = Judge(effects, await database.Observer.JobQueries().GetBatchAsync(Batch, CancellationToken.None));
        violations.AddRange(await CrashMatrix.LeftoversAsync(database.Observer));
        return violations;
    }

    /// <summary>What is wrong with the close, judged as the simulation judges it: each account's job and the callback took effect once, and the batch's counters are exact.</summary>
    static List<string> Judge(IReadOnlyList<string> effects, JobBatchRecord? batch)
    {
        var violations = Invariants.ExactlyOnce(Enumerable.Range(0, Accounts).Select(i => "account-" + i).Append("finished-" + Batch), effects);
        violations.AddRange(Invariants.BatchCounters(Batch, batch, Accounts));
        return violations;
    }

    static readonly System.Text.Json.JsonSerializerOptions Json = new(System.Text.Json.JsonSerializerDefaults.Web);

    /// <summary>The effects the in-memory store's jobs appended to the log, in order.</summary>
    static async Task<IReadOnlyList<string>> LoggedEffectsAsync(IMessageStore store)
    {
        var events = await store.ReadStreamAsync(CloseRecords.EffectStream, 1, 10_000, CancellationToken.None);
        return [.. events.Select(e => System.Text.Json.JsonSerializer.Deserialize<CloseEffect>(e.Envelope.Body.Span, Json)!.Key)];
    }

    static async Task<bool> SettledAsync(IMessageStore store)
    {
        var batch = await store.JobQueries().GetBatchAsync(Batch, CancellationToken.None);
        if (batch is not { Pending: 0, FinishedAt: not null })
        {
            return false;
        }

        return await CrashMatrix.QueuesEmptyAsync(store);
    }

    static Task<ConvergeTestHost> StartAsync(ShopDatabase database, CrashPlan? plan, CloseRecords records, bool runJobs) => ConvergeTestHost.StartAsync(
        o =>
        {
            o.TimeProvider = database.Clock;
            database.Use(o, plan);
            o.RunConsumers = runJobs;
            o.LeaseDuration = TimeSpan.FromSeconds(1);
            o.PollInterval = TimeSpan.FromMilliseconds(20);
            o.Messages.Register<CloseAccount>("close.account").Register<CloseFinished>("close.finished").Register<CloseEffect>("close.effect");
            o.Job<CloseAccount, CloseDesk>("close");
            o.Job<CloseFinished, CloseDesk>("close");

            // One job a claim and a commit, one at a time: more commits to die between, and the same number in every run.
            o.Queue("close", q => (q.BatchSize, q.Concurrency) = (1, 1));
        },
        s => s.AddSingleton(records).AddSingleton<CloseDesk>());
}
