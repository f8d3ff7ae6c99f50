namespace Converge.Sagas;

/// <summary>The lifecycle of a saga instance. Stored as its lower-case name; tools and queries depend on it.</summary>
public enum SagaState
{
    /// <summary>Going forward: the current step's command is out and its reply awaited.</summary>
    Running,

    /// <summary>A step before the pivot failed; completed steps are being undone in reverse order.</summary>
    Compensating,

    /// <summary>Every step succeeded.</summary>
    Completed,

    /// <summary>Every completed step was compensated (possibly none, when the first step failed).</summary>
    Compensated,

    /// <summary>
    /// Gave up re-sending a step's command or compensation after its attempts (<see cref="SagaRetryOptions.MaxAttempts"/>):
    /// nothing more is sent until an operator resumes the instance (<see cref="ISagaClient.ResumeAsync"/>,
    /// <c>converge sagas resume</c>). <see cref="SagaInstance.StuckReason"/> and <see cref="SagaInstance.LastError"/>
    /// say why. Not ended: a late success reply to the last command still moves it on. An instance with a
    /// <see cref="SagaInstance.Failure"/> was compensating and resumes compensating; one without was going forward.
    /// </summary>
    Stuck,
}

/// <summary>One stored saga instance: the business transaction it carries out and where it stands.</summary>
public sealed class SagaInstance
{
    /// <summary>The business transaction id; the instance's identity.</summary>
    public required string TransactionId { get; init; }

    /// <summary>The definition's name.</summary>
    public required string Definition { get; init; }

    /// <summary>The definition version the instance started on; it finishes on that version.</summary>
    public required int Version { get; init; }

    /// <summary>Where the instance stands.</summary>
    public required SagaState State { get; set; }

    /// <summary>
    /// The index (into <see cref="Steps"/>) of the step whose command or compensation is out; equal to the step
    /// count once the instance has ended forward, -1 once compensation is done.
    /// </summary>
    public required int StepIndex { get; set; }

    /// <summary>The id of the command whose reply the instance is waiting for; <c>null</c> once ended.</summary>
    public Guid? Awaiting { get; set; }

    /// <summary>How many times the current step's command has been sent (1 the first time).</summary>
    public int StepAttempt { get; set; }

    /// <summary>The step names of the definition version, in order.</summary>
    public required IReadOnlyList<string> Steps { get; init; }

    /// <summary>The saga data, serialized (UTF-8 JSON with the default serializer).</summary>
    public required ReadOnlyMemory<byte> Data { get; set; }

    /// <summary>Why the instance compensated: the error of the step that failed (<see cref="FailedStep"/>); <c>null</c> otherwise.</summary>
    public string? Failure { get; set; }

    /// <summary>The step whose failure made the instance compensate; <c>null</c> unless it did.</summary>
    public string? FailedStep { get; set; }

    /// <summary>
    /// The last error of the step in progress (its failure reply, "timed out", or the dead-letter reason of its
    /// command); <c>null</c> until one fails, and cleared when a step succeeds.
    /// </summary>
    public string? LastError { get; set; }

    /// <summary>Why the instance is <see cref="SagaState.Stuck"/>; <c>null</c> when it is not.</summary>
    public string? StuckReason { get; set; }

    /// <summary>
    /// The scheduled timeout message of the command in flight, if its step has a timeout: the reply deletes it from
    /// the queue (with <see cref="TimeoutAt"/> and <see cref="Queue"/>), so answered steps leave no pending timeouts.
    /// </summary>
    public Guid? TimeoutId { get; set; }

    /// <summary>When <see cref="TimeoutId"/> is due.</summary>
    public DateTimeOffset? TimeoutAt { get; set; }

    /// <summary>
    /// The queue of the saga's replies and timeouts (where <c>converge sagas resume</c> sends its request);
    /// <c>null</c> for instances stored before it was recorded, which use the default <c>sagas.NAME</c>.
    /// </summary>
    public string? Queue { get; set; }

    /// <summary>Optimistic-concurrency version: 1 when created, one more at every save.</summary>
    public long ConcurrencyVersion { get; set; }

    /// <summary>When the instance started.</summary>
    public required DateTimeOffset StartedAt { get; init; }

    /// <summary>When the instance last changed.</summary>
    public DateTimeOffset UpdatedAt { get; set; }
}

/// <summary>What happened to a saga instance. Stored as a stable string (see <see cref="SagaLogKinds"/>).</summary>
/// <param name="TransactionId">The instance.</param>
/// <param name="At">When it happened.</param>
/// <param name="Kind">One of <see cref="SagaLogKinds"/>.</param>
/// <param name="Step">The step it concerns, if any.</param>
/// <param name="MessageId">The message sent or received, if any.</param>
/// <param name="MessageType">That message's type name, if any.</param>
/// <param name="Detail">Free text: an error, a state change, why a reply was ignored.</param>
public sealed record SagaLogEntry(string TransactionId, DateTimeOffset At, string Kind, string? Step, Guid? MessageId, string? MessageType, string? Detail)
{
    /// <summary>The entry's position in the store's saga log (0 before it is stored).</summary>
    public long Id { get; init; }

