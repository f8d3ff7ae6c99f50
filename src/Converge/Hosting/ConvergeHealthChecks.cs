using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Converge.Transports;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace Converge.Hosting;

/// <summary>The store answers a query within <see cref="ConvergeHealthCheckOptions.StoreTimeout"/>.</summary>
internal sealed class StoreHealthCheck(IMessageStore store, ConvergeOptions options, ConvergeHealthCheckOptions thresholds) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken)
    {
        using var timeout = new CancellationTokenSource(thresholds.StoreTimeout, options.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        try
        {
            var head = await store.GetLogHeadAsync(linked.Token);
            return HealthCheckResult.Healthy($"The {store.Name} store answered; the log is at {head}.");
        }
        catch (OperationCanceledException exception) when (timeout.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            return new HealthCheckResult(context.Registration.FailureStatus, $"The {store.Name} store did not answer within {thresholds.StoreTimeout}.", exception);
        }
        catch (Exception exception) when (exception is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            return new HealthCheckResult(context.Registration.FailureStatus, $"The {store.Name} store is unreachable: {exception.GetType().Name}: {exception.Message}", exception);
        }
    }
}

/// <summary>The transport's broker connection is open; healthy when the store carries its queues itself.</summary>
internal sealed class BrokerHealthCheck(IMessageStore store) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken)
    {
        var transport = StoreContracts.Find<TransportedStore>(store)?.Transport;
        var result = transport switch
        {
            null => HealthCheckResult.Healthy("No broker: the store carries the queues."),
            ITransportConnection { IsConnected: true } connection => HealthCheckResult.Healthy($"Connected to {connection.Broker}."),
            ITransportConnection connection => new HealthCheckResult(
                context.Registration.FailureStatus,
                $"Not connected to {connection.Broker}: messages wait in the outbox until the broker is back, and consumers receive nothing."),
            _ => HealthCheckResult.Healthy($"The {transport.Name} transport reports no connection state."),
        };
        return Task.FromResult(result);
    }
}

/// <summary>Every consumer group is at most <see cref="ConvergeHealthCheckOptions.MaxConsumerGroupLag"/> events behind.</summary>
internal sealed class ConsumerGroupLagHealthCheck(StatusMonitor monitor, ConvergeOptions options, ConvergeHealthCheckOptions thresholds) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken)
    {
        StatusReading reading;
        try
        {
            reading = await monitor.GetAsync(options.StatusInterval, cancellationToken);
        }
        catch (Exception exception) when (exception is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            return new HealthCheckResult(context.Registration.FailureStatus, $"The store's status could not be read: {exception.Message}", exception);
        }

        var data = reading.Status.ConsumerGroups.ToDictionary(g => g.Group, g => (object)g.Lag);
        var behind = reading.Status.ConsumerGroups.Where(g => g.Lag > thresholds.MaxConsumerGroupLag).ToList();
        return behind.Count == 0
            ? HealthCheckResult.Healthy($"{reading.Status.ConsumerGroups.Count} consumer group(s), none more than {thresholds.MaxConsumerGroupLag} events behind.", data)
            : HealthCheckResult.Degraded(
                $"{string.Join(", ", behind.Select(g => $"{g.Group} is {g.Lag} events behind{(g.Paused ? " (paused)" : "")}"))}; the limit is {thresholds.MaxConsumerGroupLag} (MaxConsumerGroupLag).",
                data: data);
    }
}

/// <summary>Fewer than <see cref="ConvergeHealthCheckOptions.StuckSagasDegraded"/> saga instances are stuck.</summary>
internal sealed class StuckSagasHealthCheck(StatusMonitor monitor, ConvergeOptions options, ConvergeHealthCheckOptions thresholds) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken)
    {
        StatusReading reading;
        try
        {
            reading = await monitor.GetAsync(options.StatusInterval, cancellationToken);
        }
        catch (Exception exception) when (exception is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            return new HealthCheckResult(context.Registration.FailureStatus, $"The store's status could not be read: {exception.Message}", exception);
        }

        if (reading.Sagas is null)
        {
            return HealthCheckResult.Healthy("The store keeps no sagas.");
        }

        var stuck = reading.Sagas.Where(c => c.State == SagaState.Stuck).GroupBy(c => c.Definition).ToDictionary(g => g.Key, g => (object)g.Sum(c => c.Count));
        var total = stuck.Values.Sum(v => (long)v);
        var description = total == 0
            ? "No saga instance is stuck."
            : $"{total} saga instance(s) stuck ({string.Join(", ", stuck.Select(s => $"{s.Key}: {s.Value}"))}), waiting for an operator: 'converge sagas resume' once the participant is fixed.";
        if (thresholds.StuckSagasUnhealthy is { } unhealthy && total >= unhealthy)
        {
            return HealthCheckResult.Unhealthy(description, data: stuck);
        }

        return total >= thresholds.StuckSagasDegraded ? HealthCheckResult.Degraded(description, data: stuck) : HealthCheckResult.Healthy(description, stuck);
    }
}
