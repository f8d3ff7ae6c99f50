using System.Collections.Concurrent;
using System.Diagnostics;
using Converge.Hosting;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.Sqlite.Tests;

public sealed record Slow(string Name);

/// <summary>What each host's handler does and saw; one per host.</summary>
public sealed class SlowBehaviour
{
    /// <summary>hang: await forever, ignoring the token; cooperate: await until the token is cancelled (first attempt only); complete.</summary>
    public string Mode { get; init; } = "complete";

    public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ConcurrentQueue<(string Name, int Attempt)> Completed { get; } = new();

    /// <summary>Handler scopes disposed: an abandoned handler's scope is kept until it returns, a finished one's is disposed.</summary>
    public TaskCompletionSource ScopeDisposed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    int _scopesDisposed;

    public int ScopesDisposed => Volatile.Read(ref _scopesDisposed);

    public void Disposed()
    {
        Interlocked.Increment(ref _scopesDisposed);
        ScopeDisposed.TrySetResult();
    }

    /// <summary>Ends the first attempt's call in mode "hang-until-released".</summary>
    public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Messages completed while the first attempt's call still hung.</summary>
    public ConcurrentQueue<string> CompletedWhileHung { get; } = new();
}

/// <summary>A scoped dependency of the handler, telling when its scope is disposed.</summary>
public sealed class ScopeProbe(SlowBehaviour behaviour) : IDisposable
{
    public void Dispose() => behaviour.Disposed();
}

public sealed class SlowHandler(SlowBehaviour behaviour, ScopeProbe probe) : IHandler<Slow>
{
    static readonly TaskCompletionSource Never = new();

    public async Task HandleAsync(Slow message, MessageContext context, CancellationToken cancellationToken)
    {
        behaviour.Started.TrySetResult();
        switch (behaviour.Mode)
        {
            case "hang":
                await Never.Task;
                break;
            case "hang-until-released" when context.Attempt == 1 && message.Name == "first":
                // Ignores its token, as a hung outside call would, until the test lets it return; its batch was
                // rolled back by then, so it records nothing.
                await behaviour.Release.Task;
                return;
            case "cooperate" when context.Attempt == 1:
            case "cooperate-always":
                await Task.Delay(Timeout.InfiniteTimeSpan, cancellationToken);
                break;
        }

        GC.KeepAlive(probe);

        behaviour.Completed.Enqueue((message.Name, context.Attempt));
        if (behaviour.Mode == "hang-until-released" && !behaviour.Release.Task.IsCompleted)
        {
            behaviour.CompletedWhileHung.Enqueue(message.Name);
        }
    }
}

public sealed class HungHandlerTests : IDisposable
{
    readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("converge-hung-");

    string Path => System.IO.Path.Combine(_folder.FullName, "converge.db");

