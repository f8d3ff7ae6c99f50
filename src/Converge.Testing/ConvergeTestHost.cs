using Converge.Contracts;
using Converge.Hosting;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.Testing;

/// <summary>
/// Runs an application's handlers on a throw-away store for a test, and awaits "everything this message
/// caused has finished" instead of sleeping. Unless the configuration chooses a store, each host gets its
/// own SQLite file in a temporary folder, deleted on dispose.
/// </summary>
/// <example>
/// <code>
/// await using var host = await ConvergeTestHost.StartAsync(o =>
/// {
///     o.Messages.Register&lt;PlaceOrder&gt;("shop.place-order");
///     o.Handle&lt;PlaceOrder, PlaceOrderHandler&gt;("orders");
/// });
/// var history = await host.SendAndWaitAsync(new PlaceOrder("o-1"));
/// </code>
/// </example>
public sealed class ConvergeTestHost : IAsyncDisposable
{
    readonly IHost _host;
    readonly string? _folder;

    ConvergeTestHost(IHost host, QuiescenceTracker tracker, string? folder)
    {
        _host = host;
        Tracker = tracker;
        _folder = folder;
    }

    /// <summary>The application's services.</summary>
    public IServiceProvider Services => _host.Services;

    /// <summary>The bus, to send and publish.</summary>
    public IMessageBus Bus => Services.GetRequiredService<IMessageBus>();

    /// <summary>The store.</summary>
    public IMessageStore Store => Services.GetRequiredService<IMessageStore>();

    /// <summary>Starts sagas and reads the saga log.</summary>
    public Sagas.ISagaClient Sagas => Services.GetRequiredService<Sagas.ISagaClient>();

    /// <summary>Enqueues, cancels and inspects background jobs.</summary>
    public Jobs.IJobClient Jobs => Services.GetRequiredService<Jobs.IJobClient>();

    /// <summary>The options in force.</summary>
    public ConvergeOptions Options => Services.GetRequiredService<ConvergeOptions>();

    /// <summary>The tracker behind <see cref="SendAndWaitAsync{T}"/>.</summary>
    public QuiescenceTracker Tracker { get; }

    /// <summary>The default time allowed for everything to finish: 30 seconds.</summary>
    public static TimeSpan DefaultTimeout { get; } = TimeSpan.FromSeconds(30);

    /// <summary>Builds and starts a host; <paramref name="configure"/> registers messages and handlers.</summary>
    public static async Task<ConvergeTestHost> StartAsync(
        Action<ConvergeOptions> configure,
        Action<IServiceCollection>? services = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(configure);
        string? folder = null;
        ConvergeOptions? configured = null;
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddConverge(o =>
        {
            configure(o);
            if (o.StoreFactory is null)
            {
                folder = Path.Combine(Path.GetTempPath(), "converge-test-" + Guid.NewGuid().ToString("N"));
                Directory.CreateDirectory(folder);
                o.UseSqlite(Path.Combine(folder, "converge.db"));
            }

            configured = o;
        });
        var tracker = new QuiescenceTracker(type => GroupsFor(configured!, type));
        builder.Services.AddSingleton<IMessageObserver>(tracker);
        services?.Invoke(builder.Services);
        var host = builder.Build();
        try
        {
            await host.StartAsync(cancellationToken);
        }
        catch (Exception failure)
        {
            // What started stops, and nothing of the host is left running behind the caller's back. A host that failed
            // before its services started cannot stop; the start's failure is the one to report either way.
            try
            {
                await host.StopAsync(CancellationToken.None);
            }
            catch (Exception stopFailure) when (stopFailure is not OperationCanceledException)
            {
                failure.Data["Converge.StopFailure"] = stopFailure.Message;
            }

            host.Dispose();
            throw;
        }

        return new ConvergeTestHost(host, tracker, folder);
    }

