using System.Diagnostics;
using System.Globalization;
using Converge.Contracts;
using Converge.Diagnostics;
using Converge.Faults;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.Logging;

namespace Converge.Sagas;

/// <summary>The definitions registered in this process, by name and version.</summary>
internal sealed class SagaRegistry
{
    readonly Dictionary<string, SortedList<int, SagaModel>> _byName = new(StringComparer.Ordinal);
    readonly Dictionary<string, string> _queues = new(StringComparer.Ordinal);

    public IEnumerable<SagaModel> All => _byName.Values.SelectMany(v => v.Values);

    public bool Add(SagaModel model, string queue)
    {
        if (!_byName.TryGetValue(model.Name, out var versions))
        {
            _byName[model.Name] = versions = [];
            _queues[model.Name] = queue;
        }

        return versions.TryAdd(model.Version, model);
    }

    public string QueueOf(string saga) => _queues[saga];

    public SagaModel? Find(string saga, int version) =>
        _byName.TryGetValue(saga, out var versions) && versions.TryGetValue(version, out var model) ? model : null;

    public SagaModel Newest(string saga) =>
        _byName.TryGetValue(saga, out var versions)
            ? versions.Values[^1]
            : throw new InvalidOperationException($"No saga named '{saga}' is registered. Call options.AddSaga<TSaga>() in AddConverge.");

    public IReadOnlyList<int> Versions(string saga) => _byName.TryGetValue(saga, out var versions) ? [.. versions.Keys] : [];
}

/// <summary>
/// Runs orchestrated sagas: starts instances and advances them on replies and timeouts. Every transition loads the
/// instance, decides, sends the next commands, saves the instance under optimistic concurrency and appends to the
/// saga log, all in the transaction of the message that caused it.
/// </summary>
internal sealed class SagaEngine
{
    readonly ConvergeOptions _options;
    readonly MessageBus _bus;
    readonly ILogger _logger;

    public SagaEngine(ConvergeOptions options, MessageBus bus, ILogger<SagaEngine> logger)
    {
        _options = options;
        _bus = bus;
        _logger = logger;
    }

    SagaRegistry Registry => _options.SagaRegistry;

    public async ValueTask<bool> StartAsync(IStoreTransaction transaction, string saga, string transactionId, object data, Envelope? cause, IServiceProvider services, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(transactionId);
        ArgumentNullException.ThrowIfNull(data);
        var model = Registry.Newest(saga);
        if (!model.DataType.IsInstanceOfType(data))
        {
            throw new ArgumentException($"Saga '{saga}' version {model.Version} takes {model.DataType.Name} data, not {data.GetType().Name}.", nameof(data));
        }

        if (await transaction.Sagas().LoadSagaAsync(transactionId, cancellationToken) is not null)
        {
            return false;
        }

        var now = _options.TimeProvider.GetUtcNow();
        var instance = new SagaInstance
        {
            TransactionId = transactionId,
            Definition = model.Name,
            Version = model.Version,
            State = SagaState.Running,
            StepIndex = 0,
            Steps = [.. model.Steps.Select(s => s.Name)],
            Data = ReadOnlyMemory<byte>.Empty,
            StartedAt = now,
            UpdatedAt = now,
            Queue = Registry.QueueOf(model.Name),
        };
        using var activity = StartActivity(instance, "start");
        var transition = new Transition(this, transaction, model, instance, data, cause, services, now);
        transition.Log(SagaLogKinds.Started, null, null, null, "version " + model.Version.ToString(CultureInfo.InvariantCulture));
        await transition.SendStepAsync(cancellationToken);
        Describe(activity, instance, changed: true);
        instance.Data = Serialize(model, transition.Data);
        if (!await transaction.Sagas().InsertSagaAsync(instance, cancellationToken))
        {
            throw new SagaConcurrencyException(transactionId, 0);
        }

        await transaction.Sagas().AppendSagaLogAsync(transition.Entries, cancellationToken);
        return true;
    }

