using Converge.Contracts;
using Converge.Diagnostics;
using Converge.Storage;
using Microsoft.Extensions.Logging;

namespace Converge.Runtime;

/// <summary>
/// The rules every queue worker (message handlers and jobs) applies to a claimed message: whether it can be
/// decoded at all, and what a failed attempt becomes (a retry with backoff, or a dead letter with its reason).
/// </summary>
internal static class QueueOutcomes
{
    /// <summary>A claimed message made ready to handle, or the reason it cannot be.</summary>
    public readonly record struct Decoded<TRegistration>(TRegistration? Registration, object? Body, string? RejectedFor, Exception? Error)
        where TRegistration : class;

    /// <summary>
    /// Finds the registration for <paramref name="envelope"/>'s type on <paramref name="queue"/> and deserializes
    /// the body as the type <paramref name="typeOf"/> gives; too large, unknown, unhandled and undecodable messages
    /// come back with the dead-letter reason instead.
    /// </summary>
    public static Decoded<TRegistration> Decode<TRegistration>(Envelope envelope, string queue, ConvergeOptions options, Dictionary<string, TRegistration> registrations, Func<TRegistration, Type> typeOf)
        where TRegistration : class
    {
        if (envelope.Body.Length > options.MaxMessageSize)
        {
            return new(null, null, DeadLetterReasons.TooLarge, new MessageTooLargeException(envelope.MessageType, envelope.Body.Length, options.MaxMessageSize));
        }

        // A registration carries its type; an older name reaches it through the registry's aliases and upcasters.
        if (!options.Messages.TryFindReadPath(envelope.MessageType, registrations, static (r, name) => r.ContainsKey(name), out var path))
        {
            return options.Messages.IsKnown(envelope.MessageType)
                ? new(null, null, DeadLetterReasons.NoHandler, new InvalidOperationException($"Queue '{queue}' has no handler for '{envelope.MessageType}'."))
                : new(null, null, DeadLetterReasons.UnknownType, new InvalidOperationException($"'{envelope.MessageType}' is not a registered message type in this process, and no alias or upcaster reads it as one."));
        }

        var registration = registrations[path.Target];
        try
        {
            return new(registration, path.Read(envelope.Body, typeOf(registration), options.Serializer), null, null);
        }
        catch (Exception exception)
        {
            return new(null, null, DeadLetterReasons.DeserializationFailed, exception);
        }
    }

    /// <summary>
    /// Records, in one statement, the inbox entries of the items of a group that <paramref name="envelopeOf"/> names
    /// (<c>null</c>: the item records none). Element i tells whether item i's record was new; <c>null</c> for an item
    /// that records none.
    /// </summary>
    public static async ValueTask<bool?[]> RecordInboxOfAsync(IStoreTransaction transaction, string consumer, int count, Func<int, Envelope?> envelopeOf, CancellationToken cancellationToken)
    {
        var recording = new List<int>(count);
        var envelopes = new List<Envelope>(count);
        for (var i = 0; i < count; i++)
        {
            if (envelopeOf(i) is { } envelope)
            {
                recording.Add(i);
                envelopes.Add(envelope);
            }
        }

        var byItem = new bool?[count];
        if (envelopes.Count == 0)
        {
            return byItem;
        }

        var recorded = await transaction.TryRecordInboxAsync(consumer, envelopes, cancellationToken);
        for (var k = 0; k < recording.Count; k++)
        {
            byItem[recording[k]] = recorded[k];
        }

        return byItem;
    }

    /// <summary>
    /// Removes a handled message: into <paramref name="completions"/>, to go with its group's others in one statement,
    /// or at once when there is none (an isolated pass that removes each item on its own).
    /// </summary>
    /// <returns><c>false</c> when its lease was lost.</returns>
    public static async ValueTask<bool> CompleteAsync(IStoreTransaction transaction, QueuedMessage message, List<QueuedMessage>? completions, CancellationToken cancellationToken)
    {
        if (completions is null)
        {
            return await transaction.CompleteAsync(message, cancellationToken);
        }

        completions.Add(message);
        return true;
    }

