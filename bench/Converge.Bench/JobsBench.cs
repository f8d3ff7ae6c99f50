using System.Diagnostics;
using Converge.Contracts;
using Converge.Hosting;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.Bench;

/// <summary>What the jobs bench runs.</summary>
public sealed class JobsBenchSettings
{
    /// <summary>Jobs per run.</summary>
    public required int Count { get; init; }

    /// <summary>The database file; <c>null</c> for a temporary file deleted afterwards. Must not exist.</summary>
    public string? DbPath { get; init; }

    /// <summary>A PostgreSQL connection string: each run gets a new schema there (dropped after it) instead of a SQLite file.</summary>
    public string? Postgres { get; init; }

    /// <summary>A RabbitMQ broker that carries the bench's message queues (the store stays the outbox and inbox).</summary>
    public Uri? RabbitMq { get; init; }

    /// <summary>Measured runs, each on a fresh file; figures are the median over runs.</summary>
    public int Runs { get; init; } = 1;

    /// <summary>Jobs of an unreported warm-up run first; at most <see cref="Count"/>; 0 skips it.</summary>
    public int WarmupCount { get; init; } = 100_000;

    /// <summary>Jobs running at once in the worker (the queue's <see cref="QueueOptions.Concurrency"/>).</summary>
    public int Concurrency { get; init; } = 64;

    /// <summary>The queue's batch size (jobs claimed at once); <c>null</c> keeps the library default.</summary>
    public int? BatchSize { get; init; }

    /// <summary>Jobs enqueued per transaction.</summary>
    public int EnqueueBatchSize { get; init; } = 1000;

    /// <summary>Commit durability of the store.</summary>
    public SqliteDurability Durability { get; init; } = SqliteDurability.Full;

    /// <summary>A run fails when no job completes for this long.</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>Figures of the jobs bench: medians over the runs, and each run's rates.</summary>
/// <param name="Jobs">Jobs enqueued and run per run.</param>
/// <param name="Seconds">Draining: from starting the worker until every job's outcome committed.</param>
/// <param name="JobsPerSecond">Jobs / <paramref name="Seconds"/>: the headline.</param>
/// <param name="EnqueueSeconds">Enqueueing every job, with no worker running.</param>
/// <param name="EnqueuePerSecond">Jobs / <paramref name="EnqueueSeconds"/>.</param>
/// <param name="Concurrency">Jobs running at once in the worker.</param>
/// <param name="BatchSize">Jobs claimed at once.</param>
/// <param name="EnqueueBatchSize">Jobs per enqueueing transaction.</param>
/// <param name="Durability">full or normal.</param>
/// <param name="Runs">Measured runs.</param>
/// <param name="JobsPerSecondRuns">Each run's drain rate, when there was more than one run.</param>
/// <param name="EnqueuePerSecondRuns">Each run's enqueue rate, when there was more than one run.</param>
/// <param name="Verified">Always <c>true</c>: a run that does not verify throws instead.</param>
public sealed record JobsBenchReport(
    int Jobs,
    double Seconds,
    double JobsPerSecond,
    double EnqueueSeconds,
    double EnqueuePerSecond,
    int Concurrency,
    int BatchSize,
    int EnqueueBatchSize,
    string Durability,
    int Runs,
    IReadOnlyList<double>? JobsPerSecondRuns,
    IReadOnlyList<double>? EnqueuePerSecondRuns,
    bool Verified);

/// <summary>
/// No-op background jobs, enqueued then drained: first N jobs are enqueued durably through
/// <see cref="IJobClient"/> in transactions of <see cref="JobsBenchSettings.EnqueueBatchSize"/> with no worker
/// running; then a host with the job queue starts and runs them all. The drain rate is the time until every job's
/// outcome (inbox record, removal from the queue) committed. Every run is verified: each job ran exactly once, the
/// queue is empty, the inbox has N records and there are no dead letters.
/// </summary>
public static class JobsBench
{
    const string Queue = "bench.jobs";

