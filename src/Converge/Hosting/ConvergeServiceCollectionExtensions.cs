using Converge.Jobs;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Converge.Hosting;

/// <summary>Checks <see cref="ConvergeOptions"/> once, before anything runs.</summary>
public static class ConvergeOptionsValidator
{
    /// <summary>Throws an <see cref="OptionsValidationException"/> listing every problem and its fix.</summary>
    public static void ThrowIfInvalid(ConvergeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate().ToList();
        if (errors.Count > 0)
        {
            throw new OptionsValidationException(nameof(ConvergeOptions), typeof(ConvergeOptions), errors);
        }
    }
}

/// <summary>
/// The hosted service: migrates the store at start-up, then runs one consumer per configured queue, one runner
/// per consumer group, and the inbox clean-up. On stop it stops claiming, lets in-flight batches finish until
/// the host's shutdown timeout, then cancels them and hands their messages back (see <see cref="StopAsync"/>).
/// </summary>
public sealed class ConvergeHost : IHostedService, IAsyncDisposable
{
    readonly ConvergeOptions _options;
    readonly IMessageStore _store;
    readonly IServiceProvider _services;
    readonly ILogger<ConvergeHost> _logger;
    readonly CancellationTokenSource _stopping = new();
    readonly CancellationTokenSource _abort = new();
    Task _running = Task.CompletedTask;

    /// <summary>Created by dependency injection.</summary>
    public ConvergeHost(ConvergeOptions options, IMessageStore store, IServiceProvider services, ILogger<ConvergeHost> logger)
    {
        _options = options;
        _store = store;
        _services = services;
        _logger = logger;
    }

    /// <summary>
    /// Fails the start, naming what is missing, when a capability this process uses needs an optional contract the
    /// store does not offer: sagas need saga storage, jobs need job storage.
    /// </summary>
    async ValueTask RequireContractsAsync(CancellationToken cancellationToken)
    {
        var sagas = _options.SagaRegistry.All.Any();
        var jobs = _options.Queues.Values.Any(q => q.RunsJobs) || _options.RecurringJobs.Count > 0;
        if (!sagas && !jobs)
        {
            return;
        }

        await using var probe = await _store.BeginAsync(cancellationToken);
        if (sagas)
        {
            _ = probe.Sagas();
        }

        if (jobs)
        {
            _ = probe.Jobs();
            _ = _store.Jobs();
        }
    }

    /// <inheritdoc />
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        ConvergeOptionsValidator.ThrowIfInvalid(_options);
        await _store.MigrateAsync(cancellationToken);
        await RequireContractsAsync(cancellationToken);
        var jobs = _services.GetRequiredService<Jobs.JobRuntime>();
        var loggers = _services.GetRequiredService<ILoggerFactory>();
        var scheduler = new Jobs.RecurringJobScheduler(jobs, loggers.CreateLogger("Converge.Jobs.Scheduler"));
        await jobs.Client.RegisterQueuesAsync(_options.Queues.Values.Where(q => q.RunsJobs).Select(q => q.Name), cancellationToken);
        await scheduler.RegisterAsync(cancellationToken);
        if (!_options.RunConsumers)
        {
            return;
        }

        var bus = _services.GetRequiredService<MessageBus>();
        var observers = _services.GetRequiredService<ObserverSet>();
        var scopes = _services.GetRequiredService<IServiceScopeFactory>();
        var work = new List<Task>();
        foreach (var queue in _options.Queues.Values.Where(q => q.RunsJobs))
        {
            work.Add(_options.Run(
                async () =>
                {
                    var consumer = new Jobs.JobQueueConsumer(queue, jobs, observers, scopes, loggers.CreateLogger($"Converge.Jobs.{queue.Name}"));
                    await consumer.RunAsync(_stopping.Token, _abort.Token);
                }));
        }

        if (_options.Jobs.RunScheduler && _options.RecurringJobs.Count > 0)
        {
            work.Add(_options.Run(() => scheduler.RunAsync(_stopping.Token)));
        }

        foreach (var queue in _options.Queues.Values.Where(q => !q.RunsJobs))
        {
            var consumer = new QueueConsumer(queue, _options, _store, bus, observers, scopes, loggers.CreateLogger($"Converge.Queue.{queue.Name}"));
            work.Add(consumer.RunAsync(_stopping.Token, _abort.Token));
        }

