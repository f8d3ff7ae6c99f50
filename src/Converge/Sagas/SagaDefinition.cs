namespace Converge.Sagas;

/// <summary>How a step behaves when the saga fails (see the compensating-transaction pattern).</summary>
public enum SagaStepKind
{
    /// <summary>
    /// Before the pivot: undone by its compensating command when a later step (up to the pivot) fails. A step without
    /// a compensation (a read-only check) is passed over when compensating.
    /// </summary>
    Compensatable,

    /// <summary>The point of no return: when it succeeds the saga can only go forward.</summary>
    Pivot,

    /// <summary>After the pivot: retried until it succeeds, never compensated.</summary>
    Retriable,
}

/// <summary>
/// An orchestrated saga, written top to bottom as the business process: derive from this class, give it a
/// <see cref="Name"/> and <see cref="Version"/>, and declare its steps in <see cref="Define"/>. Register it with
/// <c>options.AddSaga&lt;TSaga&gt;()</c>; start instances with <see cref="ISagaClient"/>.
/// </summary>
/// <typeparam name="TData">The saga's typed data, persisted with the instance (System.Text.Json by default).</typeparam>
/// <remarks>
/// Versioning: running instances finish on the version they started with, and new ones start on the newest
/// registered version, so keep an old version registered until its instances have ended. A definition must be
/// deterministic: the same data and replies must lead to the same commands.
/// </remarks>
public abstract class SagaDefinition<TData> : ISagaDefinition where TData : class
{
    /// <summary>The definition's name, shared by all its versions (letters, digits, '.', '-', '_' and ':').</summary>
    public abstract string Name { get; }

    /// <summary>The definition's version. Default 1.</summary>
    public virtual int Version => 1;

    /// <summary>Declares the steps in order, and what happens when the saga ends.</summary>
    protected abstract void Define(SagaBuilder<TData> saga);

    SagaModel ISagaDefinition.Build()
    {
        var builder = new SagaBuilder<TData>();
        Define(builder);
        return builder.Build(Name, Version);
    }
}

/// <summary>Implemented by <see cref="SagaDefinition{TData}"/>; not meant to be implemented directly.</summary>
public interface ISagaDefinition
{
    /// <summary>The definition's name.</summary>
    string Name { get; }

    /// <summary>The definition's version.</summary>
    int Version { get; }

    internal SagaModel Build();
}

/// <summary>Declares a saga's steps. Steps run in the order declared: compensatable steps, at most one pivot, then retriable steps.</summary>
public sealed class SagaBuilder<TData> where TData : class
{
    readonly List<StepBuilder<TData>> _steps = [];
    Func<SagaContext<TData>, CancellationToken, Task>? _completed;
    Func<SagaContext<TData>, CancellationToken, Task>? _compensated;
    SagaRetryOverrides? _retry;

    internal SagaBuilder() { }

    /// <summary>
    /// How this saga re-sends failed or timed-out steps and compensations and when it gives up (becomes stuck);
    /// unset values use <c>ConvergeOptions.SagaRetry</c> (defaults 10 attempts, 1 second doubling up to 5 minutes).
    /// A step's own <see cref="StepBuilder{TData}.Retry"/> wins over this.
    /// </summary>
    public SagaBuilder<TData> Retry(int? maxAttempts = null, TimeSpan? initialDelay = null, TimeSpan? maxDelay = null)
    {
        _retry = new SagaRetryOverrides(maxAttempts, initialDelay, maxDelay);
        return this;
    }

    /// <summary>Adds a step that a later failure (up to the pivot) undoes with its compensating command.</summary>
    public StepBuilder<TData> Compensatable(string name) => Add(name, SagaStepKind.Compensatable);

    /// <summary>Adds the pivot: once it succeeds the saga only goes forward.</summary>
    public StepBuilder<TData> Pivot(string name) => Add(name, SagaStepKind.Pivot);

    /// <summary>Adds a step after the pivot, retried until it succeeds.</summary>
    public StepBuilder<TData> Retriable(string name) => Add(name, SagaStepKind.Retriable);

    /// <summary>Runs when every step has succeeded, in the transaction that records it (its writes and messages commit with it).</summary>
    public SagaBuilder<TData> WhenCompleted(Func<SagaContext<TData>, CancellationToken, Task> hook)
    {
        _completed = hook ?? throw new ArgumentNullException(nameof(hook));
        return this;
    }

    /// <summary>Runs when every completed step has been compensated, in the transaction that records it.</summary>
    public SagaBuilder<TData> WhenCompensated(Func<SagaContext<TData>, CancellationToken, Task> hook)
    {
        _compensated = hook ?? throw new ArgumentNullException(nameof(hook));
        return this;
    }