    public async Task HandleAsync(object message, MessageContext context, CancellationToken cancellationToken)
    {
        var transaction = context.Transaction;
        var envelope = context.Envelope;
        var transactionId = envelope.CorrelationId
            ?? throw new HandlerFailureException($"A {envelope.MessageType} reached saga queue '{context.Queue}' without a transaction id; replies must be sent with context.ReplyAsync.", nonRetryable: true);
        var instance = await transaction.Sagas().LoadSagaAsync(transactionId, cancellationToken)
            ?? throw new HandlerFailureException($"No saga instance has transaction id '{transactionId}' ({envelope.MessageType} on '{context.Queue}').", nonRetryable: true);
        var model = Registry.Find(instance.Definition, instance.Version)
            ?? throw new HandlerFailureException(
                $"Saga '{instance.Definition}' version {instance.Version} is not registered in this process, but instance '{transactionId}' started on it and must finish on it. " +
                $"Registered versions: {string.Join(", ", Registry.Versions(instance.Definition))}. Register the version {instance.Version} definition again (keep old versions until their instances end); the message waits in the dead letters for a retry.",
                nonRetryable: true);

        var expected = instance.ConcurrencyVersion;
        var now = _options.TimeProvider.GetUtcNow();
        using var activity = StartActivity(instance, message switch { SagaStepTimeout => "timeout", SagaResumeRequested => "resume", _ => "reply" });
        var transition = new Transition(this, transaction, model, instance, null, envelope, context.Services, now);
        var changed = message switch
        {
            SagaStepTimeout timeout => await transition.OnTimeoutAsync(timeout, cancellationToken),
            SagaResumeRequested resume => await transition.OnResumeRequestedAsync(resume.RequestedBy, cancellationToken),
            _ => await transition.OnReplyAsync(message, cancellationToken),
        };
        Describe(activity, instance, changed);
        if (changed)
        {
            if (transition.HasData)
            {
                instance.Data = Serialize(model, transition.Data);
            }

            if (!await transaction.Sagas().UpdateSagaAsync(instance, expected, cancellationToken))
            {
                throw new SagaConcurrencyException(transactionId, expected);
            }
        }

        if (transition.Entries.Count > 0)
        {
            await transaction.Sagas().AppendSagaLogAsync(transition.Entries, cancellationToken);
        }
    }

    /// <summary>
    /// Resumes a stuck instance in <paramref name="transaction"/>: sends its step (or compensation) again, counting
    /// attempts from 1. Anything else is left as it is.
    /// </summary>
    public async ValueTask<SagaResumeResult> ResumeAsync(IStoreTransaction transaction, string transactionId, string requestedBy, IServiceProvider services, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(transactionId);
        var instance = await transaction.Sagas().LoadSagaAsync(transactionId, cancellationToken);
        if (instance is null)
        {
            return SagaResumeResult.NotFound;
        }

        if (instance.State != SagaState.Stuck)
        {
            return SagaResumeResult.NotStuck;
        }

        var model = Registry.Find(instance.Definition, instance.Version)
            ?? throw new InvalidOperationException($"Saga '{instance.Definition}' version {instance.Version} is not registered in this process; register it to resume instance '{transactionId}'.");
        var expected = instance.ConcurrencyVersion;
        using var activity = StartActivity(instance, "resume");
        var transition = new Transition(this, transaction, model, instance, null, null, services, _options.TimeProvider.GetUtcNow());
        await transition.ResumeAsync(requestedBy, cancellationToken);
        Describe(activity, instance, changed: true);
        if (transition.HasData)
        {
            instance.Data = Serialize(model, transition.Data);
        }

        if (!await transaction.Sagas().UpdateSagaAsync(instance, expected, cancellationToken))
        {
            throw new SagaConcurrencyException(transactionId, expected);
        }

        await transaction.Sagas().AppendSagaLogAsync(transition.Entries, cancellationToken);
        return SagaResumeResult.Resumed;
    }