    /// <summary>
    /// Records a failed attempt: a permanent failure or the last allowed attempt is dead-lettered, anything else is
    /// retried after the backoff (or the delay a <see cref="HandlerFailureException"/> asks for).
    /// </summary>
    /// <returns>The outcome, or <c>null</c> when the lease was lost and nothing was recorded.</returns>
    public static async ValueTask<HandlingOutcome?> RecordFailureAsync(IStoreTransaction transaction, QueuedMessage message, Exception exception, ConvergeOptions options, ILogger logger, CancellationToken cancellationToken)
    {
        var now = options.TimeProvider.GetUtcNow();
        var failure = new AttemptRecord(message.Attempt, now, $"{exception.GetType().Name}: {exception.Message}");
        if (!options.Retry.IsTransient(exception))
        {
            return await DeadLetterAsync(transaction, message, DeadLetterReasons.PermanentFailure, exception, failure, options, logger, cancellationToken);
        }

        if (message.Attempt >= options.Retry.MaxAttempts)
        {
            return await DeadLetterAsync(transaction, message, DeadLetterReasons.MaxAttemptsExceeded, exception, failure, options, logger, cancellationToken);
        }

        var delay = (exception as HandlerFailureException)?.NextRetryDelay ?? options.Retry.DelayBefore(message.Attempt + 1, options.Random.NextDouble());
        var dueAt = now + delay;
        if (!await transaction.RetryLaterAsync(message, dueAt, failure, cancellationToken))
        {
            Log.LeaseLost(logger, message.Envelope.MessageId, message.Queue);
            return null;
        }

        Log.RetryScheduled(logger, exception, message.Envelope.MessageId, message.Envelope.MessageType, message.Queue, message.Attempt, dueAt);
        return HandlingOutcome.RetryScheduled;
    }

    /// <summary>Moves <paramref name="message"/> to the dead letters with <paramref name="reason"/>.</summary>
    /// <returns>The outcome, or <c>null</c> when the lease was lost and nothing was recorded.</returns>
    public static async ValueTask<HandlingOutcome?> DeadLetterAsync(IStoreTransaction transaction, QueuedMessage message, string reason, Exception? exception, AttemptRecord? failure, ConvergeOptions options, ILogger logger, CancellationToken cancellationToken)
    {
        failure ??= new AttemptRecord(message.Attempt, options.TimeProvider.GetUtcNow(), exception is null ? reason : $"{exception.GetType().Name}: {exception.Message}");
        if (!await transaction.DeadLetterAsync(message, reason, exception?.ToString(), failure, cancellationToken))
        {
            Log.LeaseLost(logger, message.Envelope.MessageId, message.Queue);
            return null;
        }

        foreach (var hook in options.DeadLetterHooks)
        {
            await hook(transaction, message.Envelope, reason, exception, options, cancellationToken);
        }

        Log.DeadLettered(logger, exception, message.Envelope.MessageId, message.Envelope.MessageType, message.Queue, reason);
        return HandlingOutcome.DeadLettered;
    }

    /// <summary>
    /// Hands leased messages back to their queue; a failure to do so is logged and otherwise ignored, because the
    /// leases expire on their own and the messages are delivered again then.
    /// </summary>
    public static async Task ReleaseQuietlyAsync(IMessageStore store, IReadOnlyList<QueuedMessage> messages, bool countAttempt, ILogger logger, string queue)
    {
        try
        {
            await store.ReleaseAsync(messages, countAttempt, CancellationToken.None);
        }
        catch (Exception exception)
        {
            ConvergeDiagnostics.ConsumerErrors.Add(1);
            Log.BatchFailed(logger, exception, queue, messages.Count);
        }
    }
}

/// <summary>Called in the dead-lettering transaction after a queue message was dead-lettered with <c>reason</c>.</summary>
internal delegate ValueTask DeadLetterHook(IStoreTransaction transaction, Envelope envelope, string reason, Exception? exception, ConvergeOptions options, CancellationToken cancellationToken);