    /// <summary>
    /// The command this entry answers: set on a reply that was applied and on a refused compensation, so a later
    /// copy of the same reply is recognised as a duplicate and the flow view can place the reply under its command.
    /// </summary>
    public Guid? Answers { get; init; }
}

/// <summary>The kinds of saga log entries. Stable strings: tools and queries depend on them.</summary>
public static class SagaLogKinds
{
    /// <summary>The instance was created.</summary>
    public const string Started = "started";

    /// <summary>A step's command was sent.</summary>
    public const string CommandSent = "command-sent";

    /// <summary>A reply was applied.</summary>
    public const string ReplyReceived = "reply-received";

    /// <summary>A reply changed nothing: a duplicate, a late reply or one for another step.</summary>
    public const string ReplyIgnored = "reply-ignored";

    /// <summary>A step's timeout fired while its reply was still awaited.</summary>
    public const string TimeoutFired = "timeout-fired";

    /// <summary>A step failed (failure reply, timeout or injected fault).</summary>
    public const string StepFailed = "step-failed";

    /// <summary>A compensating command was sent.</summary>
    public const string CompensationSent = "compensation-sent";

    /// <summary>A fault plan rule acted on the instance.</summary>
    public const string FaultInjected = "fault-injected";

    /// <summary>The instance's state changed.</summary>
    public const string StateChanged = "state-changed";
}

/// <summary>
/// A query over stored saga instances, newest (latest started) first, ties by transaction id descending. Unset
/// properties do not filter. Keyset-paged: pass <see cref="CursorOf"/> of the last instance of a page as
/// <see cref="After"/> for the next; each combination of filters reads an index in that order.
/// </summary>
public sealed class SagaQuery
{
    /// <summary>Only instances in this state.</summary>
    public SagaState? State { get; init; }

    /// <summary>Only instances of this definition.</summary>
    public string? Definition { get; init; }

    /// <summary>Only instances on this definition version.</summary>
    public int? Version { get; init; }

    /// <summary>At most this many, newest first. Default 100.</summary>
    public int Max { get; init; } = 100;

    /// <summary>
    /// Only instances after (older than) this position: <see cref="CursorOf"/> of the last instance of the previous
    /// page. <c>null</c> (default) starts with the newest. Opaque; instances started meanwhile do not shift the pages.
    /// </summary>
    /// <exception cref="FormatException">On query, when the text is not a cursor made by <see cref="CursorOf"/>.</exception>
    public string? After { get; init; }

    /// <summary>The cursor that continues a listing after <paramref name="instance"/>: its start time and transaction id.</summary>
    public static string CursorOf(SagaInstance instance)
    {
        ArgumentNullException.ThrowIfNull(instance);
        return Storage.PageCursor.Create(instance.StartedAt.UtcTicks, instance.TransactionId);
    }
}

/// <summary>Instances counted per definition, version and state.</summary>
/// <param name="Definition">The definition name.</param>
/// <param name="Version">The version.</param>
/// <param name="State">The state.</param>
/// <param name="Count">How many instances.</param>
public sealed record SagaCount(string Definition, int Version, SagaState State, long Count);

/// <summary>Thrown when a saga instance was changed by someone else since it was loaded.</summary>
public sealed class SagaConcurrencyException : Exception
{
    /// <summary>Creates the exception.</summary>
    public SagaConcurrencyException(string transactionId, long expected)
        : base($"Saga '{transactionId}' was changed by another handler since it was loaded at version {expected}; the message is retried against the new state.") { }

    /// <summary>Creates the exception.</summary>
    public SagaConcurrencyException() { }

    /// <summary>Creates the exception.</summary>
    public SagaConcurrencyException(string message) : base(message) { }

    /// <summary>Creates the exception.</summary>
    public SagaConcurrencyException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>The stored text of each <see cref="SagaState"/>.</summary>
public static class SagaStates
{
    /// <summary>The stored text of <paramref name="state"/>.</summary>
    public static string ToText(SagaState state) => state switch
    {
        SagaState.Running => "running",
        SagaState.Compensating => "compensating",
        SagaState.Completed => "completed",
        SagaState.Compensated => "compensated",
        SagaState.Stuck => "stuck",
        _ => throw new ArgumentOutOfRangeException(nameof(state), state, null),
    };

    /// <summary>Parses a stored or typed state name (case-insensitive).</summary>
    /// <exception cref="FormatException">Not a state name.</exception>
    public static SagaState Parse(string text) => TryParse(text, out var state)
        ? state
        : throw new FormatException($"'{text}' is not a saga state; use running, compensating, completed, compensated or stuck.");

    /// <summary>Parses a state name (case-insensitive); <c>false</c> when it is not one.</summary>
    public static bool TryParse(string? text, out SagaState state)
    {
        switch (text?.ToUpperInvariant())
        {
            case "RUNNING": state = SagaState.Running; return true;
            case "COMPENSATING": state = SagaState.Compensating; return true;
            case "COMPLETED": state = SagaState.Completed; return true;
            case "COMPENSATED": state = SagaState.Compensated; return true;
            case "STUCK": state = SagaState.Stuck; return true;
            default: state = default; return false;
        }
    }

    /// <summary>Whether an instance in <paramref name="state"/> has ended.</summary>
    public static bool IsEnded(SagaState state) => state is SagaState.Completed or SagaState.Compensated;
}
