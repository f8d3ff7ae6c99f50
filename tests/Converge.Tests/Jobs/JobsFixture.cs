using System.Collections.Concurrent;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests.Jobs;

public sealed record Work(int N, string Kind = "work");

public sealed record Tick(string Name);

public sealed record Gated(int N);

/// <summary>What jobs ran, in which host, in order; shared by every host of a test.</summary>
public sealed class JobLog
{
    readonly ConcurrentQueue<(string Host, Work Job, DateTimeOffset? AsOf)> _runs = new();
    readonly ConcurrentQueue<(string Host, Tick Job, DateTimeOffset? AsOf)> _ticks = new();
    int _running;
    int _maxRunning;

    public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public IReadOnlyList<(string Host, Work Job, DateTimeOffset? AsOf)> Runs => [.. _runs];

    public IReadOnlyList<(string Host, Tick Job, DateTimeOffset? AsOf)> Ticks => [.. _ticks];

    public int Running => Volatile.Read(ref _running);

    public int MaxRunning => Volatile.Read(ref _maxRunning);

    public void Ran(string host, Work job, DateTimeOffset? asOf) => _runs.Enqueue((host, job, asOf));

    public void Ticked(string host, Tick job, DateTimeOffset? asOf) => _ticks.Enqueue((host, job, asOf));

    public void Enter()
    {
        var now = Interlocked.Increment(ref _running);
        int max;
        while (now > (max = Volatile.Read(ref _maxRunning)) && Interlocked.CompareExchange(ref _maxRunning, now, max) != max)
        {
        }
    }

    public void Leave() => Interlocked.Decrement(ref _running);
}

/// <summary>The name of the host a handler runs in, so tests of several processes can tell who ran what.</summary>
public sealed record HostName(string Value);

public sealed class WorkHandler(JobLog log, HostName host) : IJobHandler<Work>
{
    public Task ExecuteAsync(Work job, JobContext context, CancellationToken cancellationToken)
    {
        log.Ran(host.Value, job, context.AsOf);
        if (job.Kind == "fail")
        {
            throw new HandlerFailureException($"job {job.N} fails for good", nonRetryable: true);
        }

        if (job.Kind == "child" && context.BatchId is { } batch)
        {
            context.Enqueue(new Work(job.N * 100), new JobOptions { BatchId = batch });
        }

        if (job.Kind == "write")
        {
            context.Execute("INSERT INTO job_effects (n) VALUES (@n)", ("@n", job.N));
        }

        return Task.CompletedTask;
    }
}

public sealed class TickHandler(JobLog log, HostName host) : IJobHandler<Tick>
{
    public Task ExecuteAsync(Tick job, JobContext context, CancellationToken cancellationToken)
    {
        log.Ticked(host.Value, job, context.AsOf);
        return Task.CompletedTask;
    }
}

public sealed class GatedHandler(JobLog log) : IJobHandler<Gated>
{
    public async Task ExecuteAsync(Gated job, JobContext context, CancellationToken cancellationToken)
    {
        log.Enter();
        try
        {
            await context.ReportProgressAsync(50, "waiting at the gate", cancellationToken);
            await log.Gate.Task.WaitAsync(cancellationToken);
        }
        finally
        {
            log.Leave();
        }
    }
}

/// <summary>A test of jobs: its own database file (deleted afterwards), a job log and a manual clock.</summary>
public abstract class JobsTest(DateTimeOffset? start = null) : IAsyncLifetime
{
    protected string DbPath { get; } = JobsFixture.NewPath();

    protected JobLog Log { get; } = new();

    protected FakeTimeProvider Time { get; } = start is { } at ? new(at) : new();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        JobsFixture.DeleteFolderOf(DbPath);
        return Task.CompletedTask;
    }
}

internal static class JobsFixture
{
    public const string Queue = "work";

    /// <summary>
    /// Starts a host ("a process") on <paramref name="path"/> with the test job handlers. Several hosts on one
    /// path share the database as separate processes would: each has its own store, connections and write gate.
    /// </summary>
    public static Task<ConvergeTestHost> StartAsync(string path, JobLog log, TimeProvider time, string name = "a", Action<ConvergeOptions>? configure = null) =>
        ConvergeTestHost.StartAsync(
            o =>
            {
                o.UseSqlite(path);
                o.TimeProvider = time;
                o.Messages.Register<Work>("test.work");
                o.Messages.Register<Tick>("test.tick");
                o.Messages.Register<Gated>("test.gated");
                o.Job<Work, WorkHandler>(Queue);
                o.Job<Tick, TickHandler>("ticks");
                o.Job<Gated, GatedHandler>("gated");
                configure?.Invoke(o);
            },
            services => services.AddSingleton(log).AddSingleton(new HostName(name)));

    public static string NewPath()
    {
        var folder = Path.Combine(Path.GetTempPath(), "converge-jobs-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        return Path.Combine(folder, "jobs.db");
    }

    public static void DeleteFolderOf(string path)
    {
        try
        {
            Directory.Delete(Path.GetDirectoryName(path)!, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a temporary folder.
        }
    }

    public static Task WaitUntilAsync(Func<bool> condition, Func<string> what, TimeSpan? timeout = null) => Eventually.UntilAsync(condition, what, timeout);

    /// <summary>
    /// Moves <paramref name="time"/> on by <paramref name="step"/> until <paramref name="condition"/> holds. A worker
    /// woken by one step may arm its next timer only after that step returns; stepping again fires it, so no test
    /// depends on how fast a worker re-arms. Returns the time moved.
    /// </summary>
    public static async Task<TimeSpan> AdvanceUntilAsync(FakeTimeProvider time, TimeSpan step, Func<bool> condition, Func<string> what, TimeSpan? timeout = null)
    {
        var wait = timeout ?? TimeSpan.FromSeconds(30);
        var started = TimeProvider.System.GetTimestamp();
        var moved = TimeSpan.Zero;
        while (!condition())
        {
            if (TimeProvider.System.GetElapsedTime(started) > wait)
            {
                throw new TimeoutException($"Still waiting after {wait} (clock moved {moved}): {what()}.");
            }

            time.Advance(step);
            moved += step;
            await Task.Delay(TimeSpan.FromMilliseconds(5));
        }

        return moved;
    }

    public static Task WaitUntilAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null) => Eventually.UntilAsync(condition, what, timeout);
}