    /// <summary>
    /// The span of one transition of a saga instance (started, or advanced by a reply, a timeout or a resume), inside
    /// the span of the message that caused it.
    /// </summary>
    static Activity? StartActivity(SagaInstance instance, string trigger)
    {
        if (!ConvergeDiagnostics.ActivitySource.HasListeners())
        {
            return null;
        }

        var activity = ConvergeDiagnostics.ActivitySource.StartActivity($"saga {instance.Definition}", ActivityKind.Internal);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag("converge.saga.name", instance.Definition);
            activity.SetTag("converge.saga.version", instance.Version);
            activity.SetTag("converge.saga.transaction_id", instance.TransactionId);
            activity.SetTag("converge.saga.trigger", trigger);
            activity.SetTag("converge.saga.state_before", trigger == "start" ? null : SagaStates.ToText(instance.State));
        }

        return activity;
    }

    static void Describe(Activity? activity, SagaInstance instance, bool changed)
    {
        if (activity is not { IsAllDataRequested: true })
        {
            return;
        }

        activity.SetTag("converge.saga.state", SagaStates.ToText(instance.State));
        activity.SetTag("converge.saga.step", instance.StepIndex >= 0 && instance.StepIndex < instance.Steps.Count ? instance.Steps[instance.StepIndex] : null);
        activity.SetTag("converge.saga.changed", changed);
    }

    byte[] Serialize(SagaModel model, object data) => _options.Serializer.Serialize(data, model.DataType);

    object Deserialize(SagaModel model, SagaInstance instance) =>
        _options.Serializer.Deserialize(instance.Data.Span, model.DataType)
        ?? throw new InvalidOperationException($"Saga '{instance.TransactionId}' has empty data.");

    /// <summary>
    /// Why a reply that is not the awaited one changes nothing, read from the saga log as the message's transaction
    /// sees it: a copy handled in the same batch as the original must find the original's entry.
    /// </summary>
    static async ValueTask<string> ClassifyIgnoredAsync(IStoreTransaction transaction, SagaInstance instance, Envelope envelope, CancellationToken cancellationToken)
    {
        if (envelope.CausationId is not { } command)
        {
            return "not a reply: it names no command it answers";
        }

        var log = await transaction.Sagas().ReadSagaLogAsync(instance.TransactionId, cancellationToken);
        if (log.Any(e => e.Answers == command))
        {
            return $"duplicate: command {command:N} was already answered";
        }

        if (log.FirstOrDefault(e => e.MessageId == command && e.Kind is SagaLogKinds.CommandSent or SagaLogKinds.CompensationSent) is { } sent)
        {
            var now = SagaStates.IsEnded(instance.State) ? $"the saga has {SagaStates.ToText(instance.State)}"
                : instance.Awaiting is { } awaiting ? $"the saga now awaits {awaiting:N}"
                : $"the saga is {SagaStates.ToText(instance.State)}";
            return $"late: command {command:N} (step '{sent.Step}') is no longer awaited; {now}";
        }

        return $"unknown: this saga never sent command {command:N}";
    }

    /// <summary>One transition of one instance: what it decides, sends and logs while handling one message.</summary>
    sealed class Transition
    {
        readonly SagaEngine _engine;
        readonly IStoreTransaction _transaction;
        readonly SagaModel _model;
        readonly SagaInstance _instance;
        readonly Envelope? _cause;
        readonly IServiceProvider _services;
        readonly DateTimeOffset _now;
        object? _data;

        public Transition(SagaEngine engine, IStoreTransaction transaction, SagaModel model, SagaInstance instance, object? data, Envelope? cause, IServiceProvider services, DateTimeOffset now)
        {
            _engine = engine;
            _transaction = transaction;
            _model = model;
            _instance = instance;
            _data = data;
            _cause = cause;
            _services = services;
            _now = now;
        }

        public List<SagaLogEntry> Entries { get; } = new(4);

        public bool HasData => _data is not null;

        public object Data => _data ??= _engine.Deserialize(_model, _instance);

        SagaStepModel Current => _model.Steps[_instance.StepIndex];

        public void Log(string kind, string? step, Guid? messageId, string? messageType, string? detail, Guid? answers = null) =>
            Entries.Add(new SagaLogEntry(_instance.TransactionId, _now, kind, step, messageId, messageType, detail) { Answers = answers });

        public async ValueTask<bool> OnTimeoutAsync(SagaStepTimeout timeout, CancellationToken cancellationToken)
        {
            if (_instance.Awaiting != timeout.CommandId || _instance.State == SagaState.Stuck)
            {
                // The step was answered in time (and its timeout could not be deleted), or the instance gave up and
                // waits for an operator: the timer simply runs out.
                return false;
            }

            _instance.TimeoutId = null;
            _instance.TimeoutAt = null;
            Log(SagaLogKinds.TimeoutFired, timeout.Step, _cause?.MessageId, _cause?.MessageType, $"no reply to {timeout.CommandId:N}");
            if (_instance.State == SagaState.Compensating)
            {
                await RetryOrStickAsync("timed out", compensation: true, answered: false, cancellationToken);
            }
            else
            {
                await FailStepAsync("timed out", timedOut: true, cancellationToken);
            }

            return true;
        }

        public async ValueTask<bool> OnReplyAsync(object reply, CancellationToken cancellationToken)
        {
            var envelope = _cause!;
            var stepHeader = envelope.Headers.TryGetValue(SagaHeaders.Step, out var named) ? named : null;
            if (SagaStates.IsEnded(_instance.State) || envelope.CausationId is null || envelope.CausationId != _instance.Awaiting)
            {
                Log(SagaLogKinds.ReplyIgnored, stepHeader, envelope.MessageId, envelope.MessageType, await ClassifyIgnoredAsync(_transaction, _instance, envelope, cancellationToken));
                return false;
            }

            var step = Current;
            var answered = "to " + envelope.CausationId.Value.ToString("N");
            var known = step.Replies.TryGetValue(reply.GetType(), out var rule);

            // A refusal: the generic failure reply, or one of the step's own failure types.
            var refusal = reply is SagaStepFailed failed
                ? failed.Reason
                : known && rule!.IsFailure ? rule.Reason?.Invoke(reply) ?? envelope.MessageType : null;

            // A reply of a type the step does not take changes nothing, its pending timeout included: the right reply
            // may still come, and if it never does the timeout must still fire.
            var compensating = _instance.State == SagaState.Compensating || (_instance.State == SagaState.Stuck && _instance.Failure is not null);
            if (refusal is null && !(compensating ? step.CompensationReplies.Contains(reply.GetType()) : known))
            {
                Log(SagaLogKinds.ReplyIgnored, step.Name, envelope.MessageId, envelope.MessageType, compensating
                    ? $"unexpected: compensating step '{step.Name}' does not accept {envelope.MessageType}"
                    : $"unexpected: step '{step.Name}' does not accept {envelope.MessageType}");
                return false;
            }

            await CancelTimeoutAsync(cancellationToken);
            if (_instance.State == SagaState.Stuck)
            {
                // The last command was answered after all: go on from where the instance gave up.
                var to = compensating ? SagaState.Compensating : SagaState.Running;
                Log(SagaLogKinds.StateChanged, step.Name, envelope.MessageId, envelope.MessageType, $"stuck -> {SagaStates.ToText(to)}: the last command was answered");
                _instance.State = to;
                _instance.StuckReason = null;
            }

            if (_instance.State == SagaState.Compensating)
            {
                if (refusal is not null)
                {
                    Log(SagaLogKinds.StepFailed, step.Name, envelope.MessageId, envelope.MessageType, $"compensation refused: {refusal}; {answered}", envelope.CausationId);
                    await RetryOrStickAsync(refusal, compensation: true, answered: true, cancellationToken);
                    return true;
                }

                Log(SagaLogKinds.ReplyReceived, step.Name, envelope.MessageId, envelope.MessageType, "compensated; " + answered, envelope.CausationId);
                _instance.StepIndex--;
                _instance.StepAttempt = 0;
                _instance.LastError = null;
                await SendCompensationAsync(null, cancellationToken);
                return true;
            }

            if (refusal is not null)
            {
                Log(SagaLogKinds.ReplyReceived, step.Name, envelope.MessageId, envelope.MessageType, "failure; " + answered, envelope.CausationId);
                await FailStepAsync(refusal, timedOut: false, cancellationToken);
                return true;
            }

            rule!.Apply?.Invoke(Data, reply);
            Log(SagaLogKinds.ReplyReceived, step.Name, envelope.MessageId, envelope.MessageType, answered, envelope.CausationId);
            _instance.StepIndex++;
            _instance.StepAttempt = 0;
            _instance.LastError = null;
            if (_instance.StepIndex == _model.Steps.Count)
            {
                await FinishAsync(SagaState.Completed, cancellationToken);
            }
            else
            {
                await SendStepAsync(cancellationToken);
            }

            return true;
        }

        /// <summary>Sends the current step's command, unless a fault plan fails the step first.</summary>
        public async ValueTask SendStepAsync(CancellationToken cancellationToken, TimeSpan? delay = null)
        {
            var step = Current;
            var attempt = _instance.StepAttempt + 1;
            var faults = _engine._bus.Faults;
            if (faults.Enabled)
            {
                if (faults.Find(FaultAction.Fail, _instance.TransactionId, step.Name, attempt, _cause?.Headers) is { } fail)
                {
                    await InjectFailureAsync(step, attempt, fail.Error, delay, cancellationToken);
                    return;
                }

                if (faults.Find(FaultAction.Delay, _instance.TransactionId, step.Name, attempt, _cause?.Headers) is { } late)
                {
                    Log(SagaLogKinds.FaultInjected, step.Name, null, null, $"delay: {late.Delay}");
                    delay = (delay ?? TimeSpan.Zero) + late.Delay;
                }
            }

            await SendAsync(step, step.Command(Data), step.Queue, SagaLogKinds.CommandSent, delay, cancellationToken);
        }

        /// <summary>
        /// Stands in for a participant that refuses the step: a failure reply to a command that is never sent, handled
        /// in a transition of its own, so a step failed on every attempt is retried at its pace instead of in a loop.
        /// </summary>
        async ValueTask InjectFailureAsync(SagaStepModel step, int attempt, string error, TimeSpan? delay, CancellationToken cancellationToken)
        {
            _instance.StepAttempt = attempt;
            var standIn = MessageIds.New(_now);
            _instance.Awaiting = standIn;
            Log(SagaLogKinds.FaultInjected, step.Name, standIn, null, $"fail: {error}");
            var queue = _engine._options.SagaRegistry.QueueOf(_model.Name);
            var command = new Envelope { MessageId = standIn, MessageType = "converge.injected-fault", CorrelationId = _instance.TransactionId, SentAt = _now, Body = ReadOnlyMemory<byte>.Empty };
            await _engine._bus.SendCoreAsync(
                _transaction,
                new SagaStepFailed(error),
                new SendOptions { Queue = queue, CorrelationId = _instance.TransactionId, Delay = delay, Headers = new Dictionary<string, string> { [SagaHeaders.Step] = step.Name } },
                command,
                cancellationToken);
        }

        async ValueTask FailStepAsync(string reason, bool timedOut, CancellationToken cancellationToken)
        {
            var step = Current;
            Log(SagaLogKinds.StepFailed, step.Name, null, null, reason);
            switch (step.Kind)
            {
                case SagaStepKind.Retriable:
                    await RetryOrStickAsync(reason, compensation: false, answered: !timedOut, cancellationToken);
                    break;
                case SagaStepKind.Pivot when timedOut:
                    // Whether a pivot took effect must be known before anything is undone: ask again.
                    await RetryOrStickAsync(reason, compensation: false, answered: !timedOut, cancellationToken);
                    break;
                default:
                    // A timed-out step may still take effect, so it is compensated too; a refused one did nothing.
                    _instance.State = SagaState.Compensating;
                    _instance.Failure = reason;
                    _instance.FailedStep = step.Name;
                    _instance.LastError = null;
                    Log(SagaLogKinds.StateChanged, step.Name, null, null, "running -> compensating");
                    _instance.StepIndex = timedOut && step.Kind == SagaStepKind.Compensatable ? _instance.StepIndex : _instance.StepIndex - 1;
                    _instance.StepAttempt = 0;
                    await SendCompensationAsync(null, cancellationToken);
                    break;
            }
        }

        async ValueTask SendCompensationAsync(TimeSpan? delay, CancellationToken cancellationToken)
        {
            while (_instance.StepIndex >= 0 && _model.Steps[_instance.StepIndex].Compensation is null)
            {
                _instance.StepIndex--;
            }

            if (_instance.StepIndex < 0)
            {
                _instance.StepIndex = -1;
                await FinishAsync(SagaState.Compensated, cancellationToken);
                return;
            }

            var step = Current;
            await SendAsync(step, step.Compensation!(Data), step.CompensationQueue, SagaLogKinds.CompensationSent, delay, cancellationToken);
        }

        async ValueTask SendAsync(SagaStepModel step, object command, string? queue, string kind, TimeSpan? delay, CancellationToken cancellationToken)
        {
            var attempt = ++_instance.StepAttempt;
            var options = _engine._options;
            var id = MessageIds.New(_now);
            var headers = new Dictionary<string, string>(3, StringComparer.Ordinal)
            {
                [SagaHeaders.ReplyTo] = options.SagaRegistry.QueueOf(_model.Name),
                [SagaHeaders.Step] = step.Name,
                [SagaHeaders.Attempt] = attempt.ToString(CultureInfo.InvariantCulture),
            };
            await _engine._bus.SendCoreAsync(
                _transaction,
                command,
                new SendOptions { Queue = queue, MessageId = id, CorrelationId = _instance.TransactionId, Delay = delay, Headers = headers },
                _cause,
                cancellationToken);
            _instance.Awaiting = id;
            Log(kind, step.Name, id, options.Messages.GetName(command.GetType()), attempt == 1 ? null : "attempt " + attempt.ToString(CultureInfo.InvariantCulture));
            var timeout = kind == SagaLogKinds.CompensationSent ? step.CompensationTimeout ?? step.Timeout : step.Timeout;
            if (timeout is { } wait)
            {
                // Recorded on the instance, so the reply can delete it instead of leaving it pending on the queue.
                var timeoutId = MessageIds.New(_now);
                var dueAt = _now + (delay ?? TimeSpan.Zero) + wait;
                await _engine._bus.SendCoreAsync(
                    _transaction,
                    new SagaStepTimeout(id, step.Name),
                    new SendOptions { Queue = options.SagaRegistry.QueueOf(_model.Name), MessageId = timeoutId, CorrelationId = _instance.TransactionId, DueAt = dueAt },
                    _cause,
                    cancellationToken);
                _instance.TimeoutId = timeoutId;
                _instance.TimeoutAt = dueAt;
            }
        }

        /// <summary>Deletes the pending timeout of the command that was just answered, if the store still has it.</summary>
        async ValueTask CancelTimeoutAsync(CancellationToken cancellationToken)
        {
            if (_instance.TimeoutId is { } id && _instance.TimeoutAt is { } dueAt)
            {
                var queue = _instance.Queue ?? _engine._options.SagaRegistry.QueueOf(_model.Name);
                await _transaction.CancelScheduledAsync(queue, id, dueAt, cancellationToken);
            }

            _instance.TimeoutId = null;
            _instance.TimeoutAt = null;
        }

        /// <summary>
        /// Sends the current step's command (or its compensation) again after the retry backoff, or, once it has been
        /// sent its maximum number of times, gives up: the instance becomes stuck and waits for an operator.
        /// </summary>
        /// <param name="error">Why the last send failed.</param>
        /// <param name="compensation">Whether the compensation failed, not the step's command.</param>
        /// <param name="answered">Whether a reply said so (else it timed out and a late success may still come).</param>
        /// <param name="cancellationToken">Cancels the sends.</param>
        async ValueTask RetryOrStickAsync(string error, bool compensation, bool answered, CancellationToken cancellationToken)
        {
            var step = Current;
            _instance.LastError = error;
            var (maxAttempts, initialDelay, maxDelay) = RetryOf(step);
            if (_instance.StepAttempt >= maxAttempts)
            {
                if (answered)
                {
                    // The command was answered (refused): a copy of that reply must be recognised as a duplicate.
                    _instance.Awaiting = null;
                }

                Stick(step, compensation, error);
                return;
            }

            var delay = step.RetryDelay ?? SagaRetryOptions.DelayBefore(_instance.StepAttempt + 1, initialDelay, maxDelay, _engine._options.Random.NextDouble());
            if (compensation)
            {
                await SendCompensationAsync(delay, cancellationToken);
            }
            else
            {
                await SendStepAsync(cancellationToken, delay);
            }
        }

        (int MaxAttempts, TimeSpan InitialDelay, TimeSpan MaxDelay) RetryOf(SagaStepModel step)
        {
            var defaults = _engine._options.SagaRetry;
            return (
                step.Retry?.MaxAttempts ?? _model.Retry?.MaxAttempts ?? defaults.MaxAttempts,
                step.Retry?.InitialDelay ?? _model.Retry?.InitialDelay ?? defaults.InitialDelay,
                step.Retry?.MaxDelay ?? _model.Retry?.MaxDelay ?? defaults.MaxDelay);
        }

        void Stick(SagaStepModel step, bool compensation, string error)
        {
            var attempts = _instance.StepAttempt;
            var what = compensation ? $"the compensation of step '{step.Name}'" : $"step '{step.Name}'";
            var reason = $"{what} failed {attempts} time(s) in a row; re-sending stopped until the saga is resumed";
            var from = SagaStates.ToText(_instance.State);
            _instance.State = SagaState.Stuck;
            _instance.StuckReason = reason;
            Log(SagaLogKinds.StateChanged, step.Name, null, null, $"{from} -> stuck: {reason}; last error: {error}");
            var engine = _engine;
            var transactionId = _instance.TransactionId;
            var definition = _instance.Definition;
            _transaction.OnCommitted(() =>
            {
                ConvergeDiagnostics.SagasStuck.Add(1, new KeyValuePair<string, object?>("saga", definition));
                Diagnostics.Log.SagaStuck(engine._logger, transactionId, definition, step.Name, attempts, compensation ? "the compensation" : "the command", error);
            });
        }

        /// <summary>Resumes a stuck instance: its step (or compensation) is sent again, counting attempts from 1.</summary>
        public async ValueTask ResumeAsync(string requestedBy, CancellationToken cancellationToken)
        {
            var to = _instance.Failure is null ? SagaState.Running : SagaState.Compensating;
            Log(SagaLogKinds.StateChanged, Current.Name, _cause?.MessageId, _cause?.MessageType, $"stuck -> {SagaStates.ToText(to)}: resumed by {requestedBy}");
            _instance.State = to;
            _instance.StuckReason = null;
            _instance.StepAttempt = 0;
            if (to == SagaState.Running)
            {
                await SendStepAsync(cancellationToken);
            }
            else
            {
                await SendCompensationAsync(null, cancellationToken);
            }
        }

        /// <summary>A resume request sent by the command-line tool: resumes a stuck instance, and is logged and ignored otherwise.</summary>
        public async ValueTask<bool> OnResumeRequestedAsync(string requestedBy, CancellationToken cancellationToken)
        {
            if (_instance.State != SagaState.Stuck)
            {
                Log(SagaLogKinds.ReplyIgnored, null, _cause?.MessageId, _cause?.MessageType, $"resume requested by {requestedBy}, but the saga is {SagaStates.ToText(_instance.State)}, not stuck");
                return false;
            }

            await ResumeAsync(requestedBy, cancellationToken);
            return true;
        }

        async ValueTask FinishAsync(SagaState state, CancellationToken cancellationToken)
        {
            var from = SagaStates.ToText(_instance.State);
            _instance.State = state;
            _instance.Awaiting = null;
            _instance.LastError = null;
            Log(SagaLogKinds.StateChanged, null, null, null, $"{from} -> {SagaStates.ToText(state)}");
            var hook = state == SagaState.Completed ? _model.Completed : _model.Compensated;
            if (hook is not null)
            {
                var context = _model.CreateContext(new SagaContextCore(_transaction, _engine._bus, _instance, _cause, _services), Data);
                await hook(context, cancellationToken);
            }
        }
    }
}

internal sealed class SagaInvoker : HandlerInvoker
{
    public static readonly SagaInvoker Instance = new();

    public override Task InvokeAsync(IServiceProvider services, object message, MessageContext context, CancellationToken cancellationToken) =>
        ((SagaEngine)services.GetService(typeof(SagaEngine))!).HandleAsync(message, context, cancellationToken);
}
