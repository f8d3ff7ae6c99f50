namespace Converge.Runtime;

/// <summary>Optional settings of one send. Every property defaults to "decide for me".</summary>
public sealed class SendOptions
{
    /// <summary>The destination queue; default: the route registered for the type.</summary>
    public string? Queue { get; set; }

    /// <summary>The message id; default: a new time-ordered id. Reusing an id makes the send idempotent at the consumer.</summary>
    public Guid? MessageId { get; set; }

    /// <summary>The business transaction id; default: the current message's, when sent from a handler.</summary>
    public string? CorrelationId { get; set; }

    /// <summary>The state of the world the message was computed from; default: none.</summary>
    public DateTimeOffset? AsOf { get; set; }

    /// <summary>Delay before the message becomes visible; default none. Ignored when <see cref="DueAt"/> is set.</summary>
    public TimeSpan? Delay { get; set; }

    /// <summary>When the message becomes visible; default now.</summary>
    public DateTimeOffset? DueAt { get; set; }

    /// <summary>Higher is claimed first within the queue; default 0.</summary>
    public int Priority { get; set; }

    /// <summary>Extra headers; default none.</summary>
    public IDictionary<string, string>? Headers { get; set; }
}

/// <summary>Optional settings of one publish to the log.</summary>
public sealed class PublishOptions
{
    /// <summary>The event id; default: a new time-ordered id.</summary>
    public Guid? MessageId { get; set; }

    /// <summary>The business transaction id; default: the current message's, when published from a handler.</summary>
    public string? CorrelationId { get; set; }

    /// <summary>The state of the world the event describes; default: none.</summary>
    public DateTimeOffset? AsOf { get; set; }

    /// <summary>The stream version the writer expects; <c>null</c> (default) appends at any version, 0 requires a new stream.</summary>
    public long? ExpectedVersion { get; set; }

    /// <summary>Extra headers; default none.</summary>
    public IDictionary<string, string>? Headers { get; set; }
}

/// <summary>Thrown when a message body exceeds <see cref="ConvergeOptions.MaxMessageSize"/>.</summary>
public sealed class MessageTooLargeException : Exception
{
    /// <summary>Creates the exception.</summary>
    public MessageTooLargeException(string messageType, int size, int limit)
        : base($"A {messageType} body is {size} bytes, over the limit of {limit}. Send a reference to the data instead, or raise ConvergeOptions.MaxMessageSize on every process.") { }

    /// <summary>Creates the exception.</summary>
    public MessageTooLargeException() { }

    /// <summary>Creates the exception.</summary>
    public MessageTooLargeException(string message) : base(message) { }

    /// <summary>Creates the exception.</summary>
    public MessageTooLargeException(string message, Exception innerException) : base(message, innerException) { }
}
