using System.Data.Common;
using System.Diagnostics;
using Converge.Contracts;
using Converge.Diagnostics;
using Converge.Storage;

namespace Converge.Runtime;

internal sealed class MessageBus : IMessageBus
{
    readonly ConvergeOptions _options;
    readonly IMessageStore _store;
    readonly ObserverSet _observers;

    public MessageBus(ConvergeOptions options, IMessageStore store, ObserverSet observers, Faults.FaultInjector faults)
    {
        _options = options;
        _store = store;
        _observers = observers;
        Faults = faults;
    }

    internal DateTimeOffset Now => _options.TimeProvider.GetUtcNow();

    /// <summary>The process's fault plan, which saga steps and replies consult.</summary>
    internal Faults.FaultInjector Faults { get; }

    public ValueTask<IStoreTransaction> BeginTransactionAsync(CancellationToken cancellationToken = default) => _store.BeginAsync(cancellationToken);

    public async ValueTask<Guid> SendAsync<T>(T message, SendOptions? options = null, CancellationToken cancellationToken = default) where T : notnull
    {
        await using var transaction = await _store.BeginAsync(cancellationToken);
        var id = await SendCoreAsync(transaction, message, options, null, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return id;
    }

    public ValueTask<Guid> SendAsync<T>(T message, DbTransaction transaction, SendOptions? options = null, CancellationToken cancellationToken = default) where T : notnull =>
        SendCoreAsync(_store.Database().Enlist(transaction), message, options, null, cancellationToken);

    public async ValueTask<LogEvent> PublishAsync<T>(string stream, T @event, PublishOptions? options = null, CancellationToken cancellationToken = default) where T : notnull
    {
        await using var transaction = await _store.BeginAsync(cancellationToken);
        var stored = await PublishCoreAsync(transaction, stream, @event, options, null, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return stored;
    }

    public ValueTask<LogEvent> PublishAsync<T>(string stream, T @event, DbTransaction transaction, PublishOptions? options = null, CancellationToken cancellationToken = default) where T : notnull =>
        PublishCoreAsync(_store.Database().Enlist(transaction), stream, @event, options, null, cancellationToken);

    internal async ValueTask<Guid> SendCoreAsync<T>(IStoreTransaction transaction, T message, SendOptions? options, Envelope? cause, CancellationToken cancellationToken) where T : notnull
    {
        ArgumentNullException.ThrowIfNull(message);
        var type = message.GetType();
        var queue = options?.Queue ?? QueueOf(type);
        var now = _options.TimeProvider.GetUtcNow();
        using var activity = ConvergeDiagnostics.Start($"send {queue}", ActivityKind.Producer, "send", "send", queue);
        var envelope = CreateEnvelope(message, type, options?.MessageId, options?.CorrelationId, options?.AsOf, options?.Headers, cause, now);
        Describe(activity, envelope);

        var dueAt = options?.DueAt ?? (options?.Delay is { } delay ? now + delay : null);
        await transaction.EnqueueAsync(new OutgoingMessage(queue, envelope, dueAt, options?.Priority ?? 0) { OrderingKey = options?.OrderingKey }, cancellationToken);
        if (_observers.Any || ConvergeDiagnostics.MessagesSent.Enabled)
        {
            transaction.OnCommitted(() =>
            {
                ConvergeDiagnostics.MessagesSent.Add(1);
                _observers.Sent(envelope, queue);
            });
        }

        return envelope.MessageId;
    }

    /// <summary>
    /// The queue a message of <paramref name="type"/> goes to when a send names none. A type with no registered name
    /// cannot be sent anywhere, so that is checked first: its fix (register the name) is the one the sender needs.
    /// </summary>
    internal string QueueOf(Type type)
    {
        if (!_options.Messages.IsRegistered(type))
        {
            throw MessageTypeRegistry.Unregistered(type);
        }

        return _options.Routes.TryGetValue(type, out var routed)
            ? routed
            : throw new InvalidOperationException($"{type.Name} has no queue. Call o.Route<{type.Name}>(\"queue\") or o.Handle<{type.Name}, THandler>(\"queue\") in AddConverge, or pass the queue in the send or job options.");
    }

    /// <summary>Builds the queue entry <see cref="SendCoreAsync"/> would write, without writing it (batch callbacks are stored this way).</summary>
    internal OutgoingMessage CreateOutgoing<T>(T message, SendOptions? options, Envelope? cause) where T : notnull
    {
        ArgumentNullException.ThrowIfNull(message);
        var type = message.GetType();
        var queue = options?.Queue ?? QueueOf(type);
        var now = _options.TimeProvider.GetUtcNow();
        var envelope = CreateEnvelope(message, type, options?.MessageId, options?.CorrelationId, options?.AsOf, options?.Headers, cause, now);
        return new OutgoingMessage(queue, envelope, options?.DueAt ?? (options?.Delay is { } delay ? now + delay : null), options?.Priority ?? 0) { OrderingKey = options?.OrderingKey };
    }

    internal async ValueTask<LogEvent> PublishCoreAsync<T>(IStoreTransaction transaction, string stream, T @event, PublishOptions? options, Envelope? cause, CancellationToken cancellationToken) where T : notnull
    {
        ArgumentNullException.ThrowIfNull(@event);
        ArgumentException.ThrowIfNullOrWhiteSpace(stream);
        var now = _options.TimeProvider.GetUtcNow();
        using var activity = ConvergeDiagnostics.Start($"publish {stream}", ActivityKind.Producer, "send", "publish", stream);
        var envelope = CreateEnvelope(@event, @event.GetType(), options?.MessageId, options?.CorrelationId, options?.AsOf, options?.Headers, cause, now);
        Describe(activity, envelope);
        var stored = await transaction.AppendAsync(stream, options?.ExpectedVersion, [envelope], cancellationToken);
        transaction.OnCommitted(() =>
        {
            ConvergeDiagnostics.EventsAppended.Add(stored.Count);
            _observers.Appended(stored);
        });
        return stored[0];
    }

    static void Describe(Activity? activity, Envelope envelope)
    {
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(ConvergeDiagnostics.Tags.MessageId, envelope.MessageId.ToString());
            activity.SetTag(ConvergeDiagnostics.Tags.ConversationId, envelope.CorrelationId);
            activity.SetTag(ConvergeDiagnostics.Tags.MessageType, envelope.MessageType);
        }
    }

    Envelope CreateEnvelope(object body, Type type, Guid? messageId, string? correlationId, DateTimeOffset? asOf, IDictionary<string, string>? extraHeaders, Envelope? cause, DateTimeOffset now)
    {
        var typeName = _options.Messages.GetName(type);
        var bytes = _options.Serializer.Serialize(body, type);
        if (bytes.Length > _options.MaxMessageSize)
        {
            throw new MessageTooLargeException(typeName, bytes.Length, _options.MaxMessageSize);
        }

        return new Envelope
        {
            MessageId = messageId ?? MessageIds.New(now),
            MessageType = typeName,
            CorrelationId = correlationId ?? cause?.CorrelationId,
            CausationId = cause?.MessageId,
            SentAt = now,
            AsOf = asOf,
            Headers = BuildHeaders(extraHeaders),
            Body = bytes,
        };
    }

    static IReadOnlyDictionary<string, string> BuildHeaders(IDictionary<string, string>? extra)
    {
        var current = Activity.Current;
        if (current is null && (extra is null || extra.Count == 0))
        {
            return Envelope.EmptyHeaders;
        }

        var headers = extra is null ? new Dictionary<string, string>(StringComparer.Ordinal) : new Dictionary<string, string>(extra, StringComparer.Ordinal);
        if (current?.Id is { } traceParent && current.IdFormat == ActivityIdFormat.W3C)
        {
            headers[ConvergeDiagnostics.TraceParentHeader] = traceParent;
            if (current.TraceStateString is { Length: > 0 } traceState)
            {
                headers[ConvergeDiagnostics.TraceStateHeader] = traceState;
            }
        }

        return headers;
    }
}

/// <summary>Fans notifications out to every registered observer, shielding the dispatcher from their failures.</summary>
internal sealed class ObserverSet
{
    readonly IMessageObserver[] _observers;
    readonly Microsoft.Extensions.Logging.ILogger _logger;

