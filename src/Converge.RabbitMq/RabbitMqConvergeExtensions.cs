using Converge.Runtime;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Converge.RabbitMq;

/// <summary>Chooses RabbitMQ as the transport of the configured store.</summary>
public static class RabbitMqConvergeExtensions
{
    /// <summary>
    /// Carries the store's queues on the RabbitMQ broker at <paramref name="uri"/> and mirrors its event log to a stream
    /// (see <see cref="RabbitMqTransport"/>). The store (<c>UseSqlite</c>, <c>UsePostgreSql</c>, chosen before or after)
    /// keeps the outbox, the inbox, the log, sagas, jobs and dead letters, and every send still commits with the sender's
    /// transaction. The process's job queues stay in the store. <paramref name="configure"/> adjusts
    /// <see cref="RabbitMqTransportOptions"/>; the options are validated here.
    /// </summary>
    public static ConvergeOptions UseRabbitMq(this ConvergeOptions options, Uri uri, Action<RabbitMqTransportOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(uri);
        var transportOptions = new RabbitMqTransportOptions { Uri = uri };
        configure?.Invoke(transportOptions);
        transportOptions.Validate();
        options.TransportFactory = context => new RabbitMqTransport(transportOptions, context.TimeProvider, context.Services.GetService<ILoggerFactory>());
        return options;
    }
}
