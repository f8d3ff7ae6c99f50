using System.Collections.Concurrent;
using Converge.Contracts;
using Converge.Storage;
using Converge.Transports;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Converge.RabbitMq;

/// <summary>
/// The RabbitMQ transport (<see cref="IMessageTransport"/>): it carries the store's queues on RabbitMQ, while the store
/// keeps the outbox, the inbox, the log, sagas and jobs. The runtime routes queue operations to it through
/// <see cref="TransportedStore"/>; <c>options.UseRabbitMq(...)</c> sets it up.
/// <list type="bullet">
/// <item>Sends are written to the store's queue table inside the sender's transaction (that table is the
/// outbox); a relay publishes them to a durable quorum queue per Converge queue with publisher confirms and removes them
/// from the outbox once confirmed. Delayed messages and retries wait in the outbox until due. While the broker is
/// unreachable messages wait there and flow when it returns.</item>
/// <item>Claims return deliveries of a consumer with manual acknowledgements. A lease is kept on the store's clock:
/// when it ends without renewal the delivery is returned to the broker, which delivers it again with its attempt
/// counted. A completed message is acknowledged when the transaction that recorded its effects commits; a retry is
/// written back to the outbox (due at its backoff, with its attempts and history) and the delivery acknowledged on
/// commit; a dead letter goes to the store's dead letters. A rolled-back outcome leaves the delivery claimed,
/// as a rolled-back store write leaves the lease.</item>
/// <item>What the broker dead-letters (a delivery limit exceeded by consumers that crashed) reaches the store's
/// dead letters through a dead-letter exchange.</item>
/// <item>Job queues (and <see cref="RabbitMqTransportOptions.StoreQueues"/>) stay in the store: their limits,
/// cancellation and listings are store features.</item>
/// <item>The event log stays in the store, which assigns positions; it is mirrored to a stream
/// (<see cref="RabbitMqTransportOptions.LogStream"/>) that consumer groups read and replay.</item>
/// </list>
/// Background work starts with <see cref="StartAsync"/>, which the Converge host calls at start-up.
/// </summary>
public sealed class RabbitMqTransport : IMessageTransport, ILogMirror, ITransportConnection
{
    readonly ConcurrentDictionary<string, QueueRoute> _routes = new(StringComparer.Ordinal);
    readonly ConcurrentDictionary<long, Delivery> _claimed = new();
    IMessageStore? _store;
    readonly ConcurrentDictionary<string, byte> _storeQueues;
    readonly CancellationTokenSource _stopping = new();
    readonly Doorbell _supervisorWake = new();
    readonly List<Task> _background = [];
    readonly SemaphoreSlim _topologyLock = new(1, 1);
    readonly DeadLetterConsumer _deadLetters;
    readonly LogStream? _log;
    long _lastDeliveryId;
    int _started;
    int _topologyGeneration;
    int _disposed;

    /// <summary>
    /// A transport that connects when started. Prefer <c>options.UseRabbitMq(...)</c>, which puts it in front of the
    /// configured store and keeps the process's job queues in the store.
    /// </summary>
    /// <param name="options">The transport's options; validated here.</param>
    /// <param name="timeProvider">The clock of leases; the same one the store uses.</param>
    /// <param name="loggerFactory">For the transport's log messages; none when <c>null</c>.</param>
    public RabbitMqTransport(RabbitMqTransportOptions options, TimeProvider timeProvider, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(timeProvider);
        options.Validate();
        Options = options;
        Time = timeProvider;
        Logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Converge.RabbitMq");
        Connection = new BrokerConnection(options, Logger);
        Relay = new OutboxRelay(this);
        Connection.Lost += () =>
        {
            WakeSupervisor();
            Relay.Wake();
        };
        _deadLetters = new DeadLetterConsumer(this);
        _log = options.LogStream is null ? null : new LogStream(this, options.LogStream);
        _storeQueues = new ConcurrentDictionary<string, byte>(options.StoreQueues.Select(q => KeyValuePair.Create(q, (byte)0)), StringComparer.Ordinal);
        foreach (var queue in _storeQueues.Keys)
        {
            Route(queue);
        }

        foreach (var queue in options.Queues)
        {
            Route(queue);
        }
    }

