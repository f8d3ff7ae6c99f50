using System.Diagnostics;
using Converge.Contracts;
using Converge.Diagnostics;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Converge.Runtime;

/// <summary>
/// Reads the log in order for one consumer group. Handler writes and the advanced checkpoint commit in one
/// transaction; the checkpoint only moves if no other process moved it first, so two processes running the
/// same group never both apply an event.
/// </summary>
internal sealed class ConsumerGroupRunner
{
    readonly SubscriptionOptions _group;
    readonly ConvergeOptions _options;
    readonly IMessageStore _store;
    readonly MessageBus _bus;
    readonly ObserverSet _observers;
    readonly IServiceScopeFactory _scopes;
    readonly ILogger _logger;
    readonly Dictionary<string, HandlerRegistration[]> _handlers;

    public ConsumerGroupRunner(SubscriptionOptions group, ConvergeOptions options, IMessageStore store, MessageBus bus, ObserverSet observers, IServiceScopeFactory scopes, ILogger logger)
    {
        _group = group;
        _options = options;
        _store = store;
        _bus = bus;
        _observers = observers;
        _scopes = scopes;
        _logger = logger;
        _handlers = options.Handlers
            .Where(h => h.Group == group.Name)
            .GroupBy(h => options.Messages.GetName(h.MessageType), StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.ToArray(), StringComparer.Ordinal);
    }

    public async Task RunAsync(CancellationToken stopping, CancellationToken abort)
    {
        ConsumerGroupState? state = null;
        var loopFailures = 0;
        var paused = false;
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                state ??= await _store.GetConsumerGroupAsync(_group.Name, stopping) ?? await StartAsync(stopping);
                if (state is null)
                {
                    continue;
                }

                if (state.Paused)
                {
                    if (!paused)
                    {
                        paused = true;
                        Log.GroupPaused(_logger, _group.Name, state.Position);
                        _observers.GroupPaused(_group.Name, state.Position);
                    }

                    // Paused (converge groups pause): read the flag again after each poll interval.
                    await Task.Delay(_options.PollInterval, _options.TimeProvider, stopping);
                    state = null;
                    continue;
                }

                if (paused)
                {
                    paused = false;
                    Log.GroupResumed(_logger, _group.Name, state.Position);
                }

                var events = await _store.ReadLogAsync(state.Position, _group.BatchSize, stopping);
                if (events.Count == 0)
                {
                    // Caught up: read the checkpoint again after the wait, so that a reset (converge groups reset) takes
                    // effect within a poll even when no new event comes to make this group's next save conflict.
                    if (!await _store.Signals.Log.WaitAsync(_options.PollInterval, _options.TimeProvider, stopping))
                    {
                        state = null;
                    }

                    continue;
                }

                var (next, failure) = await ProcessAsync(state, events, abort);
                state = next;
                loopFailures = 0;
                if (failure is not null)
                {
                    await Task.Delay(failure.Value, _options.TimeProvider, stopping);
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested || abort.IsCancellationRequested)
            {
                break;
            }
            catch (Exception exception)
            {
                ConvergeDiagnostics.ConsumerErrors.Add(1);
                state = null;
                var delay = _options.Retry.DelayBefore(++loopFailures + 1, _options.Random.NextDouble());
                Log.GroupLoopFailed(_logger, exception, _group.Name, delay);
                try
                {
                    await Task.Delay(delay, _options.TimeProvider, stopping);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }
    }

    /// <summary>
    /// The state of a group that never ran: at the start it is configured with. A start at the head is stored at once,
    /// so that events appended while the first batch is read are still the group's; <c>null</c> when another process
    /// stored a checkpoint first (read it again).
    /// </summary>
    async Task<ConsumerGroupState?> StartAsync(CancellationToken cancellationToken)
    {
        var now = _options.TimeProvider.GetUtcNow();
        if (_group.StartAt.Position is { } position)
        {
            return new ConsumerGroupState(_group.Name, position, 0, null, now);
        }

        var head = await _store.GetLogHeadAsync(cancellationToken);
        await using var transaction = await _store.BeginAsync(cancellationToken);
        if (await _store.GetConsumerGroupAsync(_group.Name, cancellationToken) is not null
            || !await transaction.SaveConsumerGroupAsync(_group.Name, 0, head, 0, null, cancellationToken))
        {
            return null;
        }

        await transaction.CommitAsync(cancellationToken);
        return new ConsumerGroupState(_group.Name, head, 0, null, now);
    }

    /// <summary>
    /// The span of one batch of events, linked to the span that appended each (its <c>traceparent</c> header): a batch
    /// holds events of many traces, so it is the root of a trace of its own, as OpenTelemetry's messaging conventions
    /// have it for batches.
    /// </summary>
    Activity? StartActivity(IReadOnlyList<LogEvent> events)
    {
        if (!ConvergeDiagnostics.ActivitySource.HasListeners())
        {
            return null;
        }

        List<ActivityLink>? links = null;
        foreach (var logEvent in events)
        {
            if (ConvergeDiagnostics.ParentOf(logEvent.Envelope) is { TraceId: var traceId } context && traceId != default)
            {
                (links ??= new(events.Count)).Add(new ActivityLink(context));
            }
        }

        // A root span: a batch is not one event's child, nor a child of whatever span started the host (the change
        // stays in the caller's async flow).
        Activity.Current = null;
        var activity = ConvergeDiagnostics.Start($"process {_group.Name}", ActivityKind.Consumer, "process", "consume", "log", links: links);
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(ConvergeDiagnostics.Tags.ConsumerGroup, _group.Name);
            activity.SetTag(ConvergeDiagnostics.Tags.BatchCount, events.Count);
            activity.SetTag("converge.log.first_position", events[0].Position);
        }

        return activity;
    }

