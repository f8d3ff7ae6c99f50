namespace Converge.Contracts;

/// <summary>
/// A message as it travels and is stored: identity, type, business transaction, timing, headers and the
/// serialized body. Every queue message and every log event is an envelope.
/// </summary>
public sealed class Envelope
{
    /// <summary>Unique id of this message; the inbox uses it to make handling idempotent.</summary>
    public required Guid MessageId { get; init; }

    /// <summary>The registered type name with its version, for example <c>shop.place-order@1</c>.</summary>
    public required string MessageType { get; init; }

    /// <summary>The business transaction id this message belongs to (correlation id); <c>null</c> when none.</summary>
    public string? CorrelationId { get; init; }

    /// <summary>The id of the message whose handling caused this one; <c>null</c> for a message sent from outside a handler.</summary>
    public Guid? CausationId { get; init; }

    /// <summary>When the message was sent, read from the sender's <see cref="TimeProvider"/>.</summary>
    public required DateTimeOffset SentAt { get; init; }

    /// <summary>
    /// The moment of the state of the world this message was computed from. Handlers that act later should
    /// re-read current state and compare; <c>null</c> when the sender did not say.
    /// </summary>
    public DateTimeOffset? AsOf { get; init; }

    /// <summary>Free-form headers (trace context travels here as <c>traceparent</c>). Never <c>null</c>.</summary>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = EmptyHeaders;

    /// <summary>The serialized body (UTF-8 JSON with the default serializer).</summary>
    public required ReadOnlyMemory<byte> Body { get; init; }

    internal static readonly IReadOnlyDictionary<string, string> EmptyHeaders = new Dictionary<string, string>();
}