    /// <summary>
    /// Sends <paramref name="message"/> and waits until it and everything it caused has finished; returns what
    /// happened to each, in order. Throws <see cref="TimeoutException"/> naming what is still pending.
    /// </summary>
    public async Task<IReadOnlyList<TrackedMessage>> SendAndWaitAsync<T>(T message, SendOptions? options = null, TimeSpan? timeout = null) where T : notnull
    {
        options ??= new SendOptions();
        options.MessageId ??= Guid.CreateVersion7();
        var queue = options.Queue ?? Options.Routes.GetValueOrDefault(message.GetType())
            ?? throw new InvalidOperationException($"{message.GetType().Name} has no route; pass SendOptions.Queue.");
        Tracker.Track(options.MessageId.Value, queue);
        await Bus.SendAsync(message, options);
        await WaitForQuiescenceAsync(timeout);
        return CausedBy(options.MessageId.Value, Tracker.History);
    }

    /// <summary>Waits until nothing tracked is pending; throws <see cref="TimeoutException"/> otherwise.</summary>
    public async Task WaitForQuiescenceAsync(TimeSpan? timeout = null)
    {
        var wait = timeout ?? DefaultTimeout;
        try
        {
            // Real time on purpose: the application's clock may be a manual one that never moves.
            await Tracker.WhenQuietAsync().WaitAsync(wait);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"Still pending after {wait}: {Tracker.DescribePending()}");
        }
    }

    /// <summary>
    /// Waits until the saga instance of <paramref name="transactionId"/> satisfies <paramref name="until"/> (default: it
    /// has ended) and returns it; throws <see cref="TimeoutException"/> with its state and log otherwise.
    /// </summary>
    public async Task<SagaInstance> WaitForSagaAsync(string transactionId, Func<SagaInstance, bool>? until = null, TimeSpan? timeout = null)
    {
        until ??= static instance => SagaStates.IsEnded(instance.State);
        var wait = timeout ?? DefaultTimeout;
        var started = WallClock.Instance.GetTimestamp();
        while (true)
        {
            if (await Store.SagaQueries().GetSagaAsync(transactionId, CancellationToken.None) is { } instance && until(instance))
            {
                return instance;
            }

            if (WallClock.Instance.GetElapsedTime(started) > wait)
            {
                var current = await Store.SagaQueries().GetSagaAsync(transactionId, CancellationToken.None);
                var log = await Store.SagaQueries().ReadSagaLogAsync(transactionId, CancellationToken.None);
                throw new TimeoutException(
                    $"Saga '{transactionId}' did not reach the awaited condition within {wait}; it is {(current is null ? "missing" : SagaStates.ToText(current.State) + " at step " + current.StepIndex)}. Log:\n" +
                    string.Join("\n", log.Select(e => $"  {e.Kind} {e.Step} {e.MessageType} {e.Detail}")));
            }

            // Real time on purpose, as in WaitForQuiescenceAsync: the work happens on the consumers' own threads.
            await Task.Delay(TimeSpan.FromMilliseconds(2), WallClock.Instance);
        }
    }

    /// <summary>The entries of <paramref name="history"/> that are <paramref name="root"/> or descend from it.</summary>
    static List<TrackedMessage> CausedBy(Guid root, IReadOnlyList<TrackedMessage> history)
    {
        var tree = new HashSet<Guid> { root };
        var result = new List<TrackedMessage>();
        foreach (var entry in history)
        {
            if (tree.Contains(entry.Envelope.MessageId) || (entry.Envelope.CausationId is { } cause && tree.Contains(cause)))
            {
                tree.Add(entry.Envelope.MessageId);
                result.Add(entry);
            }
        }

        return result;
    }

    static List<string> GroupsFor(ConvergeOptions options, string messageType) =>
        options.Handlers
            .Where(h => h.Group is not null && options.Messages.IsRegistered(h.MessageType) && options.Messages.GetReadPath(messageType).Contains(options.Messages.GetName(h.MessageType)))
            .Select(h => h.Group!)
            .Distinct()
            .ToList();

    /// <summary>Stops the host and deletes its throw-away store.</summary>
    public async ValueTask DisposeAsync()
    {
        await _host.StopAsync();
        if (_host is IAsyncDisposable asyncDisposable)
        {
            await asyncDisposable.DisposeAsync();
        }
        else
        {
            _host.Dispose();
        }

        if (_folder is not null)
        {
            try
            {
                Directory.Delete(_folder, recursive: true);
            }
            catch (IOException)
            {
                // A file still open elsewhere; the temp folder is cleaned by the system.
            }
        }
    }
}