    /// <summary>The store the transport relays from and records into; set by <see cref="StartAsync"/>.</summary>
    internal IMessageStore Store => _store ?? throw new InvalidOperationException("The RabbitMQ transport is not started: the Converge host starts it with its store.");

    /// <inheritdoc />
    public string Name => "rabbitmq";

    /// <summary>
    /// Rung when deliveries arrive for a queue, when a queue kept in the store gets work, and when events are appended
    /// or arrive on the stream.
    /// </summary>
    public CommitSignals Signals { get; } = new();

    internal RabbitMqTransportOptions Options { get; }

    /// <summary>The application's clock: leases, delayed messages, backoff, polls and idle timeouts follow it.</summary>
    internal TimeProvider Time { get; }

    /// <summary>The clock of waits for the broker's answers (<see cref="RabbitMqTransportOptions.BrokerTimeProvider"/>).</summary>
    internal TimeProvider BrokerTime => Options.BrokerTimeProvider;

    internal ILogger Logger { get; }

    internal BrokerConnection Connection { get; }

    /// <summary>Whether the connection to the broker is open now; it reconnects on its own after a loss.</summary>
    public bool IsConnected => Connection.IsOpen;

    /// <summary>The broker's address, without credentials.</summary>
    public string Broker => Connection.Display;

    internal OutboxRelay Relay { get; }

    internal ICollection<QueueRoute> Routes => _routes.Values;

    /// <summary>What this transport holds, for a diagnosis: the connection, and each queue's route and consumer.</summary>
    internal string Describe() =>
        $"connection to {Connection.Display} {(Connection.IsOpen ? "open" : "closed")}; " + string.Join(", ", _routes.Values.Select(r =>
            $"{r.Name}: {r.Mode}" + (r.Consumer is { } c ? $", {(c.IsConsuming ? "consuming" : "not consuming")}{(c.Paused ? ", paused" : "")}, {c.BufferedCount} buffered, {c.ClaimedCount} claimed" : ", no consumer")));

    /// <summary>The log's stream; <c>null</c> when the log stays in the store only.</summary>
    internal LogStream? Log => _log;

    internal CancellationToken Stopping => _stopping.Token;

    /// <summary>The broker queues this transport declared or found (for tests that clean up after themselves).</summary>
    internal IEnumerable<string> BrokerQueues =>
        _routes.Values.Where(r => r.Mode == RouteMode.Broker).Select(r => r.BrokerName)
            .Append(BrokerName(Options.DeadLetterQueue))
            .Concat(Options.LogStream is { } stream ? [BrokerName(stream), BrokerName(stream) + LogStream.LockSuffix] : []);

    internal string BrokerName(string queue) => Options.QueuePrefix + queue;

    /// <summary>The Converge queue of a broker queue; <c>null</c> when it does not carry this transport's prefix.</summary>
    internal string? ConvergeName(string brokerQueue) =>
        brokerQueue.StartsWith(Options.QueuePrefix, StringComparison.Ordinal) ? brokerQueue[Options.QueuePrefix.Length..] : null;

    internal long NextDeliveryId() => -Interlocked.Increment(ref _lastDeliveryId);

    internal void Remember(Delivery delivery) => _claimed[delivery.Message!.Id] = delivery;

    internal void Forget(Delivery delivery)
    {
        if (delivery.Message is { } message)
        {
            _claimed.TryRemove(message.Id, out _);
        }
    }

    /// <summary>The delivery of <paramref name="message"/> when this process still holds it.</summary>
    internal Delivery? Held(QueuedMessage message) =>
        _claimed.TryGetValue(message.Id, out var delivery) && delivery.IsHeldBy(message) ? delivery : null;

    internal void WakeSupervisor() => _supervisorWake.Ring();

    internal TimeSpan Backoff(int failures)
    {
        var delay = Options.ReconnectDelay * Math.Pow(2, Math.Min(failures - 1, 20));
        return delay < Options.MaxReconnectDelay ? delay : Options.MaxReconnectDelay;
    }

    /// <summary>The route of <paramref name="queue"/>, created on first sight (kept in the store when it is a store queue).</summary>
    internal QueueRoute Route(string queue)
    {
        var route = _routes.GetOrAdd(queue, name => new QueueRoute(name, BrokerName(name), _storeQueues.ContainsKey(name) ? RouteMode.Store : RouteMode.Unknown));
        if (Volatile.Read(ref _started) == 1 && route.StartPumping())
        {
            _ = Task.Run(() => PumpAsync(route, _stopping.Token), CancellationToken.None);
        }

        return route;
    }