    StepBuilder<TData> Add(string name, SagaStepKind kind)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var step = new StepBuilder<TData>(name, kind);
        _steps.Add(step);
        return step;
    }

    internal SagaModel Build(string name, int version)
    {
        Runtime.ConvergeOptions.ValidateName(name, "saga");
        if (version < 1)
        {
            throw new ArgumentException($"Saga '{name}' has version {version}; versions start at 1.");
        }

        if (_steps.Count == 0)
        {
            throw new ArgumentException($"Saga '{name}' version {version} declares no steps. Declare them in Define, in order: saga.Compensatable(\"name\"), saga.Pivot(\"name\") or saga.Retriable(\"name\").");
        }

        foreach (var duplicate in _steps.GroupBy(s => s.Name, StringComparer.Ordinal).Where(g => g.Count() > 1))
        {
            throw new ArgumentException($"Saga '{name}' version {version} declares step '{duplicate.Key}' {duplicate.Count()} times; step names must be unique.");
        }

        var seenPivot = false;
        var seenRetriable = false;
        foreach (var step in _steps)
        {
            var outOfOrder = step.Kind switch
            {
                SagaStepKind.Compensatable => seenPivot || seenRetriable,
                SagaStepKind.Pivot => seenPivot || seenRetriable,
                _ => false,
            };
            if (outOfOrder)
            {
                throw new ArgumentException($"Saga '{name}' version {version}: step '{step.Name}' ({step.Kind}) is out of order. Declare compensatable steps first, then at most one pivot, then retriable steps.");
            }

            seenPivot |= step.Kind == SagaStepKind.Pivot;
            seenRetriable |= step.Kind == SagaStepKind.Retriable;
        }

        if (_retry is { } retry && SagaRetryOptions.Validate($"Saga '{name}' version {version}", retry.MaxAttempts, retry.InitialDelay, retry.MaxDelay).FirstOrDefault() is { } invalid)
        {
            throw new ArgumentException(invalid);
        }

        var steps = _steps.Select(s => s.Build(name)).ToList();
        return new SagaModel(name, version, typeof(TData), steps, _retry,
            _completed is null ? null : (context, token) => _completed((SagaContext<TData>)context, token),
            _compensated is null ? null : (context, token) => _compensated((SagaContext<TData>)context, token),
            static (core, data) => new SagaContext<TData>(core, (TData)data));
    }
}

/// <summary>Declares one step: the command it sends, the replies that end it, its compensation and timeout.</summary>
public sealed class StepBuilder<TData> where TData : class
{
    readonly Dictionary<Type, ReplyRule> _replies = [];
    readonly HashSet<Type> _compensationReplies = [];
    Func<object, object>? _command;
    string? _queue;
    Func<object, object>? _compensation;
    string? _compensationQueue;
    TimeSpan? _timeout;
    TimeSpan? _compensationTimeout;
    TimeSpan? _retryDelay;
    SagaRetryOverrides? _retry;

    internal StepBuilder(string name, SagaStepKind kind)
    {
        Name = name;
        Kind = kind;
    }

    internal string Name { get; }

    internal SagaStepKind Kind { get; }

    /// <summary>The command the step sends to its participant; <paramref name="queue"/> defaults to the command type's route.</summary>
    public StepBuilder<TData> Send<TCommand>(Func<TData, TCommand> command, string? queue = null) where TCommand : notnull
    {
        ArgumentNullException.ThrowIfNull(command);
        _command = data => command((TData)data);
        _queue = queue;
        return this;
    }

    /// <summary>A reply that completes the step; <paramref name="apply"/> records what it says in the saga data.</summary>
    public StepBuilder<TData> OnReply<TReply>(Action<TData, TReply>? apply = null)
    {
        _replies[typeof(TReply)] = new ReplyRule(false, apply is null ? null : (data, reply) => apply((TData)data, (TReply)reply), null);
        return this;
    }

    /// <summary>A reply that fails the step; <paramref name="reason"/> says why, for the saga log.</summary>
    public StepBuilder<TData> FailOn<TReply>(Func<TReply, string>? reason = null)
    {
        _replies[typeof(TReply)] = new ReplyRule(true, null, reason is null ? null : reply => reason((TReply)reply));
        return this;
    }

    /// <summary>
    /// The command that undoes this step, sent when a later step up to the pivot fails, or when this step timed out
    /// (its command may still take effect). The participant must make it idempotent and must remember it, so that
    /// the step's own command arriving later does nothing. <paramref name="queue"/> defaults to the command type's route.
    /// Optional: a compensatable step that changes nothing (a read-only check) has no compensation and is passed over.
    /// </summary>
    public StepBuilder<TData> CompensateWith<TCommand>(Func<TData, TCommand> command, string? queue = null) where TCommand : notnull
    {
        ArgumentNullException.ThrowIfNull(command);
        _compensation = data => command((TData)data);
        _compensationQueue = queue;
        return this;
    }