    /// <returns>The new state (<c>null</c> to re-read after a lost race) and, after a failure, how long to wait.</returns>
    async Task<(ConsumerGroupState? State, TimeSpan? RetryIn)> ProcessAsync(ConsumerGroupState state, IReadOnlyList<LogEvent> events, CancellationToken abort)
    {
        var done = new List<(LogEvent Event, HandlingOutcome Outcome)>(events.Count);
        var position = state.Position;
        var failedAttempts = state.FailedAttempts;
        string? lastError = state.LastError;
        TimeSpan? retryIn = null;
        using var activity = StartActivity(events);
        await using var transaction = await _store.BeginAsync(abort);
        foreach (var logEvent in events)
        {
            if (!_options.Messages.TryFindReadPath(logEvent.Envelope.MessageType, _handlers, static (h, name) => h.ContainsKey(name), out var path))
            {
                position = logEvent.Position;
                continue;
            }

            var handlers = _handlers[path.Target];
            await transaction.SavepointAsync(abort);
            try
            {
                var body = path.Read(logEvent.Envelope.Body, handlers[0].MessageType, _options.Serializer);
                await using var scope = _scopes.CreateAsyncScope();
                var context = new MessageContext(_bus, transaction, logEvent.Envelope, null, _group.Name, failedAttempts + 1, scope.ServiceProvider);
                foreach (var handler in handlers)
                {
                    await handler.Invoker.InvokeAsync(scope.ServiceProvider, body, context, abort);
                }

                await context.WriteRecordedAsync(abort);

                await transaction.ReleaseSavepointAsync(abort);
                position = logEvent.Position;
                failedAttempts = 0;
                lastError = null;
                done.Add((logEvent, HandlingOutcome.Completed));
            }
            catch (Exception exception) when (!abort.IsCancellationRequested)
            {
                await transaction.RollbackToSavepointAsync(abort);
                failedAttempts++;
                lastError = $"{exception.GetType().Name}: {exception.Message}";
                var permanent = !_options.Retry.IsTransient(exception);
                if ((failedAttempts >= _options.Retry.MaxAttempts || permanent) && _group.ParkPoisonEvents)
                {
                    await transaction.ParkEventAsync(_group.Name, logEvent, DeadLetterReasons.PoisonEvent, exception.ToString(), failedAttempts, abort);
                    Log.EventParked(_logger, exception, _group.Name, logEvent.Position, failedAttempts);
                    done.Add((logEvent, HandlingOutcome.DeadLettered));
                    position = logEvent.Position;
                    failedAttempts = 0;
                    lastError = null;
                    continue;
                }

                var delay = _options.Retry.DelayBefore(Math.Min(failedAttempts, _options.Retry.MaxAttempts) + 1, _options.Random.NextDouble());
                if (failedAttempts >= _options.Retry.MaxAttempts)
                {
                    Log.GroupStalled(_logger, exception, _group.Name, logEvent.Position, failedAttempts);
                }
                else
                {
                    Log.EventFailed(_logger, exception, _group.Name, logEvent.Position, failedAttempts, delay);
                }

                retryIn = delay;
                ConvergeDiagnostics.Failed(activity, exception);
                break;
            }
        }

        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag("converge.log.position", position);
            activity.SetTag("converge.events.handled", done.Count);
        }

        if (!await transaction.SaveConsumerGroupAsync(_group.Name, state.Position, position, failedAttempts, lastError, abort))
        {
            Log.CheckpointConflict(_logger, _group.Name, state.Position);
            return (null, null);
        }

        await transaction.CommitAsync(CancellationToken.None);
        _store.Signals.Checkpoints.Ring();
        foreach (var (logEvent, outcome) in done)
        {
            ConvergeDiagnostics.EventsHandled.Add(1, ConvergeDiagnostics.OutcomeTags[(int)outcome]);
            if (_observers.Any)
            {
                _observers.EventHandled(logEvent, _group.Name, outcome);
            }
        }

        return (new ConsumerGroupState(_group.Name, position, failedAttempts, lastError, _options.TimeProvider.GetUtcNow()), retryIn);
    }
}
