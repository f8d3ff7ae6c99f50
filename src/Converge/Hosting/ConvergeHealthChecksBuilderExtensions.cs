using Converge.Hosting;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Converge's health checks to <c>services.AddHealthChecks()</c>.</summary>
public static class ConvergeHealthChecksBuilderExtensions
{
    /// <summary>
    /// Adds four checks, each tagged with <see cref="ConvergeHealthCheckOptions.Tags"/> (default <c>converge</c>):
    /// <list type="bullet">
    /// <item><c>converge-store</c>: the store answers a cheap query (the head of the log) within
    /// <see cref="ConvergeHealthCheckOptions.StoreTimeout"/> (default 5 s); Unhealthy otherwise.</item>
    /// <item><c>converge-broker</c>: the transport's broker connection is open (<see cref="Converge.Transports.ITransportConnection"/>,
    /// the RabbitMQ transport); Unhealthy while it is not. Healthy when no transport is used.</item>
    /// <item><c>converge-consumer-groups</c>: Degraded when a consumer group is more than
    /// <see cref="ConvergeHealthCheckOptions.MaxConsumerGroupLag"/> events behind (default 10,000).</item>
    /// <item><c>converge-sagas</c>: Degraded from <see cref="ConvergeHealthCheckOptions.StuckSagasDegraded"/> stuck
    /// instances (default 1), Unhealthy from <see cref="ConvergeHealthCheckOptions.StuckSagasUnhealthy"/> (default never).</item>
    /// </list>
    /// The last two read the store's status at most once per <see cref="ConvergeOptions.StatusInterval"/> (default
    /// 10 s), sharing the reading of the status gauges; a failed read reports Unhealthy. Requires
    /// <c>services.AddConverge(...)</c> in the same service collection.
    /// </summary>
    /// <param name="builder">The builder <c>services.AddHealthChecks()</c> returned.</param>
    /// <param name="configure">Changes the thresholds; optional.</param>
    /// <exception cref="OptionsValidationException">The thresholds are invalid; the message names the fix.</exception>
    public static IHealthChecksBuilder AddConvergeHealthChecks(this IHealthChecksBuilder builder, Action<ConvergeHealthCheckOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var thresholds = new ConvergeHealthCheckOptions();
        configure?.Invoke(thresholds);
        var errors = thresholds.Validate().ToList();
        if (errors.Count > 0)
        {
            throw new OptionsValidationException(nameof(ConvergeHealthCheckOptions), typeof(ConvergeHealthCheckOptions), errors);
        }

        string[] tags = [.. thresholds.Tags];
        builder.Add(new HealthCheckRegistration(
            "converge-store",
            sp => new StoreHealthCheck(sp.GetRequiredService<IMessageStore>(), Options(sp), thresholds),
            HealthStatus.Unhealthy,
            tags));
        builder.Add(new HealthCheckRegistration(
            "converge-broker",
            sp => new BrokerHealthCheck(sp.GetRequiredService<IMessageStore>()),
            HealthStatus.Unhealthy,
            tags));
        builder.Add(new HealthCheckRegistration(
            "converge-consumer-groups",
            sp => new ConsumerGroupLagHealthCheck(Monitor(sp, sagas: false), Options(sp), thresholds),
            HealthStatus.Unhealthy,
            tags));
        builder.Add(new HealthCheckRegistration(
            "converge-sagas",
            sp => new StuckSagasHealthCheck(Monitor(sp, sagas: true), Options(sp), thresholds),
            HealthStatus.Unhealthy,
            tags));
        return builder;
    }

    static ConvergeOptions Options(IServiceProvider services) =>
        services.GetService<ConvergeOptions>() ?? throw Missing();

    static StatusMonitor Monitor(IServiceProvider services, bool sagas)
    {
        var monitor = services.GetService<StatusMonitor>() ?? throw Missing();
        if (sagas)
        {
            monitor.IncludeSagas = true;
        }

        return monitor;
    }

    static InvalidOperationException Missing() =>
        new("AddConvergeHealthChecks needs Converge in the same service collection: call services.AddConverge(o => ...) as well.");
}
