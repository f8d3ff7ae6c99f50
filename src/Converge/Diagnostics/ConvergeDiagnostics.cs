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
    internal static readonly Counter<long> MessagesHandled = Meter.CreateCounter<long>("converge.messages.handled", "{message}", "Messages whose handling committed, by outcome.");
    internal static readonly Counter<long> EventsAppended = Meter.CreateCounter<long>("converge.events.appended", "{event}", "Events committed to the log.");
    internal static readonly Counter<long> EventsHandled = Meter.CreateCounter<long>("converge.events.handled", "{event}", "Events a consumer group finished with, by outcome.");
    internal static readonly Counter<long> SagasStuck = Meter.CreateCounter<long>("converge.sagas.stuck", "{instance}", "Saga instances that gave up re-sending a step or compensation and wait for an operator to resume them, by saga.");
    internal static readonly UpDownCounter<long> AbandonedHandlers = Meter.CreateUpDownCounter<long>("converge.handlers.abandoned", "{call}", "Handler calls abandoned after ignoring cancellation that have not returned yet, by queue; each keeps its worker's slot.");
    internal static readonly Counter<long> ConsumerErrors = Meter.CreateCounter<long>("converge.consumer.errors", "{error}", "Failures of a consumer loop outside any handler (store unavailable, commit failed).");
    /// <summary>The "outcome" tag of each <see cref="Runtime.HandlingOutcome"/>, boxed once.</summary>
    internal static readonly KeyValuePair<string, object?>[] OutcomeTags =
        [.. Enum.GetValues<Runtime.HandlingOutcome>().Select(o => new KeyValuePair<string, object?>("outcome", o.ToString().ToLowerInvariant()))];

    internal static readonly Histogram<double> BatchDuration = Meter.CreateHistogram<double>("converge.batch.duration", "ms", "Time to handle and commit one batch.");
}