    async Task<IHost> StartHostAsync(SlowBehaviour behaviour, Action<ConvergeOptions>? configure = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddSingleton(behaviour);
        builder.Services.AddScoped<ScopeProbe>();
        builder.Services.AddConverge(o =>
        {
            o.UseSqlite(Path);
            o.Messages.Register<Slow>("test.slow");
            o.Handle<Slow, SlowHandler>("slow");
            o.PollInterval = TimeSpan.FromMilliseconds(50);
            configure?.Invoke(o);
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    static async Task<TimeSpan> StopAsync(IHost host, TimeSpan shutdownTimeout)
    {
        var watch = Stopwatch.StartNew();
        using (var timeout = new CancellationTokenSource(shutdownTimeout))
        {
            await host.Services.GetRequiredService<ConvergeHost>().StopAsync(timeout.Token);
        }

        var elapsed = watch.Elapsed;
        await host.StopAsync();
        host.Dispose();
        return elapsed;
    }

    [Fact]
    public async Task A_handler_that_ignores_cancellation_is_abandoned_so_the_file_is_writable_and_another_host_handles_its_message()
    {
        var hanging = new SlowBehaviour { Mode = "hang" };
        var first = await StartHostAsync(hanging, o =>
        {
            o.LeaseDuration = TimeSpan.FromSeconds(2);
            o.Retry.InitialDelay = o.Retry.MaxDelay = TimeSpan.FromSeconds(8);
        });
        var bus = first.Services.GetRequiredService<IMessageBus>();
        await bus.SendAsync(new Slow("stuck"));
        await hanging.Started.Task.WaitAsync(TimeSpan.FromSeconds(20));

        // A second host must take the file's write lock to start (it migrates under BEGIN IMMEDIATE): it can only
        // start once the first abandoned the batch and rolled it back, after HandlerTimeout (the lease, 2 s) and a grace.
        var watch = Stopwatch.StartNew();
        var working = new SlowBehaviour();
        var second = await StartHostAsync(working);
        Assert.InRange(watch.Elapsed, TimeSpan.Zero, TimeSpan.FromSeconds(15));

        // The first host writes again (its write gate is free) and stops within its shutdown timeout although
        // its handler is still awaiting.
        await bus.SendAsync(new Slow("after"), new SendOptions { Queue = "elsewhere" }).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.InRange(await StopAsync(first, TimeSpan.FromSeconds(1)), TimeSpan.Zero, TimeSpan.FromSeconds(1) + ConvergeHost.HandBackTime + TimeSpan.FromSeconds(1));

        await Eventually.UntilAsync(() => !working.Completed.IsEmpty, () => "the second host handles the abandoned message", TimeSpan.FromSeconds(30));
        Assert.Equal([("stuck", 2)], working.Completed);

        var store = second.Services.GetRequiredService<Storage.IMessageStore>();
        await Eventually.UntilAsync(
            async () => (await store.Queries().GetStatusAsync(CancellationToken.None)).Queues.Where(q => q.Queue == "slow").All(q => q.Ready + q.InFlight + q.Scheduled == 0),
            "the queue is empty");
        Assert.Empty(await store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None));
        await StopAsync(second, TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task A_worker_whose_handler_was_abandoned_claims_nothing_until_the_call_returns_then_goes_on()
    {
        var behaviour = new SlowBehaviour { Mode = "hang-until-released" };
        var host = await StartHostAsync(behaviour, o =>
        {
            o.HandlerTimeout = TimeSpan.FromMilliseconds(400);
            o.Retry.InitialDelay = o.Retry.MaxDelay = TimeSpan.FromMilliseconds(10);
        });
        var store = host.Services.GetRequiredService<Storage.IMessageStore>();
        var bus = host.Services.GetRequiredService<IMessageBus>();
        await bus.SendAsync(new Slow("first"));
        await behaviour.Started.Task.WaitAsync(TimeSpan.FromSeconds(20));
        await bus.SendAsync(new Slow("second")).AsTask().WaitAsync(TimeSpan.FromSeconds(20));

        // The call was abandoned (its attempt recorded, its retry due) and both messages wait, visible: the queue's
        // only worker keeps its slot while the call runs, where it used to run the message again beside it.
        await Eventually.UntilAsync(
            async () => (await store.Queries().GetStatusAsync(CancellationToken.None)).Queues.SingleOrDefault(q => q.Queue == "slow") is { Ready: 2, InFlight: 0 },
            () => $"both messages are ready while the abandoned call hangs; completed: {string.Join(", ", behaviour.Completed)}");
        Assert.Empty(behaviour.Completed);

        behaviour.Release.SetResult();
        await Eventually.UntilAsync(() => behaviour.Completed.Count == 2, () => "the worker goes on once the call returns", TimeSpan.FromSeconds(30));
        Assert.Empty(behaviour.CompletedWhileHung);
        Assert.Equal([("first", 2), ("second", 1)], behaviour.Completed.OrderBy(c => c.Name, StringComparer.Ordinal));

        // The abandoned call's scope is disposed once it returns, as the others' are.
        await Eventually.UntilAsync(() => behaviour.ScopesDisposed == 3, () => $"3 scopes disposed, saw {behaviour.ScopesDisposed}");
        await StopAsync(host, TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task Another_worker_of_the_queue_handles_messages_while_one_waits_for_its_abandoned_call()
    {
        var behaviour = new SlowBehaviour { Mode = "hang-until-released" };
        var host = await StartHostAsync(behaviour, o =>
        {
            o.HandlerTimeout = TimeSpan.FromMilliseconds(400);
            o.Retry.InitialDelay = o.Retry.MaxDelay = TimeSpan.FromMilliseconds(10);
            o.Queue("slow", q => { q.Concurrency = 2; q.BatchSize = 1; });
        });
        var bus = host.Services.GetRequiredService<IMessageBus>();
        await bus.SendAsync(new Slow("first"));
        await behaviour.Started.Task.WaitAsync(TimeSpan.FromSeconds(20));
        await bus.SendAsync(new Slow("second")).AsTask().WaitAsync(TimeSpan.FromSeconds(20));

        await Eventually.UntilAsync(() => behaviour.Completed.Count == 2, () => "the other worker handles the retry and the next message", TimeSpan.FromSeconds(30));
        Assert.Equal(["first", "second"], behaviour.CompletedWhileHung.Order(StringComparer.Ordinal));
        Assert.Equal([("first", 2), ("second", 1)], behaviour.Completed.OrderBy(c => c.Name, StringComparer.Ordinal));

        behaviour.Release.SetResult();
        await Eventually.UntilAsync(() => behaviour.ScopesDisposed == 3, () => $"3 scopes disposed, saw {behaviour.ScopesDisposed}");
        await StopAsync(host, TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task A_handler_that_honours_its_token_is_cancelled_at_the_timeout_and_retried()
    {
        var behaviour = new SlowBehaviour { Mode = "cooperate" };
        var host = await StartHostAsync(behaviour, o =>
        {
            o.HandlerTimeout = TimeSpan.FromMilliseconds(500);
            o.Retry.InitialDelay = o.Retry.MaxDelay = TimeSpan.FromMilliseconds(10);
        });
        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Slow("slow"));

        await Eventually.UntilAsync(() => !behaviour.Completed.IsEmpty, () => "the second attempt completes", TimeSpan.FromSeconds(30));

        Assert.Equal([("slow", 2)], behaviour.Completed);
        await StopAsync(host, TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task StopAsync_returns_within_the_shutdown_timeout_while_a_handler_ignores_cancellation()
    {
        var hanging = new SlowBehaviour { Mode = "hang" };
        var host = await StartHostAsync(hanging, o => o.LeaseDuration = TimeSpan.FromMinutes(10));
        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Slow("stuck"));
        await hanging.Started.Task.WaitAsync(TimeSpan.FromSeconds(20));

        var elapsed = await StopAsync(host, TimeSpan.FromSeconds(1));

        // The handler never ends, so any return proves the stop did not wait for it; the upper bound leaves room for a
        // loaded machine (a run of every test project at once took 2.6 s) while staying far from "waited for it".
        Assert.InRange(elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(1) + ConvergeHost.HandBackTime + TimeSpan.FromSeconds(5));

        // The batch was rolled back and handed back uncounted: the file is writable and the message ready.
        await using var store = new SqliteMessageStore(new SqliteStoreOptions { Path = Path, BusyTimeout = TimeSpan.FromSeconds(2) }, TimeProvider.System);
        var again = Assert.Single(await store.ClaimAsync("slow", 10, TimeSpan.FromSeconds(30), CancellationToken.None));
        Assert.Equal(1, again.Attempt);
    }

    [Fact]
    public async Task At_shutdown_a_handler_that_honours_its_token_stops_and_is_not_abandoned()
    {
        var behaviour = new SlowBehaviour { Mode = "cooperate-always" };
        var host = await StartHostAsync(behaviour, o => o.LeaseDuration = TimeSpan.FromMinutes(10));
        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Slow("slow"));
        await behaviour.Started.Task.WaitAsync(TimeSpan.FromSeconds(20));

        var elapsed = await StopAsync(host, TimeSpan.FromSeconds(1));

        // It stopped when cancelled, so its batch was undone the ordinary way and its scope disposed; an abandoned
        // handler's scope is kept until it returns, as disposing it could wait on the handler.
        Assert.InRange(elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(1) + ConvergeHost.HandBackTime + TimeSpan.FromSeconds(5));
        Assert.True(behaviour.ScopeDisposed.Task.IsCompleted, "The handler's scope was not disposed: the handler was abandoned although it stopped.");
        await using var store = new SqliteMessageStore(new SqliteStoreOptions { Path = Path, BusyTimeout = TimeSpan.FromSeconds(2) }, TimeProvider.System);
        Assert.Equal(1, Assert.Single(await store.ClaimAsync("slow", 10, TimeSpan.FromSeconds(30), CancellationToken.None)).Attempt);
    }

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try
        {
            _folder.Delete(recursive: true);
        }
        catch (IOException)
        {
            // An abandoned handler's connection may still be closing.
        }
    }
}
