using Converge.Storage;

namespace Converge.RabbitMq;

/// <summary>
/// How a Converge envelope travels as an AMQP message. The body is the envelope's serialized message, unchanged. The
/// message id, type and correlation id are the AMQP properties of those names; the message is persistent. Everything
/// else is a header named here (values are strings unless stated). The envelope's own headers travel as headers of
/// their own name; one whose name starts with <c>x-</c> (the broker's namespace) is sent as
/// <see cref="EscapedHeaderPrefix"/> followed by its name. A producer outside Converge that sets at least the message
/// id (a GUID) and the type can send to a Converge queue; anything else is dead-lettered as
/// <see cref="RabbitMqDeadLetterReasons.InvalidEnvelope"/>.
/// </summary>
public static class RabbitMqHeaders
{
    /// <summary>When the message was sent, ISO 8601 with the offset (the AMQP timestamp property holds whole seconds only).</summary>
    public const string SentAt = "x-converge-sent-at";

    /// <summary>The id of the message whose handling caused this one.</summary>
    public const string CausationId = "x-converge-causation-id";

    /// <summary>The moment of the state of the world the message was computed from, ISO 8601.</summary>
    public const string AsOf = "x-converge-as-of";

    /// <summary>Delivery attempts made before this message reached the broker (a number); absent means none.</summary>
    public const string Attempts = "x-converge-attempts";

    /// <summary>The earlier failed attempts, a JSON array of <see cref="AttemptRecord"/>.</summary>
    public const string History = "x-converge-history";

    /// <summary>The priority the message was sent with (a number).</summary>
    public const string Priority = "x-converge-priority";

    /// <summary>On the log stream: the event's global position in the store's log (a number).</summary>
    public const string Position = "x-converge-position";

    /// <summary>On the log stream: the stream (aggregate) the event belongs to.</summary>
    public const string Stream = "x-converge-stream";

    /// <summary>On the log stream: the event's version within its stream (a number).</summary>
    public const string StreamVersion = "x-converge-stream-version";

    /// <summary>Prefix of an envelope header whose own name starts with <c>x-</c>.</summary>
    public const string EscapedHeaderPrefix = "x-converge-header-";
}

/// <summary>
/// Dead-letter reasons the RabbitMQ transport adds to <see cref="DeadLetterReasons"/>. Stable strings: tools and
/// queries depend on them. A message the broker dead-letters for exceeding the delivery limit gets
/// <see cref="DeadLetterReasons.MaxAttemptsExceeded"/>.
/// </summary>
public static class RabbitMqDeadLetterReasons
{
    /// <summary>A message on a Converge queue that does not carry a Converge envelope (no message id, no type, bad header values).</summary>
    public const string InvalidEnvelope = "invalid-envelope";

    /// <summary>The broker dead-lettered the message because a consumer rejected it without requeueing.</summary>
    public const string Rejected = "broker-rejected";

    /// <summary>The broker dead-lettered the message because its time to live expired.</summary>
    public const string Expired = "broker-expired";

    /// <summary>The broker dead-lettered the message for another reason (a length limit); the exception text names it.</summary>
    public const string Other = "broker-dead-lettered";
}
