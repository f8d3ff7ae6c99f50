using Converge.Hosting;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>
/// Registers Converge in a service collection. It lives in the namespace of <see cref="IServiceCollection"/>, as .NET's
/// guidance for libraries asks, so <c>services.AddConverge</c> needs no using of its own; the options it configures are in
/// <c>Converge.Runtime</c>.
/// </summary>
public static class ConvergeServiceCollectionExtensions
{
    /// <summary>
    /// Adds Converge: the store (<see cref="IMessageStore"/>), the clients an application injects, all singletons
    /// (<see cref="IMessageBus"/> sends and publishes, <see cref="Converge.Jobs.IJobClient"/> enqueues jobs,
    /// <see cref="Converge.Sagas.ISagaClient"/> starts and queries sagas, <see cref="Converge.Degraded.IDegradedGrants"/> records
    /// degraded-mode grants, <see cref="Converge.Consistency.IConsistency"/> waits for projections and groups to reach a
    /// read-your-writes token), and a hosted service that migrates the store
    /// and runs the consumers. <paramref name="configure"/> must choose a store (for example <c>o.UseSqlite("app.db")</c>)
    /// and register every message type; the options are validated when the host starts, with messages that
    /// name the fix.
    /// </summary>
    public static IServiceCollection AddConverge(this IServiceCollection services, Action<ConvergeOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        var options = new ConvergeOptions();
        configure(options);

        // A participant dead-letters a saga's command whether or not this process runs sagas: the saga protocol's
        // failure reply is always on.
        options.DeadLetterHooks.Add(Converge.Sagas.SagaDeadLetterReply.SendAsync);
        foreach (var register in options.ServiceRegistrations)
        {
            register(services);
        }

        services.AddSingleton(options);
        services.AddSingleton<IOptions<ConvergeOptions>>(Microsoft.Extensions.Options.Options.Create(options));
        services.TryAddSingleton<ILoggerFactory>(NullLoggerFactory.Instance);
        services.TryAdd(ServiceDescriptor.Singleton(typeof(ILogger<>), typeof(Logger<>)));
        services.TryAddSingleton(sp =>
        {
            ConvergeOptionsValidator.ThrowIfInvalid(options);
            return options.CreateStore(new StoreContext(options.TimeProvider, sp));
        });
        services.TryAddSingleton<ObserverSet>();
        services.TryAddSingleton(sp => new Converge.Projections.ProjectionCatalog(sp.GetRequiredService<IMessageStore>(), options.TimeProvider));
        services.TryAddSingleton<MessageBus>();
        services.TryAddSingleton<IMessageBus>(sp => sp.GetRequiredService<MessageBus>());
        services.TryAddSingleton(new Converge.Faults.FaultInjector(options.Faults));
        services.TryAddSingleton<Converge.Sagas.SagaEngine>();
        services.TryAddSingleton<Converge.Sagas.ISagaClient, Converge.Sagas.SagaClient>();
        services.TryAddSingleton<Converge.Degraded.IDegradedGrants, Converge.Degraded.DegradedGrants>();
        services.TryAddSingleton<Converge.Consistency.IConsistency, Converge.Consistency.ConsistencyWaiter>();
        services.TryAddSingleton<Converge.Jobs.JobRuntime>();
        services.TryAddSingleton<Converge.Jobs.IJobClient>(sp => sp.GetRequiredService<Converge.Jobs.JobRuntime>().Client);
        services.TryAddSingleton<ConvergeHost>();
        services.AddHostedService(sp => sp.GetRequiredService<ConvergeHost>());

        // After the host, which migrates the store: the status gauges read it.
        services.TryAddSingleton<StatusMonitor>();
        services.AddHostedService(sp => sp.GetRequiredService<StatusMonitor>());
        return services;
    }
}