    /// <summary>A reply that confirms the compensation.</summary>
    public StepBuilder<TData> OnCompensated<TReply>()
    {
        _compensationReplies.Add(typeof(TReply));
        return this;
    }

    /// <summary>
    /// How long to wait for the reply (a scheduled message); default none. A timed-out compensatable step fails and is
    /// compensated itself too; a timed-out pivot, retriable step or compensation is sent again after the retry backoff
    /// (see <see cref="Retry"/>), because its outcome must be known. Also the compensation's timeout unless
    /// <see cref="CompensationTimeout"/> sets its own. The reply deletes the scheduled timeout.
    /// </summary>
    public StepBuilder<TData> Timeout(TimeSpan timeout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
        _timeout = timeout;
        return this;
    }

    /// <summary>How long to wait for the compensation's reply; default the step's <see cref="Timeout"/>. Needs a compensation.</summary>
    public StepBuilder<TData> CompensationTimeout(TimeSpan timeout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
        _compensationTimeout = timeout;
        return this;
    }

    /// <summary>
    /// A fixed pause before a failed or timed-out step or compensation is sent again, instead of the exponential
    /// backoff of <see cref="Retry"/>; the attempt limit still applies.
    /// </summary>
    public StepBuilder<TData> RetryDelay(TimeSpan delay)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);
        _retryDelay = delay;
        return this;
    }

    /// <summary>
    /// How this step (and its compensation) is re-sent and when the saga gives up on it and becomes stuck; unset
    /// values use the saga's <see cref="SagaBuilder{TData}.Retry"/>, then <c>ConvergeOptions.SagaRetry</c>.
    /// </summary>
    public StepBuilder<TData> Retry(int? maxAttempts = null, TimeSpan? initialDelay = null, TimeSpan? maxDelay = null)
    {
        _retry = new SagaRetryOverrides(maxAttempts, initialDelay, maxDelay);
        return this;
    }

    internal SagaStepModel Build(string saga)
    {
        if (_command is null)
        {
            throw new ArgumentException($"Saga '{saga}': step '{Name}' sends nothing. Call .Send(data => new Command(...)).");
        }

        if (!_replies.Values.Any(r => !r.IsFailure))
        {
            throw new ArgumentException($"Saga '{saga}': step '{Name}' has no success reply. Call .OnReply<TReply>().");
        }

        if (_compensationTimeout is not null && _compensation is null)
        {
            throw new ArgumentException($"Saga '{saga}': step '{Name}' sets a compensation timeout but has no compensation. Call .CompensateWith(data => new Undo(...)) or remove .CompensationTimeout.");
        }

        if (_retry is { } retry && SagaRetryOptions.Validate($"Saga '{saga}' step '{Name}'", retry.MaxAttempts, retry.InitialDelay, retry.MaxDelay).FirstOrDefault() is { } invalid)
        {
            throw new ArgumentException(invalid);
        }

        if (_compensation is not null && Kind != SagaStepKind.Compensatable)
        {
            throw new ArgumentException($"Saga '{saga}': step '{Name}' is a {Kind} step and is never compensated; remove .CompensateWith or make it compensatable.");
        }

        if (_compensation is not null && _compensationReplies.Count == 0)
        {
            throw new ArgumentException($"Saga '{saga}': step '{Name}' compensates but accepts no confirmation. Call .OnCompensated<TReply>().");
        }

        return new SagaStepModel(Name, Kind, _command, _queue, _replies, _compensation, _compensationQueue, _compensationReplies, _timeout, _compensationTimeout, _retryDelay, _retry);
    }
}

internal sealed record ReplyRule(bool IsFailure, Action<object, object>? Apply, Func<object, string>? Reason);

internal sealed record SagaStepModel(
    string Name,
    SagaStepKind Kind,
    Func<object, object> Command,
    string? Queue,
    IReadOnlyDictionary<Type, ReplyRule> Replies,
    Func<object, object>? Compensation,
    string? CompensationQueue,
    IReadOnlySet<Type> CompensationReplies,
    TimeSpan? Timeout,
    TimeSpan? CompensationTimeout,
    TimeSpan? RetryDelay,
    SagaRetryOverrides? Retry);

internal sealed record SagaModel(
    string Name,
    int Version,
    Type DataType,
    IReadOnlyList<SagaStepModel> Steps,
    SagaRetryOverrides? Retry,
    Func<SagaContext, CancellationToken, Task>? Completed,
    Func<SagaContext, CancellationToken, Task>? Compensated,
    Func<SagaContextCore, object, SagaContext> CreateContext)
{
    public IEnumerable<Type> ReplyTypes => Steps.SelectMany(s => s.Replies.Keys.Concat(s.CompensationReplies)).Distinct();
}