    public ObserverSet(IEnumerable<IMessageObserver> observers, Microsoft.Extensions.Logging.ILogger<ObserverSet> logger)
    {
        _observers = [.. observers];
        _logger = logger;
    }

    public bool Any => _observers.Length != 0;

    public void Sent(Envelope envelope, string queue)
    {
        foreach (var observer in _observers)
        {
            try { observer.OnSent(envelope, queue); }
            catch (Exception exception) { Log.ObserverFailed(_logger, exception); }
        }
    }

    public void Appended(IReadOnlyList<LogEvent> events)
    {
        foreach (var observer in _observers)
        {
            try { observer.OnAppended(events); }
            catch (Exception exception) { Log.ObserverFailed(_logger, exception); }
        }
    }

    public void Handled(Envelope envelope, string queue, HandlingOutcome outcome)
    {
        foreach (var observer in _observers)
        {
            try { observer.OnHandled(envelope, queue, outcome); }
            catch (Exception exception) { Log.ObserverFailed(_logger, exception); }
        }
    }

    public void EventHandled(LogEvent logEvent, string group, HandlingOutcome outcome)
    {
        foreach (var observer in _observers)
        {
            try { observer.OnEventHandled(logEvent, group, outcome); }
            catch (Exception exception) { Log.ObserverFailed(_logger, exception); }
        }
    }

    public void GroupPaused(string group, long position)
    {
        foreach (var observer in _observers)
        {
            try { observer.OnGroupPaused(group, position); }
            catch (Exception exception) { Log.ObserverFailed(_logger, exception); }
        }
    }
}
