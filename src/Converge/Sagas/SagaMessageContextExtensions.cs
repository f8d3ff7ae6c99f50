using Converge.Contracts;
using Converge.Faults;
using Converge.Runtime;

namespace Converge.Sagas;

/// <summary>
/// The saga protocol as a handler sees it: the step a command belongs to, replies to the saga that sent it, and
/// starting a saga in the handler's transaction. Participants need only this namespace, not a saga registration.
/// </summary>
public static class SagaMessageContextExtensions
{
    /// <param name="context">The handler's message context.</param>
    extension(MessageContext context)
    {
        /// <summary>The saga step this command belongs to, when a saga sent it; <c>null</c> otherwise.</summary>
        public string? SagaStep => context.Envelope.Headers.TryGetValue(SagaHeaders.Step, out var step) ? step : null;

        /// <summary>
        /// Replies to the saga that sent this command, in this handler's transaction: the reply goes to the saga's reply
        /// queue, carries the transaction id, and names this command as its cause (which is how the saga matches it).
        /// Fault plans may drop or duplicate the reply here. Returns the reply's id, or <see cref="Guid.Empty"/> when a
        /// fault plan dropped it.
        /// </summary>
        /// <exception cref="InvalidOperationException">This message was not sent by a saga (it has no reply-to header).</exception>
        public async ValueTask<Guid> ReplyAsync<T>(T reply, CancellationToken cancellationToken = default) where T : notnull
        {
            if (!context.Envelope.Headers.TryGetValue(SagaHeaders.ReplyTo, out var replyTo))
            {
                throw new InvalidOperationException($"{context.Envelope.MessageType} {context.Envelope.MessageId:N} has no {SagaHeaders.ReplyTo} header: only commands sent by a saga can be replied to. Publish an event or send a command instead.");
            }

            var step = context.SagaStep ?? string.Empty;
            var faults = context.Bus.Faults.Enabled ? context.Bus.Faults : null;
            var attempt = faults is not null && context.Envelope.Headers.TryGetValue(SagaHeaders.Attempt, out var text) && int.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out var parsed) ? parsed : 1;
            if (faults?.Find(FaultAction.DropReply, context.CorrelationId, step, attempt, context.Envelope.Headers) is not null)
            {
                await context.Transaction.Sagas().AppendSagaLogAsync([new SagaLogEntry(context.CorrelationId!, context.Bus.Now, SagaLogKinds.FaultInjected, step, context.Envelope.MessageId, context.Envelope.MessageType, "reply dropped")], cancellationToken);
                return Guid.Empty;
            }

            var headers = new Dictionary<string, string>(StringComparer.Ordinal) { [SagaHeaders.Step] = step };
            var id = await context.Bus.SendCoreAsync(context.Transaction, reply, new SendOptions { Queue = replyTo, Headers = headers }, context.Envelope, cancellationToken);
            if (faults?.Find(FaultAction.DuplicateReply, context.CorrelationId, step, attempt, context.Envelope.Headers) is not null)
            {
                headers[SagaHeaders.Fault] = "duplicate";
                var copy = await context.Bus.SendCoreAsync(context.Transaction, reply, new SendOptions { Queue = replyTo, Headers = headers }, context.Envelope, cancellationToken);
                await context.Transaction.Sagas().AppendSagaLogAsync([new SagaLogEntry(context.CorrelationId!, context.Bus.Now, SagaLogKinds.FaultInjected, step, copy, context.Envelope.MessageType, $"reply duplicated as {copy:N}")], cancellationToken);
            }

            return id;
        }

        /// <summary>Replies to the saga that sent this command that its step failed; see <see cref="ReplyAsync{T}"/>.</summary>
        public ValueTask<Guid> ReplyFailureAsync(string reason, CancellationToken cancellationToken = default) =>
            context.ReplyAsync(new SagaStepFailed(reason), cancellationToken);

        /// <summary>
        /// Starts an instance of saga <paramref name="saga"/> (its newest registered version) in this handler's
        /// transaction; <c>false</c> when an instance with <paramref name="transactionId"/> already exists.
        /// </summary>
        public ValueTask<bool> StartSagaAsync<TData>(string saga, string transactionId, TData data, CancellationToken cancellationToken = default) where TData : class =>
            (context.Services.GetService(typeof(SagaEngine)) as SagaEngine
                ?? throw new InvalidOperationException("No saga engine in this host: register Converge with AddConverge and the saga with options.AddSaga<TSaga>()."))
            .StartAsync(context.Transaction, saga, transactionId, data, context.Envelope, context.Services, cancellationToken);
    }
}
