using Converge.Runtime;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Converge.RabbitMq;

/// <summary>Chooses RabbitMQ as the transport of the configured store.</summary>
public static class RabbitMqConvergeExtensions
{
    /// <summary>
    /// Moves the store's queues to the RabbitMQ broker at <paramref name="uri"/> and mirrors its event log to a stream
    /// (see <see cref="RabbitMqTransport"/>). Call it after choosing the store (<c>UseSqlite</c>, <c>UsePostgreSql</c>):
    /// the store keeps the outbox, the inbox, the log, sagas, jobs and dead letters, and every send still commits with
    /// the sender's transaction. The process's job queues stay in the store. <paramref name="configure"/> adjusts
    /// <see cref="RabbitMqTransportOptions"/>; the options are validated here.
    /// </summary>
    /// <exception cref="InvalidOperationException">No store was chosen before.</exception>
    public static ConvergeOptions UseRabbitMq(this ConvergeOptions options, Uri uri, Action<RabbitMqTransportOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(uri);
        var store = options.StoreFactory ?? throw new InvalidOperationException(
            "UseRabbitMq wraps a store, and none is chosen yet. Call options.UseSqlite(\"converge.db\") or options.UsePostgreSql(...) first, then options.UseRabbitMq(...).");
        var transportOptions = new RabbitMqTransportOptions { Uri = uri };
        configure?.Invoke(transportOptions);
        transportOptions.Validate();
        options.StoreFactory = context =>
        {
            // Read when the store is created, after every queue and job is registered.
            var jobQueues = options.Queues.Values.Where(q => q.RunsJobs).Select(q => q.Name).ToList();
            return new RabbitMqTransport(store(context), transportOptions, context.TimeProvider, context.Services.GetService<ILoggerFactory>(), jobQueues);
        };
        return options;
    }
}
