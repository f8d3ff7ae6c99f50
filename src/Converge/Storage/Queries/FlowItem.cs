namespace Converge.Storage;

/// <summary>One message or event of a business transaction, as the flow view shows it.</summary>
/// <param name="MessageId">The message or event id.</param>
/// <param name="MessageType">Its type name.</param>
/// <param name="CausationId">The message that caused it, if any.</param>
/// <param name="SentAt">When it was sent or published.</param>
/// <param name="Where">Where it is or went: <c>queue:NAME</c>, <c>log:STREAM</c> or <c>dead-letters:SOURCE</c>.</param>
/// <param name="Status">
/// <c>handled</c> (in a queue consumer's inbox), <c>pending</c> (still on its queue), <c>dead-lettered</c>, or
/// <c>appended</c> (a log event).
/// </param>
/// <param name="HandledAt">When a queue consumer handled it, if it did.</param>
public sealed record FlowItem(Guid MessageId, string MessageType, Guid? CausationId, DateTimeOffset SentAt, string Where, string Status, DateTimeOffset? HandledAt);
