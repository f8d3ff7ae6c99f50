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

    /// <summary>
    /// The ordering key; default <c>null</c>: no order, handled in parallel with everything else. Messages with one key
    /// on one queue are handled one at a time, in send order (the order their sends committed), across every process;
    /// other keys and unkeyed messages run in parallel. A failing message of a key holds the key's later messages
    /// while it waits to retry, and when it is dead-lettered its key stays held (shown by <c>converge status</c>)
    /// until the dead letter is retried (it goes back ahead of them) or discarded. Priority does not reorder a key.
    /// Not every transport keeps key order: a RabbitMQ-transported queue refuses keyed sends.
    /// </summary>
    /// <exception cref="ArgumentException">The key is empty, whitespace only, or longer than <see cref="MaxOrderingKeyLength"/> characters.</exception>
    public string? OrderingKey
    {
        get => _orderingKey;
        set => _orderingKey = value is null ? null : ValidateOrderingKey(value);
    }

    string? _orderingKey;

    /// <summary>The longest ordering key accepted: 256 characters.</summary>
    public const int MaxOrderingKeyLength = 256;

    /// <summary>Returns <paramref name="key"/> when it is a valid ordering key; throws otherwise.</summary>
    /// <exception cref="ArgumentException">The key is empty, whitespace only, or longer than <see cref="MaxOrderingKeyLength"/> characters.</exception>
    public static string ValidateOrderingKey(string key)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(key);
        if (key.Length > MaxOrderingKeyLength)
        {
            throw new ArgumentException($"An ordering key is at most {MaxOrderingKeyLength} characters; this one has {key.Length}. Use a shorter business id (or a hash of it).", nameof(key));
        }

        return key;
    }
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