    /// <summary>Runs the warm-up and <see cref="JobsBenchSettings.Runs"/> verified runs.</summary>
    /// <exception cref="BenchVerificationException">A run lost, repeated or failed jobs, or stalled.</exception>
    public static async Task<JobsBenchReport> RunAsync(JobsBenchSettings settings, TextWriter progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(progress);
        var results = await BenchRuns.RunAsync(
            settings.DbPath, settings.Postgres, settings.Count, settings.Runs, settings.WarmupCount, "jobs", progress,
            (path, count, _) => RunOnceAsync(path, count, settings, cancellationToken),
            result => $"enqueued {result.Jobs} jobs in {result.EnqueueSeconds:0.000} s ({result.EnqueuePerSecond:0} jobs/s), drained in {result.Seconds:0.000} s ({result.JobsPerSecond:0} jobs/s)");

        return new JobsBenchReport(
            Jobs: settings.Count,
            Seconds: MessagesBench.Round(MessagesBench.Median(results.Select(r => r.Seconds)), 3),
            JobsPerSecond: MessagesBench.Round(MessagesBench.Median(results.Select(r => r.JobsPerSecond)), 1),
            EnqueueSeconds: MessagesBench.Round(MessagesBench.Median(results.Select(r => r.EnqueueSeconds)), 3),
            EnqueuePerSecond: MessagesBench.Round(MessagesBench.Median(results.Select(r => r.EnqueuePerSecond)), 1),
            Concurrency: settings.Concurrency,
            BatchSize: results[0].BatchSize,
            EnqueueBatchSize: settings.EnqueueBatchSize,
            Durability: settings.Postgres is not null ? (settings.RabbitMq is null ? "postgresql" : "postgresql+rabbitmq") : settings.Durability == SqliteDurability.Full ? "full" : "normal",
            Runs: settings.Runs,
            JobsPerSecondRuns: settings.Runs > 1 ? results.Select(r => MessagesBench.Round(r.JobsPerSecond, 1)).ToList() : null,
            EnqueuePerSecondRuns: settings.Runs > 1 ? results.Select(r => MessagesBench.Round(r.EnqueuePerSecond, 1)).ToList() : null,
            Verified: true);
    }

    sealed record RunResult(int Jobs, double EnqueueSeconds, double EnqueuePerSecond, double Seconds, double JobsPerSecond, int BatchSize);

    static async Task<RunResult> RunOnceAsync(string path, int count, JobsBenchSettings settings, CancellationToken cancellationToken)
    {
        var enqueueSeconds = await EnqueueAsync(path, count, settings, cancellationToken);
        var (seconds, batchSize) = await DrainAsync(path, count, settings, cancellationToken);
        return new RunResult(count, enqueueSeconds, count / enqueueSeconds, seconds, count / seconds, batchSize);
    }

    /// <summary>Phase 1: a host that runs no workers enqueues every job; returns the seconds it took.</summary>
    static async Task<double> EnqueueAsync(string path, int count, JobsBenchSettings settings, CancellationToken cancellationToken)
    {
        var host = Build(path, settings, new JobsBenchTally(count), runWorkers: false, observer: null);
        var stopped = false;
        try
        {
            await host.StartAsync(cancellationToken);
            var bus = host.Services.GetRequiredService<IMessageBus>();
            var jobs = host.Services.GetRequiredService<IJobClient>();
            var start = Stopwatch.GetTimestamp();
            for (var first = 0; first < count; first += settings.EnqueueBatchSize)
            {
                await using var transaction = await bus.BeginTransactionAsync(cancellationToken);
                for (var seq = first; seq < Math.Min(count, first + settings.EnqueueBatchSize); seq++)
                {
                    await jobs.EnqueueAsync(new BenchJob(seq), transaction.Transaction, cancellationToken: cancellationToken);
                }

                await transaction.CommitAsync(cancellationToken);
            }

            var seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            await host.StopAsync(CancellationToken.None);
            stopped = true;
            var store = host.Services.GetRequiredService<IMessageStore>();
            var ready = (await store.Queries().GetStatusAsync(cancellationToken)).Queues.Where(q => q.Queue == Queue).Sum(q => q.Ready);
            if (ready != count)
            {
                throw new BenchVerificationException($"after enqueueing, queue '{Queue}' holds {ready} ready jobs; expected {count} ({BenchStores.Describe(store)}).");
            }

            return seconds;
        }
        finally
        {
            await BenchRuns.StopAndDisposeAsync(host, stopped);
        }
    }

