using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Converge.Diagnostics;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Converge.Hosting;

/// <summary>One reading of the store's status, and of its saga instances when this process runs sagas.</summary>
/// <param name="Status">Queue depths, dead letters, lag.</param>
/// <param name="Sagas">Saga instances by definition, version and state; <c>null</c> when this process runs no sagas.</param>
/// <param name="ReadAt">When it was read, on the application's clock.</param>
internal sealed record StatusReading(StoreStatus Status, IReadOnlyList<SagaCount>? Sagas, DateTimeOffset ReadAt);

/// <summary>
/// Reads the store's status every <see cref="ConvergeOptions.StatusInterval"/> while a listener observes the
/// <c>Converge</c> meter's status gauges, and keeps the last reading: the gauges report it without querying the store
/// at each collection. The health checks ask it for a reading no older than the interval.
/// </summary>
internal sealed class StatusMonitor : IHostedService, IDisposable
{
    static readonly ConcurrentDictionary<StatusMonitor, byte> Running = new();

    static readonly ObservableGauge<long> QueueDepth = ConvergeDiagnostics.Meter.CreateObservableGauge(
        "converge.queue.depth", QueueDepths, "{message}", "Messages on a queue in the store, by queue and state (ready, scheduled, in_flight).");

    static readonly ObservableGauge<double> OldestReadyAge = ConvergeDiagnostics.Meter.CreateObservableGauge(
        "converge.queue.oldest_ready.age", OldestReadyAges, "s", "How long the longest-waiting ready message of a queue has been visible, by queue; 0 when none is ready.");

    static readonly ObservableGauge<long> DeadLetters = ConvergeDiagnostics.Meter.CreateObservableGauge(
        "converge.dead_letters", DeadLetterCounts, "{message}", "Dead letters in the store, by the queue they came from.");

    static readonly ObservableGauge<long> ConsumerGroupLag = ConvergeDiagnostics.Meter.CreateObservableGauge(
        "converge.consumer_group.lag", Lags, "{event}", "Events between a consumer group's checkpoint and the head of the log, by group.");

    static readonly ObservableGauge<long> Sagas = ConvergeDiagnostics.Meter.CreateObservableGauge(
        "converge.sagas.instances", SagaInstances, "{instance}", "Saga instances in the store, by saga and state (running, compensating, stuck, completed, compensated).");

    readonly ConvergeOptions _options;
    readonly IMessageStore _store;
    readonly ILogger _logger;
    readonly SemaphoreSlim _reading = new(1, 1);
    readonly CancellationTokenSource _stopping = new();
    PeriodicTimer? _timer;
    Task _loop = Task.CompletedTask;
    StatusReading? _last;
    int _disposed;

    public StatusMonitor(ConvergeOptions options, IMessageStore store, ILogger<StatusMonitor> logger)
    {
        _options = options;
        _store = store;
        _logger = logger;
    }

    /// <summary>Whether a listener observes any of the status gauges; only then does the monitor read on its own.</summary>
    internal static bool Observed =>
        QueueDepth.Enabled || OldestReadyAge.Enabled || DeadLetters.Enabled || ConsumerGroupLag.Enabled || Sagas.Enabled;

    /// <summary>Whether readings count saga instances even when this process runs no sagas (the saga health check asks).</summary>
    public bool IncludeSagas { get; set; }

    /// <summary>The last reading; <c>null</c> before the first.</summary>
    public StatusReading? Last => Volatile.Read(ref _last);

    /// <summary>Reads the store now (after any reading under way) and keeps the result.</summary>
    /// <exception cref="NotSupportedException">The store offers no <see cref="IStoreQueries"/>.</exception>
    public async Task<StatusReading> ReadAsync(CancellationToken cancellationToken)
    {
        var queries = StoreContracts.Require<IStoreQueries>(_store, "Status gauges and health checks");
        await _reading.WaitAsync(cancellationToken);
        try
        {
            var status = await queries.GetStatusAsync(cancellationToken);
            IReadOnlyList<SagaCount>? sagas = null;
            if ((IncludeSagas || _options.SagaRegistry.All.Any()) && StoreContracts.Find<ISagaQueries>(_store) is { } sagaQueries)
            {
                sagas = await sagaQueries.CountSagasAsync(cancellationToken);
            }

            var reading = new StatusReading(status, sagas, _options.TimeProvider.GetUtcNow());
            Volatile.Write(ref _last, reading);
            return reading;
        }
        finally
        {
            _reading.Release();
        }
    }