    /// <inheritdoc />
    public bool Carries(string queue) => Route(queue).Mode != RouteMode.Store;

    /// <inheritdoc />
    public void KeepInStore(string queue)
    {
        _storeQueues.TryAdd(queue, 0);
        Route(queue).KeepInStore();
    }

    /// <inheritdoc />
    /// <remarks>The relay learns of the queue and wakes.</remarks>
    public void Sent(string queue)
    {
        Route(queue);
        Relay.Wake();
    }

    /// <summary>
    /// Forwards the store's wake-ups for one queue: to the relay when the queue goes through the broker (its
    /// outbox got messages), to the runtime's consumers when it stays in the store.
    /// </summary>
    async Task PumpAsync(QueueRoute route, CancellationToken stopping)
    {
        var bell = Store.Signals.Queue(route.Name);
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                if (!await bell.WaitAsync(TimeSpan.FromSeconds(30), Time, stopping))
                {
                    continue;
                }
            }
            catch (OperationCanceledException)
            {
                return;
            }

            if (route.Mode != RouteMode.Broker)
            {
                Signals.RingQueue(route.Name);
            }

            if (route.Mode != RouteMode.Store)
            {
                Relay.Wake();
            }
        }
    }

    async Task PumpLogAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                if (!await Store.Signals.Log.WaitAsync(TimeSpan.FromSeconds(30), Time, stopping))
                {
                    continue;
                }
            }
            catch (OperationCanceledException)
            {
                return;
            }

            Signals.Log.Ring();
            _log?.Wake();
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// Starts the transport's background work (the outbox relay, the dead-letter consumer, the log relay, reconnecting)
    /// and declares its topology. An unreachable broker does not fail start-up: messages wait in the outbox until it is
    /// reachable.
    /// </remarks>
    public async ValueTask StartAsync(IMessageStore store, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        if (Interlocked.CompareExchange(ref _store, store, null) is not null || Interlocked.Exchange(ref _started, 1) == 1)
        {
            throw new InvalidOperationException("The RabbitMQ transport was started already; each store needs a transport of its own.");
        }

        // Queues that already hold messages (a previous run's outbox) are relayed once their consumers exist.
        try
        {
            foreach (var queue in (await Store.Queries().GetStatusAsync(cancellationToken)).Queues)
            {
                Route(queue.Queue);
            }
        }
        catch (Exception exception) when (exception is not OperationCanceledException)
        {
            RabbitMqLog.RelayFailed(Logger, exception, "*", TimeSpan.Zero);
        }

        foreach (var route in _routes.Values)
        {
            if (route.StartPumping())
            {
                _background.Add(Task.Run(() => PumpAsync(route, _stopping.Token), CancellationToken.None));
            }
        }

        _background.Add(Task.Run(() => PumpLogAsync(_stopping.Token), CancellationToken.None));
        try
        {
            await EnsureTopologyAsync(cancellationToken);
        }
        catch (Exception exception) when (exception is BrokerUnreachableException or IOException or OperationInterruptedException or AlreadyClosedException)
        {
            RabbitMqLog.Unreachable(Logger, exception, Connection.Display, Options.ReconnectDelay);
        }

        _background.Add(Task.Run(() => Relay.RunAsync(_stopping.Token), CancellationToken.None));
        _background.Add(Task.Run(() => SuperviseAsync(_stopping.Token), CancellationToken.None));
        if (_log is not null)
        {
            _background.Add(Task.Run(() => _log.RunAsync(_stopping.Token), CancellationToken.None));
        }
    }

    /// <summary>Waits out <paramref name="pause"/> of a background loop; <c>false</c> when it ended because the process is stopping.</summary>
    internal static async Task<bool> PausedAsync(Task pause)
    {
        try
        {
            await pause;
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>
    /// Keeps the connection, the topology and this process's consumers alive: after the broker was lost it connects
    /// again (backing off while it stays unreachable) and starts every consumer afresh. Also ends leases that ran out
    /// while nobody claimed, so that a hung handler's message moves on.
    /// </summary>
    async Task SuperviseAsync(CancellationToken stopping)
    {
        var failures = 0;
        while (!stopping.IsCancellationRequested)
        {
            var wait = TimeSpan.FromSeconds(1);
            try
            {
                await EnsureTopologyAsync(stopping);
                foreach (var route in _routes.Values)
                {
                    if (route.Mode == RouteMode.Broker && route.Consumer is { IsConsuming: false, Paused: false } consumer)
                    {
                        await consumer.StartAsync(stopping);
                    }
                }

                if (Options.ConsumeDeadLetters)
                {
                    await _deadLetters.StartAsync(stopping);
                }

                var now = Time.GetUtcNow();
                foreach (var route in _routes.Values)
                {
                    // Not in the tick that returned leases: the broker may be delivering those right back here, and
                    // what arrives while a consumer stops goes back counted.
                    if (route.Consumer is { } consumer && consumer.ExpireLeases(now) == 0 && consumer.IsIdle(Options.IdleConsumerTimeout))
                    {
                        await PauseAsync(consumer);
                    }
                }

                failures = 0;
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                break;
            }
            catch (Exception exception)
            {
                wait = Backoff(++failures);
                RabbitMqLog.Unreachable(Logger, exception, Connection.Display, wait);
                if (!await RabbitMqTransport.PausedAsync(Task.Delay(wait, Time, stopping)))
                {
                    break;
                }

                continue;
            }

            if (!await RabbitMqTransport.PausedAsync(_supervisorWake.WaitAsync(wait, Time, stopping)))
            {
                break;
            }
        }
    }

    /// <summary>
    /// Declares what every process needs, once per connection: the dead-letter exchange and its queue, the log stream,
    /// and the queues named in the options. Declarations are idempotent; the broker keeps them (they are durable).
    /// </summary>
    internal async Task EnsureTopologyAsync(CancellationToken cancellationToken)
    {
        await Connection.GetAsync(cancellationToken);
        if (Volatile.Read(ref _topologyGeneration) == Connection.Generation)
        {
            return;
        }

        await _topologyLock.WaitAsync(cancellationToken);
        try
        {
            var generation = Connection.Generation;
            if (_topologyGeneration == generation)
            {
                return;
            }

            var channel = await Connection.CreateChannelAsync(confirms: false, cancellationToken);
            try
            {
                var deadLetters = BrokerName(Options.DeadLetterQueue);
                await channel.ExchangeDeclareAsync(deadLetters, ExchangeType.Fanout, durable: true, autoDelete: false, cancellationToken: cancellationToken);
                await DeclareAsync(channel, deadLetters, new Dictionary<string, object?> { ["x-queue-type"] = "quorum" }, cancellationToken);
                await channel.QueueBindAsync(deadLetters, deadLetters, string.Empty, cancellationToken: cancellationToken);
                if (_log is not null)
                {
                    var arguments = new Dictionary<string, object?> { ["x-queue-type"] = "stream" };
                    if (Options.LogStreamMaxAge is { } age)
                    {
                        arguments["x-max-age"] = $"{Math.Max(1, (long)age.TotalSeconds)}s";
                    }

                    await DeclareAsync(channel, _log.BrokerName, arguments, cancellationToken);
                }

                foreach (var queue in Options.Queues)
                {
                    await DeclareQueueAsync(channel, BrokerName(queue), cancellationToken);
                    Route(queue).Set(RouteMode.Broker);
                }
            }
            finally
            {
                await BrokerConnection.CloseQuietlyAsync(channel);
            }

            Volatile.Write(ref _topologyGeneration, generation);
        }
        finally
        {
            _topologyLock.Release();
        }

        Relay.Wake();
        _log?.Wake();
    }

    /// <summary>Declares a Converge queue: a durable quorum queue that dead-letters at least once after the delivery limit.</summary>
    internal Task DeclareQueueAsync(IChannel channel, string brokerQueue, CancellationToken cancellationToken) =>
        DeclareAsync(channel, brokerQueue, new Dictionary<string, object?>
        {
            ["x-queue-type"] = "quorum",
            ["x-dead-letter-exchange"] = BrokerName(Options.DeadLetterQueue),

            // At-least-once dead-lettering keeps a message on its queue until the dead-letter queue confirmed it; the
            // broker allows it only with reject-publish overflow.
            ["x-dead-letter-strategy"] = "at-least-once",
            ["x-overflow"] = "reject-publish",
            ["x-delivery-limit"] = Options.DeliveryLimit,
        }, cancellationToken);

    static async Task DeclareAsync(IChannel channel, string queue, IDictionary<string, object?> arguments, CancellationToken cancellationToken)
    {
        try
        {
            await channel.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false, arguments, cancellationToken: cancellationToken);
        }
        catch (OperationInterruptedException exception) when (exception.ShutdownReason?.ReplyCode == Constants.PreconditionFailed)
        {
            throw new InvalidOperationException(
                $"The queue '{queue}' exists on RabbitMQ with other arguments than Converge declares ({string.Join(", ", arguments.Select(a => a.Key + "=" + a.Value))}): {exception.ShutdownReason.ReplyText}. " +
                "Delete the queue (after moving its messages), or set the transport options (DeliveryLimit, DeadLetterQueue, LogStreamMaxAge) to what it was declared with.",
                exception);
        }
    }

    /// <summary>This process's consumer of <paramref name="route"/>, started (and the queue declared) on first use.</summary>
    /// <summary>
    /// This process's consumer of <paramref name="route"/>, marked in use by a starting claim, consuming: started when it
    /// was not, or was paused for idleness (a pause under way is waited for, then undone).
    /// </summary>
    async Task<BrokerQueue> ConsumerAsync(QueueRoute route, CancellationToken cancellationToken)
    {
        if (route.Consumer is { } running)
        {
            // The claim's time first, then the pause flag: a pause that has not set the flag yet checks for a claim after
            // it does, finds this one and leaves the consumer alone.
            running.ClaimStarting();
            if (running is { Paused: false, IsConsuming: true })
            {
                return running;
            }
        }

        await EnsureTopologyAsync(cancellationToken);
        BrokerQueue consumer;
        lock (route)
        {
            consumer = route.Consumer ??= new BrokerQueue(this, route.Name, route.BrokerName);
        }

        consumer.ClaimStarting();
        await consumer.Lifecycle.WaitAsync(cancellationToken);
        try
        {
            consumer.Paused = false;
            await consumer.StartAsync(cancellationToken);
        }
        finally
        {
            consumer.Lifecycle.Release();
        }

        route.Set(RouteMode.Broker);
        Relay.Wake();
        return consumer;
    }

    /// <summary>
    /// Stops consuming a queue no worker here claims from: what arrived unclaimed goes back through the outbox (its
    /// attempt not counted), so that the broker hands it to a process that works the queue. A delivery the broker
    /// pushes while the consumer is being cancelled is returned when the channel closes, its attempt counted.
    /// </summary>
    async Task PauseAsync(BrokerQueue consumer)
    {
        await consumer.Lifecycle.WaitAsync();
        try
        {
            // The flag first, then the check for a claim: a claim that began meanwhile is seen here and keeps the consumer;
            // one that begins after this sees the flag and waits for the pause to end, then starts the consumer again.
            consumer.Paused = true;
            if (!consumer.IsIdle(Options.IdleConsumerTimeout))
            {
                consumer.Paused = false;
                return;
            }

            await consumer.CancelConsumersAsync();
            await HandBackAsync(consumer.TakeBuffered());
            await consumer.StopAsync();
        }
        finally
        {
            consumer.Lifecycle.Release();
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// Claims buffered deliveries. When none are buffered it relays the queue's due outbox messages at once and waits
    /// briefly for their delivery (<see cref="RabbitMqTransportOptions.DeliveryWait"/>), or for anything else to arrive
    /// (<see cref="RabbitMqTransportOptions.ClaimWait"/>). A queue kept in the store has no deliveries.
    /// </remarks>
    public async ValueTask<IReadOnlyList<QueuedMessage>> ReceiveAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken)
    {
        var route = Route(queue);
        if (route.Mode == RouteMode.Store)
        {
            return [];
        }

        // Marked in use by ConsumerAsync, before the expired leases below are handed back.
        var consumer = await ConsumerAsync(route, cancellationToken);
        var now = Time.GetUtcNow();
        var returned = consumer.ExpireLeases(now);
        await consumer.WaitForBurstAsync(max, cancellationToken);
        var taken = consumer.Take(max, now + lease);
        if (taken.Count > 0)
        {
            return taken;
        }

        var relayed = 0;
        try
        {
            relayed = await Relay.RelayAsync(route, cancellationToken);
        }
        catch (Exception exception) when (exception is not OperationCanceledException)
        {
            // The relay's own loop retries; this claim just finds nothing new.
            RabbitMqLog.RelayFailed(Logger, exception, queue, Options.RelayPollInterval);
        }

        // Deliveries handed back by the lease supervisor, or published by the relay's own loop, just before this claim are
        // on their way too: a claim right after the clock passed a lease or a due time must find the message, not
        // return empty after ClaimWait.
        var expected = relayed + returned;
        var awaited = expected > 0 || consumer.ReturnedWithin(Options.DeliveryWait) || route.RelayedWithin(BrokerTime, Options.DeliveryWait);
        await consumer.WaitForDeliveriesAsync(Math.Clamp(expected, 1, max), awaited ? Options.DeliveryWait : Options.ClaimWait, cancellationToken);
        return consumer.Take(max, Time.GetUtcNow() + lease);
    }

    /// <inheritdoc />
    public ValueTask<int> RenewAsync(IReadOnlyList<QueuedMessage> deliveries, TimeSpan lease, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(deliveries);
        var until = Time.GetUtcNow() + lease;
        var renewed = 0;
        foreach (var message in deliveries)
        {
            if (Held(message) is { } delivery)
            {
                delivery.LeaseUntil = until;
                renewed++;
            }
        }

        return ValueTask.FromResult(renewed);
    }

    /// <inheritdoc />
    public bool Holds(QueuedMessage delivery) => Held(delivery) is not null;

    /// <inheritdoc />
    public void Acknowledge(QueuedMessage delivery)
    {
        if (Held(delivery) is { } held)
        {
            _ = held.Owner.SettleAsync(held, acknowledge: true);
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// Deliveries: counting the attempt, they are returned to the broker (which counts it); without, they are written
    /// back to the outbox with their attempt count unchanged and acknowledged, since the broker counts every return.
    /// </remarks>
    public async ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> deliveries, bool countAttempt, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(deliveries);
        var delivered = deliveries.Select(Held).OfType<Delivery>().ToList();
        if (delivered.Count == 0)
        {
            return;
        }

        if (countAttempt)
        {
            await Task.WhenAll(delivered.Select(d => d.Owner.SettleAsync(d, acknowledge: false)));
        }
        else
        {
            await HandBackAsync(delivered);
        }
    }

    /// <summary>
    /// Writes deliveries back to the outbox without counting an attempt, then acknowledges them. If the store refuses,
    /// they are returned to the broker instead (attempt counted; nothing is lost).
    /// </summary>
    async Task HandBackAsync(List<Delivery> deliveries)
    {
        var open = deliveries.Where(d => d.Channel.IsOpen && !d.IsSettled).ToList();
        if (open.Count == 0 || _store is null)
        {
            return;
        }

        try
        {
            await using var transaction = await Store.BeginAsync(CancellationToken.None);
            foreach (var delivery in open)
            {
                await transaction.EnqueueAsync(
                    new OutgoingMessage(delivery.Owner.Name, delivery.Envelope, Priority: delivery.Priority) { Attempts = delivery.Attempt - 1, History = delivery.History },
                    CancellationToken.None);
            }

            await transaction.CommitAsync(CancellationToken.None);
        }
        catch (Exception exception)
        {
            RabbitMqLog.HandBackFailed(Logger, exception, open[0].Owner.Name, open.Count);
            await Task.WhenAll(open.Select(d => d.Owner.SettleAsync(d, acknowledge: false)));
            return;
        }

        await Task.WhenAll(open.Select(d => d.Owner.SettleAsync(d, acknowledge: true)));
        Relay.Wake();
    }

    /// <summary>A delivery that is not a Converge envelope: recorded as a dead letter with the reason, then acknowledged.</summary>
    internal async Task DeadLetterInvalidAsync(BrokerQueue queue, IChannel channel, ulong tag, IReadOnlyBasicProperties properties, byte[] body, string error)
    {
        var envelope = AmqpEnvelope.BestEffort(properties, body, Time.GetUtcNow());
        try
        {
            await using var transaction = await Store.BeginAsync(CancellationToken.None);
            await transaction.RecordDeadLetterAsync(
                new DeadLetterRecord(queue.Name, envelope, RabbitMqDeadLetterReasons.InvalidEnvelope)
                {
                    Exception = error,
                    Attempts = AmqpEnvelope.AttemptsMade(properties) + AmqpEnvelope.DeliveryCount(properties) + 1,
                    History = AmqpEnvelope.History(properties),
                    Priority = AmqpEnvelope.Priority(properties),
                },
                CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }
        catch (Exception exception)
        {
            RabbitMqLog.DeadLetterFailed(Logger, exception, queue.BrokerName);
            await Task.Delay(TimeSpan.FromSeconds(1), Time);
            await queue.SendAsync(channel, tag, acknowledge: false);
            return;
        }

        RabbitMqLog.InvalidEnvelope(Logger, properties.MessageId ?? "(none)", queue.Name, error);
        await queue.SendAsync(channel, tag, acknowledge: true);
    }

    /// <inheritdoc />
    /// <remarks>From the stream when the log is mirrored there, else (and for what the stream has not caught up with) from the store.</remarks>
    public ValueTask<IReadOnlyList<LogEvent>> ReadLogAsync(long afterPosition, int max, CancellationToken cancellationToken) =>
        _log is null ? Store.ReadLogAsync(afterPosition, max, cancellationToken) : _log.ReadAsync(afterPosition, max, cancellationToken);

    /// <inheritdoc />
    /// <remarks>Waits for a relay batch in progress, so a message is never counted in both places.</remarks>
    public async ValueTask<T> ReadSettledAsync<T>(Func<ValueTask<T>> read, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(read);
        await Relay.Gate.WaitAsync(cancellationToken);
        try
        {
            return await read();
        }
        finally
        {
            Relay.Gate.Release();
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// Messages ready on the broker and buffered in this process count as ready, deliveries claimed in this process as
    /// in flight (deliveries other processes hold are not visible). The log relay's checkpoint is not listed.
    /// </remarks>
    public async ValueTask<StoreStatus> AddStatusAsync(StoreStatus stored, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(stored);
        var broker = new Dictionary<string, (long Ready, long InFlight)>(StringComparer.Ordinal);
        var reachable = Connection.IsOpen;
        foreach (var route in _routes.Values.Where(r => r.Mode == RouteMode.Broker))
        {
            long ready = route.Consumer?.BufferedCount ?? 0;
            if (reachable)
            {
                try
                {
                    ready += (await Connection.InspectAsync(route.BrokerName, cancellationToken))?.MessageCount ?? 0;
                }
                catch (Exception exception) when (exception is BrokerUnreachableException or IOException or OperationInterruptedException or AlreadyClosedException)
                {
                    RabbitMqLog.StatusFailed(Logger, exception);
                    reachable = false;
                }
            }

            broker[route.Name] = (ready, route.Consumer?.ClaimedCount ?? 0);
        }

        var queues = stored.Queues.ToDictionary(q => q.Queue, StringComparer.Ordinal);
        foreach (var (name, (ready, inFlight)) in broker)
        {
            if (queues.TryGetValue(name, out var inStore))
            {
                queues[name] = inStore with { Ready = inStore.Ready + ready, InFlight = inStore.InFlight + inFlight };
            }
            else if (ready + inFlight > 0)
            {
                queues[name] = new QueueStatus(name, ready, 0, inFlight, 0);
            }
        }

        var groups = _log is null ? stored.ConsumerGroups : stored.ConsumerGroups.Where(g => g.Group != _log.RelayCheckpoint).ToList();
        return stored with { Queues = [.. queues.Values.OrderBy(q => q.Queue, StringComparer.Ordinal)], ConsumerGroups = groups };
    }

    /// <summary>
    /// Stops the background work, hands deliveries this process holds unclaimed back to the outbox (so a stop does not
    /// count as an attempt) and closes the connection (the broker returns anything still unacknowledged). The store is
    /// its owner's to dispose, after this.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        await _stopping.CancelAsync();
        await Task.WhenAll(_background);
        foreach (var route in _routes.Values)
        {
            if (route.Consumer is { } consumer)
            {
                await consumer.CancelConsumersAsync();
                await HandBackAsync(consumer.TakeBuffered());
                await consumer.StopAsync();
                consumer.Dispose();
            }
        }

        await _deadLetters.StopAsync();
        _deadLetters.Dispose();
        if (_log is not null)
        {
            await _log.DisposeAsync();
        }

        await Relay.DisposeAsync();
        await Connection.DisposeAsync();
        _stopping.Dispose();
    }
}