    /// <summary>Phase 2: a host with the job queue runs every job; returns the seconds until the last outcome committed.</summary>
    static async Task<(double Seconds, int BatchSize)> DrainAsync(string path, int count, JobsBenchSettings settings, CancellationToken cancellationToken)
    {
        var tally = new JobsBenchTally(count);
        var observer = new JobsCompletionObserver(count);
        var host = Build(path, settings, tally, runWorkers: true, observer);
        var stopped = false;
        try
        {
            var batchSize = host.Services.GetRequiredService<ConvergeOptions>().Queues[Queue].BatchSize;
            var start = Stopwatch.GetTimestamp();
            await host.StartAsync(cancellationToken);
            await MessagesBench.WaitForAsync(observer.Done, () => observer.Completed, Task.CompletedTask, count, "jobs", settings.StallTimeout, cancellationToken);
            var seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            await host.StopAsync(CancellationToken.None);
            stopped = true;
            var store = host.Services.GetRequiredService<IMessageStore>();
            if (await VerifyAsync(store, count, tally, cancellationToken) is { Count: > 0 } problems)
            {
                throw new BenchVerificationException("verification failed: " + string.Join("; ", problems) + $" ({BenchStores.Describe(store)}).");
            }
            return (seconds, batchSize);
        }
        finally
        {
            await BenchRuns.StopAndDisposeAsync(host, stopped);
        }
    }

    static IHost Build(string path, JobsBenchSettings settings, JobsBenchTally tally, bool runWorkers, JobsCompletionObserver? observer)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddSingleton(tally);
        if (observer is not null)
        {
            builder.Services.AddSingleton<IMessageObserver>(observer);
        }

        builder.Services.AddConverge(o =>
        {
            BenchStores.Use(o, settings.Postgres, path, settings.Durability, settings.RabbitMq);
            o.RunConsumers = runWorkers;
            o.Messages.Register<BenchJob>("bench.job");
            o.Job<BenchJob, BenchJobHandler>(Queue);
            o.Queue(Queue, q =>
            {
                q.Concurrency = settings.Concurrency;
                if (settings.BatchSize is { } batchSize)
                {
                    q.BatchSize = batchSize;
                }
            });
        });
        return builder.Build();
    }

    /// <summary>
    /// Checks a finished run of <paramref name="count"/> jobs: each ran once (the handler's tally: none twice, none
    /// missing), one inbox record each in the store, nothing left on the queue and nothing dead-lettered. Returns the
    /// problems; empty when verified.
    /// </summary>
    internal static async Task<IReadOnlyList<string>> VerifyAsync(IMessageStore store, int count, JobsBenchTally tally, CancellationToken cancellationToken)
    {
        var status = await store.Queries().GetStatusAsync(cancellationToken);
        var left = status.Queues.Sum(q => q.Ready + q.Scheduled + q.InFlight);
        var problems = new List<string>();
        if (tally.Ran != count || tally.Repeated != 0)
        {
            problems.Add($"{tally.Ran} distinct jobs ran and {tally.Repeated} ran again; expected each of the {count} once");
        }

        if (left != 0)
        {
            problems.Add($"{left} jobs are still on the queue");
        }

        if (status.DeadLetters != 0)
        {
            problems.Add($"{status.DeadLetters} dead letters");
        }

        if (status.InboxRecords != count)
        {
            problems.Add($"{status.InboxRecords} inbox records; expected {count}");
        }

        return problems;
    }
}

/// <summary>The bench's job: only its sequence number.</summary>
public sealed record BenchJob(int Seq);

/// <summary>Which jobs ran, and how many ran more than once.</summary>
internal sealed class JobsBenchTally(int count)
{
    readonly int[] _ran = new int[count];
    int _distinct;
    int _repeated;

    public int Ran => Volatile.Read(ref _distinct);

    public int Repeated => Volatile.Read(ref _repeated);

    public void Record(int seq)
    {
        if ((uint)seq >= (uint)_ran.Length || Interlocked.Exchange(ref _ran[seq], 1) != 0)
        {
            Interlocked.Increment(ref _repeated);
            return;
        }

        Interlocked.Increment(ref _distinct);
    }
}

/// <summary>Does nothing but count: the bench measures the job runtime and the store, not work.</summary>
internal sealed class BenchJobHandler(JobsBenchTally tally) : IJobHandler<BenchJob>
{
    public Task ExecuteAsync(BenchJob job, JobContext context, CancellationToken cancellationToken)
    {
        tally.Record(job.Seq);
        return Task.CompletedTask;
    }
}

/// <summary>Counts jobs whose completion committed; any other outcome fails the run.</summary>
internal sealed class JobsCompletionObserver(int count) : IMessageObserver
{
    readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    int _completed;

    public Task Done => _done.Task;

    public int Completed => Volatile.Read(ref _completed);

    public void OnHandled(Envelope envelope, string queue, HandlingOutcome outcome)
    {
        if (outcome != HandlingOutcome.Completed)
        {
            _done.TrySetException(new BenchVerificationException($"job {envelope.MessageId} on '{queue}' ended {outcome}, not Completed"));
            return;
        }

        if (Interlocked.Increment(ref _completed) == count)
        {
            _done.TrySetResult();
        }
    }
}