    /// <summary>The last reading when it is at most <paramref name="maxAge"/> old; otherwise a new one.</summary>
    public async Task<StatusReading> GetAsync(TimeSpan maxAge, CancellationToken cancellationToken) =>
        Last is { } last && _options.TimeProvider.GetUtcNow() - last.ReadAt <= maxAge ? last : await ReadAsync(cancellationToken);

    /// <inheritdoc />
    public Task StartAsync(CancellationToken cancellationToken)
    {
        // The timer starts here, before the host's start returns: a test that advances its clock afterwards reaches it.
        _timer = new PeriodicTimer(_options.StatusInterval, _options.TimeProvider);
        Running.TryAdd(this, 0);
        _loop = _options.Run(() => RunAsync(_timer, _stopping.Token));
        return Task.CompletedTask;
    }

    async Task RunAsync(PeriodicTimer timer, CancellationToken stopping)
    {
        do
        {
            if (!Observed)
            {
                continue;
            }

            try
            {
                await ReadAsync(stopping);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (NotSupportedException exception)
            {
                Log.StatusUnavailable(_logger, exception.Message);
                return;
            }
            catch (Exception exception)
            {
                // The gauges keep the last reading; the next tick tries again.
                ConvergeDiagnostics.ConsumerErrors.Add(1);
                Log.StatusReadFailed(_logger, exception, _options.StatusInterval);
            }
        }
        while (await WaitAsync(timer, stopping));
    }

    static async Task<bool> WaitAsync(PeriodicTimer timer, CancellationToken stopping)
    {
        try
        {
            return await timer.WaitForNextTickAsync(stopping);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <inheritdoc />
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        Running.TryRemove(this, out _);
        await _stopping.CancelAsync();
        _timer?.Dispose();
        await _loop;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        // Disposed twice: as itself and as the hosted service the container made of it.
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        Running.TryRemove(this, out _);
        _stopping.Cancel();
        _timer?.Dispose();
        _stopping.Dispose();
        _reading.Dispose();
    }

    static IEnumerable<StatusReading> Readings()
    {
        foreach (var monitor in Running.Keys)
        {
            if (monitor.Last is { } reading)
            {
                yield return reading;
            }
        }
    }

    static IEnumerable<Measurement<long>> QueueDepths()
    {
        foreach (var reading in Readings())
        {
            foreach (var queue in reading.Status.Queues)
            {
                var name = new KeyValuePair<string, object?>("queue", queue.Queue);
                yield return new(queue.Ready, name, new("state", "ready"));
                yield return new(queue.Scheduled, name, new("state", "scheduled"));
                yield return new(queue.InFlight, name, new("state", "in_flight"));
            }
        }
    }

    static IEnumerable<Measurement<double>> OldestReadyAges()
    {
        foreach (var reading in Readings())
        {
            foreach (var queue in reading.Status.Queues)
            {
                var age = queue.OldestReadyAt is { } oldest && oldest < reading.ReadAt ? (reading.ReadAt - oldest).TotalSeconds : 0;
                yield return new(age, new KeyValuePair<string, object?>("queue", queue.Queue));
            }
        }
    }

    static IEnumerable<Measurement<long>> DeadLetterCounts()
    {
        foreach (var reading in Readings())
        {
            foreach (var queue in reading.Status.Queues)
            {
                yield return new(queue.DeadLetters, new KeyValuePair<string, object?>("queue", queue.Queue));
            }
        }
    }

    static IEnumerable<Measurement<long>> Lags()
    {
        foreach (var reading in Readings())
        {
            foreach (var group in reading.Status.ConsumerGroups)
            {
                yield return new(group.Lag, new KeyValuePair<string, object?>("group", group.Group));
            }
        }
    }

    static IEnumerable<Measurement<long>> SagaInstances()
    {
        foreach (var reading in Readings())
        {
            if (reading.Sagas is null)
            {
                continue;
            }

            foreach (var count in reading.Sagas.GroupBy(c => (c.Definition, c.State)))
            {
                yield return new(count.Sum(c => c.Count), new("saga", count.Key.Definition), new("state", SagaStates.ToText(count.Key.State)));
            }
        }
    }
}
