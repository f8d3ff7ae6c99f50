using Microsoft.Extensions.Logging;

namespace Converge.RabbitMq;

/// <summary>The transport's log messages. Event ids 3000-3999 are stable: alerts may depend on them.</summary>
internal static partial class RabbitMqLog
{
    [LoggerMessage(EventId = 3000, Level = LogLevel.Information, Message = "Connected to RabbitMQ at {Broker}")]
    public static partial void Connected(ILogger logger, string broker);

    [LoggerMessage(EventId = 3001, Level = LogLevel.Warning, Message = "RabbitMQ at {Broker} is unreachable; messages wait in the outbox. Trying again in {Delay}")]
    public static partial void Unreachable(ILogger logger, Exception exception, string broker, TimeSpan delay);

    [LoggerMessage(EventId = 3002, Level = LogLevel.Warning, Message = "The connection to RabbitMQ was lost: {Reason}")]
    public static partial void ConnectionLost(ILogger logger, string reason);

    [LoggerMessage(EventId = 3003, Level = LogLevel.Warning, Message = "RabbitMQ blocked the connection ({Reason}): it takes no publishes until the alarm clears, and messages wait in the outbox")]
    public static partial void ConnectionBlocked(ILogger logger, string reason);

    [LoggerMessage(EventId = 3004, Level = LogLevel.Information, Message = "RabbitMQ unblocked the connection")]
    public static partial void ConnectionUnblocked(ILogger logger);

    [LoggerMessage(EventId = 3100, Level = LogLevel.Warning, Message = "The outbox relay could not move messages of queue {Queue} to RabbitMQ; they stay in the outbox. Trying again in {Delay}")]
    public static partial void RelayFailed(ILogger logger, Exception exception, string queue, TimeSpan delay);

    [LoggerMessage(EventId = 3101, Level = LogLevel.Information, Message = "Queue {Queue} does not exist on RabbitMQ yet (no consumer has declared it); its messages wait in the outbox")]
    public static partial void QueueAbsent(ILogger logger, string queue);

    [LoggerMessage(EventId = 3102, Level = LogLevel.Error, Message = "The outbox relay published {Count} message(s) of queue {Queue} but could not mark them relayed; they will be published again (the inbox absorbs the copies)")]
    public static partial void RelayCompletionFailed(ILogger logger, Exception exception, string queue, int count);

    [LoggerMessage(EventId = 3103, Level = LogLevel.Debug, Message = "Relayed {Count} message(s) of queue {Queue} to RabbitMQ ({Refused} refused, {Returned} unroutable)")]
    public static partial void Relayed(ILogger logger, string queue, int count, int refused, bool returned);

    [LoggerMessage(EventId = 3104, Level = LogLevel.Debug, Message = "Delivery of message {MessageId} on queue {Queue}: {AttemptsMade} attempt(s) before the broker, returned {DeliveryCount} time(s)")]
    public static partial void Delivered(ILogger logger, Guid messageId, string queue, int attemptsMade, int deliveryCount);

    [LoggerMessage(EventId = 3200, Level = LogLevel.Error, Message = "Message {MessageId} on queue {Queue} is not a Converge envelope ({Error}); moved to the dead letters")]
    public static partial void InvalidEnvelope(ILogger logger, string messageId, string queue, string error);

    [LoggerMessage(EventId = 3201, Level = LogLevel.Error, Message = "RabbitMQ dead-lettered message {MessageId} of queue {Queue} ({Reason}); moved to the dead letters")]
    public static partial void BrokerDeadLettered(ILogger logger, Guid messageId, string queue, string reason);

    [LoggerMessage(EventId = 3202, Level = LogLevel.Error, Message = "Could not record a dead letter from RabbitMQ queue {Queue}; the broker delivers it again")]
    public static partial void DeadLetterFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(EventId = 3203, Level = LogLevel.Warning, Message = "Could not settle a delivery of queue {Queue} with RabbitMQ; the broker delivers it again (the inbox absorbs the copy)")]
    public static partial void SettleFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(EventId = 3204, Level = LogLevel.Warning, Message = "Could not hand {Count} delivery(ies) of queue {Queue} back to the outbox; returned them to RabbitMQ instead (their attempt is counted)")]
    public static partial void HandBackFailed(ILogger logger, Exception exception, string queue, int count);

    [LoggerMessage(EventId = 3206, Level = LogLevel.Warning, Message = "RabbitMQ cancelled the consumer of queue {Queue} (the queue was deleted or is unavailable); consuming it again")]
    public static partial void ConsumerCancelled(ILogger logger, string queue);

    [LoggerMessage(EventId = 3205, Level = LogLevel.Debug, Message = "The lease of {Count} delivery(ies) of queue {Queue} expired; returned them to RabbitMQ for another consumer")]
    public static partial void LeasesExpired(ILogger logger, string queue, int count);

    [LoggerMessage(EventId = 3300, Level = LogLevel.Warning, Message = "The log relay could not mirror events to stream {Stream}; trying again in {Delay}")]
    public static partial void LogRelayFailed(ILogger logger, Exception exception, string stream, TimeSpan delay);

    [LoggerMessage(EventId = 3301, Level = LogLevel.Information, Message = "This process now mirrors the event log to stream {Stream}, from position {Position}")]
    public static partial void LogRelayStarted(ILogger logger, string stream, long position);

    [LoggerMessage(EventId = 3302, Level = LogLevel.Warning, Message = "Reading the log from stream {Stream} failed; read from the store instead")]
    public static partial void StreamReadFailed(ILogger logger, Exception exception, string stream);

    [LoggerMessage(EventId = 3400, Level = LogLevel.Warning, Message = "Could not read queue depths from RabbitMQ for the status; it shows the store's part only")]
    public static partial void StatusFailed(ILogger logger, Exception exception);
}
