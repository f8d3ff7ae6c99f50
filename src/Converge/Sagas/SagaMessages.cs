using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;

namespace Converge.Sagas;

/// <summary>Scheduled by a saga when a step with a timeout sends its command; fails the step if its reply has not come.</summary>
/// <param name="CommandId">The command whose reply is awaited.</param>
/// <param name="Step">The step.</param>
public sealed record SagaStepTimeout(Guid CommandId, string Step)
{
    /// <summary>The registered type name.</summary>
    public const string TypeName = "converge.saga-step-timeout";
}

/// <summary>
/// A reply any participant can send to fail a saga step without a failure type of its own
/// (<c>context.ReplyFailureAsync</c>).
/// </summary>
/// <param name="Reason">Why the step failed; recorded in the saga log.</param>
public sealed record SagaStepFailed(string Reason)
{
    /// <summary>The registered type name.</summary>
    public const string TypeName = "converge.saga-step-failed";
}

/// <summary>
/// Asks the saga engine to resume a <see cref="SagaState.Stuck"/> instance (the one named by the message's
/// correlation id): sent to the saga's queue by <c>converge sagas resume</c>, which has no saga definitions to do it
/// itself. An instance that is not stuck ignores it (and logs that it did).
/// </summary>
/// <param name="RequestedBy">Who asked, for the saga log.</param>
public sealed record SagaResumeRequested(string RequestedBy)
{
    /// <summary>The registered type name.</summary>
    public const string TypeName = "converge.saga-resume";

    /// <summary>
    /// Asks the application that runs <paramref name="instance"/>'s saga to resume it, from a process that does not
    /// hold the saga's definition (the CLI, the dashboard): enqueues the request on the saga's queue in
    /// <paramref name="transaction"/>, which the caller commits. The application's saga engine handles it like
    /// <see cref="ISagaClient.ResumeAsync"/>; an instance that is no longer stuck by then ignores it.
    /// </summary>
    /// <returns>The queue the request waits on and its message id.</returns>
    public static async ValueTask<(string Queue, Guid MessageId)> EnqueueAsync(IStoreTransaction transaction, SagaInstance instance, string requestedBy, DateTimeOffset now, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        ArgumentNullException.ThrowIfNull(instance);
        var queue = instance.Queue ?? "sagas." + instance.Definition;
        var request = new Envelope
        {
            MessageId = MessageIds.New(now),
            MessageType = MessageTypeName.Format(TypeName, 1),
            CorrelationId = instance.TransactionId,
            SentAt = now,
            Body = new SystemTextJsonMessageSerializer().Serialize(new SagaResumeRequested(requestedBy), typeof(SagaResumeRequested)),
        };
        await transaction.EnqueueAsync(new OutgoingMessage(queue, request), cancellationToken);
        return (queue, request.MessageId);
    }
}

/// <summary>Headers a saga puts on its commands. Stable strings: participants in other languages may read them.</summary>
public static class SagaHeaders
{
    /// <summary>The queue the participant replies to.</summary>
    public const string ReplyTo = "converge-reply-to";

    /// <summary>The saga step the command belongs to (copied onto the reply).</summary>
    public const string Step = "converge-saga-step";

    /// <summary>Which sending of the step's command this is (1 the first time).</summary>
    public const string Attempt = "converge-saga-attempt";

    /// <summary>Set on a reply a fault plan duplicated.</summary>
    public const string Fault = "converge-fault";
}