        foreach (var group in _options.ConsumerGroups.Values)
        {
            var runner = new ConsumerGroupRunner(group, _options, _store, bus, observers, scopes, loggers.CreateLogger($"Converge.Group.{group.Name}"));
            work.Add(_options.Run(() => runner.RunAsync(_stopping.Token, _abort.Token)));
        }

        if (_options.Projections.Count > 0)
        {
            var catalog = _services.GetRequiredService<Projections.ProjectionCatalog>();
            foreach (var projection in _options.Projections)
            {
                var runner = new Projections.ProjectionRunner(
                    projection,
                    (Projections.IProjection)_services.GetRequiredService(projection.ProjectionType),
                    _options,
                    _store,
                    catalog,
                    loggers.CreateLogger($"Converge.Projection.{projection.Name}"));
                work.Add(_options.Run(() => runner.RunAsync(_stopping.Token, _abort.Token)));
            }
        }

        work.Add(_options.Run(() => PurgeInboxAsync(_stopping.Token)));
        _running = Task.WhenAll(work);
        Diagnostics.Log.Started(_logger, _store.Name, _options.Queues.Count, _options.ConsumerGroups.Count, _options.Projections.Count);
    }

    /// <summary>
    /// Stops claiming and lets in-flight batches finish until <paramref name="cancellationToken"/> (the host's shutdown
    /// timeout) is cancelled; then cancels their handlers, rolls their batches back without waiting for handlers that
    /// ignore cancellation, and hands the messages back uncounted. Returns at most <see cref="HandBackTime"/> after the
    /// token is cancelled, even when a handler blocks its thread (its messages return when their leases expire).
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        using (cancellationToken.Register(() => _abort.Cancel()))
        {
            await WaitForWorkersAsync(cancellationToken);
        }

        Diagnostics.Log.Stopped(_logger);
    }

    /// <summary>How long workers are given to hand their messages back once the shutdown timeout has passed: 1 second.</summary>
    public static TimeSpan HandBackTime { get; } = TimeSpan.FromSeconds(1);

    async Task WaitForWorkersAsync(CancellationToken shutdownTimeout)
    {
        var finished = _running.IsCompleted || await Task.WhenAny(_running, Task.Delay(Timeout.InfiniteTimeSpan, shutdownTimeout)) == _running;
        if (!finished)
        {
            // Out of shutdown time: the abort is signalled and batches are being handed back. Measured on the wall clock,
            // as the host's shutdown timeout is: a test's clock that nobody advances must not hold a stop forever.
            finished = await Task.WhenAny(_running, Task.Delay(HandBackTime, CancellationToken.None)) == _running;
        }

        if (!finished)
        {
            Diagnostics.Log.StopTimedOut(_logger, HandBackTime);
            return;
        }

        try
        {
            await _running;
        }
        catch (OperationCanceledException)
        {
            // Aborted in-flight work was handed back to the store.
        }
    }

    async Task PurgeInboxAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            var wait = _options.InboxCleanupInterval;
            try
            {
                var cutoff = _options.TimeProvider.GetUtcNow() - _options.InboxRetention;
                var deleted = await _store.PurgeInboxAsync(cutoff, stopping);
                if (deleted > 0)
                {
                    Diagnostics.Log.InboxPurged(_logger, deleted, cutoff);
                }

                // Expired unique job keys hold nothing back any more; a store without job storage has none.
                if (StoreContracts.Find<IJobStore>(_store) is { } jobs)
                {
                    await jobs.PurgeExpiredUniqueKeysAsync(stopping);
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception exception)
            {
                Diagnostics.ConvergeDiagnostics.ConsumerErrors.Add(1);
                wait = _options.PollInterval * 10;
                Diagnostics.Log.InboxPurgeFailed(_logger, exception, wait);
            }

            try
            {
                await Task.Delay(wait, _options.TimeProvider, stopping);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (!_stopping.IsCancellationRequested)
        {
            await _stopping.CancelAsync();
            await _abort.CancelAsync();
            await WaitForWorkersAsync(_abort.Token);
        }

        _stopping.Dispose();
        _abort.Dispose();
    }
}
