using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Converge.Diagnostics;

/// <summary>The names under which Converge emits traces and metrics.</summary>
public static class ConvergeDiagnostics
{
    /// <summary>The name of the <see cref="ActivitySource"/> and the <see cref="Meter"/>: <c>Converge</c>.</summary>
    public const string Name = "Converge";

    /// <summary>The header that carries W3C trace context across the store.</summary>
    public const string TraceParentHeader = "traceparent";

    /// <summary>The header that carries W3C trace state.</summary>
    public const string TraceStateHeader = "tracestate";

    internal static readonly ActivitySource ActivitySource = new(Name, "1.0");
    internal static readonly Meter Meter = new(Name, "1.0");

    internal static readonly Counter<long> MessagesSent = Meter.CreateCounter<long>("converge.messages.sent", "{message}", "Messages committed to a queue.");
    internal static readonly Counter<long> MessagesHandled = Meter.CreateCounter<long>("converge.messages.handled", "{message}", "Messages and jobs whose handling committed, by queue and outcome (completed, duplicate, retryscheduled: failed and retried later, deadlettered).");
    internal static readonly Counter<long> EventsAppended = Meter.CreateCounter<long>("converge.events.appended", "{event}", "Events committed to the log.");
    internal static readonly Counter<long> EventsHandled = Meter.CreateCounter<long>("converge.events.handled", "{event}", "Events a consumer group finished with, by outcome.");
    internal static readonly Counter<long> SagasStuck = Meter.CreateCounter<long>("converge.sagas.stuck", "{instance}", "Saga instances that gave up re-sending a step or compensation and wait for an operator to resume them, by saga.");
    internal static readonly UpDownCounter<long> AbandonedHandlers = Meter.CreateUpDownCounter<long>("converge.handlers.abandoned", "{call}", "Handler calls abandoned after ignoring cancellation that have not returned yet, by queue; each keeps its worker's slot.");
    internal static readonly Counter<long> ConsumerErrors = Meter.CreateCounter<long>("converge.consumer.errors", "{error}", "Failures of a consumer loop outside any handler (store unavailable, commit failed).");
    /// <summary>The "outcome" tag of each <see cref="Runtime.HandlingOutcome"/>, boxed once.</summary>
    internal static readonly KeyValuePair<string, object?>[] OutcomeTags =
        [.. Enum.GetValues<Runtime.HandlingOutcome>().Select(o => new KeyValuePair<string, object?>("outcome", o.ToString().ToLowerInvariant()))];

    /// <summary>Counts a message's committed outcome on <c>converge.messages.handled</c>, tagged with its queue and outcome.</summary>
    internal static void CountHandled(string queue, Runtime.HandlingOutcome outcome)
    {
        if (MessagesHandled.Enabled)
        {
            MessagesHandled.Add(1, new KeyValuePair<string, object?>(Tags.Queue, queue), OutcomeTags[(int)outcome]);
        }
    }

    internal static readonly Histogram<double> BatchDuration = Meter.CreateHistogram<double>("converge.batch.duration", "ms", "Time to handle and commit one batch.");
    internal static readonly Histogram<double> JobDuration = Meter.CreateHistogram<double>("converge.job.duration", "s", "Time a job's handler ran, by queue, job type and outcome (succeeded, failed, cancelled).");

    /// <summary>Span attribute and value names, from OpenTelemetry's messaging conventions where one fits.</summary>
    internal static class Tags
    {
        public const string MessagingSystem = "messaging.system";
        public const string System = "converge";
        public const string Destination = "messaging.destination.name";
        public const string OperationType = "messaging.operation.type";
        public const string OperationName = "messaging.operation.name";
        public const string MessageId = "messaging.message.id";
        public const string ConversationId = "messaging.message.conversation_id";
        public const string ConsumerGroup = "messaging.consumer.group.name";
        public const string BatchCount = "messaging.batch.message_count";
        public const string DeliveryCount = "messaging.message.delivery_count";
        public const string MessageType = "converge.message.type";
        public const string CorrelationId = "converge.correlation_id";
        public const string Outcome = "converge.outcome";
        public const string Queue = "queue";
    }

    /// <summary>
    /// The consumer span of one delivery of <paramref name="envelope"/> (a handled message, a job run): a child of the
    /// span that sent it (its <c>traceparent</c> header), so a trace follows it from process to process.
    /// </summary>
    internal static Activity? StartDelivery(string name, string operation, string destination, Contracts.Envelope envelope, int attempt)
    {
        if (!ActivitySource.HasListeners())
        {
            return null;
        }

        var activity = Start(name, ActivityKind.Consumer, "process", operation, destination, ParentOf(envelope));
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(Tags.MessageId, envelope.MessageId.ToString());
            activity.SetTag(Tags.ConversationId, envelope.CorrelationId);
            activity.SetTag(Tags.MessageType, envelope.MessageType);
            activity.SetTag(Tags.DeliveryCount, attempt);
        }

        return activity;
    }

    /// <summary>Starts a span of the <c>Converge</c> source with the messaging attributes every one has.</summary>
    internal static Activity? Start(string name, ActivityKind kind, string operationType, string operationName, string destination, ActivityContext parent = default, IEnumerable<ActivityLink>? links = null)
    {
        var activity = ActivitySource.StartActivity(name, kind, parent, links: links);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(Tags.MessagingSystem, Tags.System);
            activity.SetTag(Tags.OperationType, operationType);
            activity.SetTag(Tags.OperationName, operationName);
            activity.SetTag(Tags.Destination, destination);
        }

        return activity;
    }

    /// <summary>The trace context a message carries in its <c>traceparent</c> header; default when it has none.</summary>
    internal static ActivityContext ParentOf(Contracts.Envelope envelope)
    {
        if (envelope.Headers.Count > 0 && envelope.Headers.TryGetValue(TraceParentHeader, out var traceParent))
        {
            envelope.Headers.TryGetValue(TraceStateHeader, out var traceState);
            if (ActivityContext.TryParse(traceParent, traceState, isRemote: true, out var parent))
            {
                return parent;
            }
        }

        return default;
    }

    /// <summary>Marks <paramref name="activity"/> failed with <paramref name="exception"/>, as OpenTelemetry records errors.</summary>
    internal static void Failed(Activity? activity, Exception exception)
    {
        if (activity is null)
        {
            return;
        }

        activity.SetStatus(ActivityStatusCode.Error, exception.Message);
        activity.SetTag("error.type", exception.GetType().FullName);
        activity.AddException(exception);
    }
}
