using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;

namespace Converge.Sagas;

/// <summary>
/// Tells a saga at once that its command was dead-lettered: a <see cref="SagaStepFailed"/> reply with the dead-letter
/// reason goes to the command's reply-to queue in the dead-lettering transaction, so the saga does not wait for the
/// step's timeout (or forever, when the step has none).
/// </summary>
internal static class SagaDeadLetterReply
{
    /// <summary>Sends the failure reply when <paramref name="envelope"/> is a saga command (it names a reply-to queue and its saga).</summary>
    public static async ValueTask SendAsync(IStoreTransaction transaction, Envelope envelope, string reason, Exception? exception, ConvergeOptions options, CancellationToken cancellationToken)
    {
        if (!envelope.Headers.TryGetValue(SagaHeaders.ReplyTo, out var replyTo) || string.IsNullOrWhiteSpace(replyTo) || envelope.CorrelationId is null)
        {
            return;
        }

        var now = options.TimeProvider.GetUtcNow();
        var error = exception is null ? reason : $"{reason}: {exception.GetType().Name}: {exception.Message}";
        var reply = new SagaStepFailed($"dead-lettered ({error})");
        var headers = new Dictionary<string, string>(1, StringComparer.Ordinal)
        {
            [SagaHeaders.Step] = envelope.Headers.TryGetValue(SagaHeaders.Step, out var step) ? step : string.Empty,
        };
        var failure = new Envelope
        {
            MessageId = MessageIds.New(now),
            MessageType = options.Messages.GetName(typeof(SagaStepFailed)),
            CorrelationId = envelope.CorrelationId,
            CausationId = envelope.MessageId,
            SentAt = now,
            Headers = headers,
            Body = options.Serializer.Serialize(reply, typeof(SagaStepFailed)),
        };
        await transaction.EnqueueAsync(new OutgoingMessage(replyTo, failure, null, 0), cancellationToken);
    }
}
