namespace Converge.Runtime;

/// <summary>
/// Handles one message type. Register it explicitly with <see cref="ConvergeOptions.Handle{TMessage,THandler}"/>
/// (a queue) or <see cref="ConvergeOptions.Subscribe{TEvent,THandler}"/> (a log consumer group).
/// </summary>
/// <remarks>
/// Delivery is at least once: the same message can arrive again after a crash or a lost lease. Writes made
/// through <see cref="MessageContext.GetTransactionAsync"/> commit together with the inbox record (or the
/// consumer-group checkpoint), so they take effect once. Calls to anything outside that database must be
/// idempotent; use <see cref="MessageContext.IdempotencyKey"/>.
/// </remarks>
public interface IHandler<in TMessage>
{
    /// <summary>Handles <paramref name="message"/>. Throwing records a failed attempt; see <see cref="RetryOptions"/>.</summary>
    Task HandleAsync(TMessage message, MessageContext context, CancellationToken cancellationToken);
}

/// <summary>
/// Thrown by a handler to say how its failure should be treated, as data on the error: retry or not, and when.
/// </summary>
public class HandlerFailureException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="nonRetryable">When <c>true</c> the message is dead-lettered at once.</param>
    /// <param name="nextRetryDelay">Overrides the backoff for the next attempt; <c>null</c> uses the policy.</param>
    /// <param name="innerException">The cause.</param>
    public HandlerFailureException(string message, bool nonRetryable = false, TimeSpan? nextRetryDelay = null, Exception? innerException = null)
        : base(message, innerException)
    {
        NonRetryable = nonRetryable;
        NextRetryDelay = nextRetryDelay;
    }

    /// <summary>Creates a retryable failure.</summary>
    public HandlerFailureException() : this("The handler failed.") { }

    /// <summary>Creates a retryable failure.</summary>
    public HandlerFailureException(string message) : this(message, false) { }

    /// <summary>Creates a retryable failure.</summary>
    public HandlerFailureException(string message, Exception innerException) : this(message, false, null, innerException) { }

    /// <summary>Whether retrying cannot help (the message is dead-lettered at once).</summary>
    public bool NonRetryable { get; }

    /// <summary>The delay before the next attempt, overriding the backoff; <c>null</c> uses the policy.</summary>
    public TimeSpan? NextRetryDelay { get; }
}
