using System.Collections.Concurrent;
using System.Data.Common;
using System.Runtime.CompilerServices;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Converge.RabbitMq;

/// <summary>
/// The RabbitMQ transport: a store (<see cref="IMessageStore"/>) that wraps another one and moves its queues to
/// RabbitMQ, so the whole runtime runs on it unchanged.
/// <list type="bullet">
/// <item>Sends are written to the wrapped store's queue table inside the sender's transaction (that table is the
/// outbox); a relay publishes them to a durable quorum queue per Converge queue with publisher confirms and removes them
/// from the outbox once confirmed. Delayed messages and retries wait in the outbox until due. While the broker is
/// unreachable messages wait there and flow when it returns.</item>
/// <item>Claims return deliveries of a consumer with manual acknowledgements. A lease is kept on the store's clock:
/// when it ends without renewal the delivery is returned to the broker, which delivers it again with its attempt
/// counted. A completed message is acknowledged when the transaction that recorded its effects commits; a retry is
/// written back to the outbox (due at its backoff, with its attempts and history) and the delivery acknowledged on
/// commit; a dead letter goes to the wrapped store's dead letters. A rolled-back outcome leaves the delivery claimed,
/// as a rolled-back store write leaves the lease.</item>
/// <item>What the broker dead-letters (a delivery limit exceeded by consumers that crashed) reaches the wrapped store's
/// dead letters through a dead-letter exchange.</item>
/// <item>Job queues (and <see cref="RabbitMqTransportOptions.StoreQueues"/>) stay in the wrapped store: their limits,
/// cancellation and listings are store features.</item>
/// <item>The event log stays in the wrapped store, which assigns positions; it is mirrored to a stream
/// (<see cref="RabbitMqTransportOptions.LogStream"/>) that consumer groups read and replay.</item>
/// </list>
/// Everything else (inbox, sagas, jobs, dead letters, status) is the wrapped store's. Background work starts with
/// <see cref="MigrateAsync"/>, which the Converge host calls at start-up.
/// </summary>
public sealed class RabbitMqTransport : IMessageStore, IStoreDecorator, IDatabaseStore, IStoreQueries, IJobQueries
{
    readonly IMessageStore _inner;
    readonly ConcurrentDictionary<string, QueueRoute> _routes = new(StringComparer.Ordinal);
    readonly ConcurrentDictionary<long, Delivery> _claimed = new();
    readonly ConditionalWeakTable<IStoreTransaction, RabbitMqStoreTransaction> _wrapped = new();
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
    /// Wraps <paramref name="inner"/>. The transport owns it from now on and disposes it. Prefer
    /// <c>options.UseRabbitMq(...)</c>, which also keeps the process's job queues in the store.
    /// </summary>
    /// <param name="inner">The store that holds the outbox, the inbox, the log and everything else.</param>
    /// <param name="options">The transport's options; validated here.</param>
    /// <param name="timeProvider">The clock of leases; the same one the wrapped store uses.</param>
    /// <param name="loggerFactory">For the transport's log messages; none when <c>null</c>.</param>
    public RabbitMqTransport(IMessageStore inner, RabbitMqTransportOptions options, TimeProvider timeProvider, ILoggerFactory? loggerFactory = null)
        : this(inner, options, timeProvider, loggerFactory, [])
    {
    }

    internal RabbitMqTransport(IMessageStore inner, RabbitMqTransportOptions options, TimeProvider timeProvider, ILoggerFactory? loggerFactory, IEnumerable<string> storeQueues)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(timeProvider);
        options.Validate();
        _inner = inner;
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
        _storeQueues = new ConcurrentDictionary<string, byte>(options.StoreQueues.Concat(storeQueues).Select(q => KeyValuePair.Create(q, (byte)0)), StringComparer.Ordinal);
        foreach (var queue in _storeQueues.Keys)
        {
            Route(queue);
        }

        foreach (var queue in options.Queues)
        {
            Route(queue);
        }
    }

    /// <summary>The wrapped store.</summary>
    public IMessageStore Inner => _inner;

    IStore IStoreDecorator.Inner => _inner;

    /// <inheritdoc />
    public string Name => _inner.Name + "+rabbitmq";

    /// <inheritdoc />
    /// <remarks>The store's: the transport adds no writer of its own.</remarks>
    public int ParallelWriters => _inner.ParallelWriters;

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

    internal OutboxRelay Relay { get; }

    internal ICollection<QueueRoute> Routes => _routes.Values;

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

    /// <summary>
    /// Whether <paramref name="message"/> came from the broker (ids below zero, so they never meet the store's row ids),
    /// and its delivery when it is still claimed.
    /// </summary>
    internal static bool IsDelivered(QueuedMessage message) => message.Id < 0;

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

    /// <summary>Keeps <paramref name="queue"/> in the store from now on: it holds jobs.</summary>
    internal void KeepInStore(string queue)
    {
        _storeQueues.TryAdd(queue, 0);
        Route(queue).KeepInStore();
    }

    /// <summary>A message was written to <paramref name="queue"/>'s outbox: make sure the relay knows the queue.</summary>
    internal void Sent(string queue) => Route(queue);

    /// <summary>
    /// Forwards the wrapped store's wake-ups for one queue: to the relay when the queue goes through the broker (its
    /// outbox got messages), to the runtime's consumers when it stays in the store.
    /// </summary>
    async Task PumpAsync(QueueRoute route, CancellationToken stopping)
    {
        var bell = _inner.Signals.Queue(route.Name);
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
                if (!await _inner.Signals.Log.WaitAsync(TimeSpan.FromSeconds(30), Time, stopping))
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
    /// Migrates the wrapped store, then starts the transport's background work (the outbox relay, the dead-letter
    /// consumer, the log relay, reconnecting) and declares its topology. An unreachable broker does not fail start-up:
    /// messages wait in the outbox until it is reachable.
    /// </remarks>
    public async ValueTask MigrateAsync(CancellationToken cancellationToken)
    {
        await _inner.MigrateAsync(cancellationToken);
        if (Interlocked.Exchange(ref _started, 1) == 1)
        {
            return;
        }

        // Queues that already hold messages (a previous run's outbox) are relayed once their consumers exist.
        try
        {
            foreach (var queue in (await _inner.Queries().GetStatusAsync(cancellationToken)).Queues)
            {
                Route(queue.Queue);
            }
        }
        catch (DbException exception)
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

    /// <summary>
    /// Keeps the connection, the topology and this process's consumers alive: after the broker was lost it connects
    /// again (backing off while it stays unreachable) and starts every consumer afresh. Also ends leases that ran out
    /// while nobody claimed, so that a hung handler's message moves on.
    /// </summary>
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
    async Task<BrokerQueue> ConsumerAsync(QueueRoute route, CancellationToken cancellationToken)
    {
        if (route.Consumer is { IsConsuming: true } running)
        {
            return running;
        }

        await EnsureTopologyAsync(cancellationToken);
        BrokerQueue consumer;
        lock (route)
        {
            consumer = route.Consumer ??= new BrokerQueue(this, route.Name, route.BrokerName);
        }

        consumer.Paused = false;

        await consumer.StartAsync(cancellationToken);
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
        consumer.Paused = true;
        await consumer.CancelConsumersAsync();
        await HandBackAsync(consumer.TakeBuffered());
        await consumer.StopAsync();
    }

    /// <inheritdoc />
    public async ValueTask<IStoreTransaction> BeginAsync(CancellationToken cancellationToken) => Wrap(await _inner.BeginAsync(cancellationToken));

    /// <inheritdoc />
    public IStoreTransaction Enlist(DbTransaction transaction) => Wrap(_inner.Database().Enlist(transaction));

    /// <summary>One wrapper per inner transaction: enlisting a transaction this store began returns the same wrapper.</summary>
    RabbitMqStoreTransaction Wrap(IStoreTransaction inner) => _wrapped.GetValue(inner, i => new RabbitMqStoreTransaction(this, i));

    /// <inheritdoc />
    /// <remarks>
    /// For a queue that goes through the broker: claims buffered deliveries. When none are buffered it relays the
    /// queue's due outbox messages at once and waits briefly for their delivery (<see cref="RabbitMqTransportOptions.DeliveryWait"/>),
    /// or for anything else to arrive (<see cref="RabbitMqTransportOptions.ClaimWait"/>). For a queue kept in the store,
    /// the wrapped store claims.
    /// </remarks>
    public async ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken)
    {
        var route = Route(queue);
        if (route.Mode == RouteMode.Store)
        {
            return await _inner.ClaimAsync(queue, max, lease, cancellationToken);
        }

        var consumer = await ConsumerAsync(route, cancellationToken);
        consumer.ClaimStarting();
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
    /// <remarks>
    /// A claim with a policy is a job worker's: job queues stay in the wrapped store, which keeps the policy's limits
    /// across processes. The queue is kept in the store from then on.
    /// </remarks>
    public ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken)
    {
        KeepInStore(queue);
        return _inner.ClaimAsync(queue, max, lease, policy, cancellationToken);
    }

    /// <inheritdoc />
    /// <remarks>
    /// For a queue that goes through the broker, <c>null</c>: deliveries ring <see cref="Signals"/>, and delayed
    /// messages are the relay's to move when due.
    /// </remarks>
    public ValueTask<DateTimeOffset?> NextVisibleAtAsync(string queue, CancellationToken cancellationToken) =>
        Route(queue).Mode == RouteMode.Broker ? ValueTask.FromResult<DateTimeOffset?>(null) : _inner.NextVisibleAtAsync(queue, cancellationToken);

    /// <inheritdoc />
    public async ValueTask<int> RenewLeasesAsync(IReadOnlyList<QueuedMessage> messages, TimeSpan lease, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var until = Time.GetUtcNow() + lease;
        var renewed = 0;
        List<QueuedMessage>? stored = null;
        foreach (var message in messages)
        {
            if (!IsDelivered(message))
            {
                (stored ??= []).Add(message);
            }
            else if (Held(message) is { } delivery)
            {
                delivery.LeaseUntil = until;
                renewed++;
            }
        }

        return stored is null ? renewed : renewed + await _inner.RenewLeasesAsync(stored, lease, cancellationToken);
    }

    /// <inheritdoc />
    /// <remarks>
    /// Deliveries: counting the attempt, they are returned to the broker (which counts it); without, they are written
    /// back to the outbox with their attempt count unchanged and acknowledged, since the broker counts every return.
    /// </remarks>
    public async ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> messages, bool countAttempt, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var stored = messages.Where(m => !IsDelivered(m)).ToList();
        var delivered = messages.Where(IsDelivered).Select(Held).OfType<Delivery>().ToList();
        if (stored.Count > 0)
        {
            await _inner.ReleaseAsync(stored, countAttempt, cancellationToken);
        }

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
        if (open.Count == 0)
        {
            return;
        }

        try
        {
            await using var transaction = await _inner.BeginAsync(CancellationToken.None);
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
            await using var transaction = await _inner.BeginAsync(CancellationToken.None);
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
    public ValueTask<IReadOnlyList<LogEvent>> ReadLogAsync(long afterPosition, int max, CancellationToken cancellationToken) =>
        _log is null ? _inner.ReadLogAsync(afterPosition, max, cancellationToken) : _log.ReadAsync(afterPosition, max, cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<LogEvent>> ReadStreamAsync(string stream, long fromVersion, int max, CancellationToken cancellationToken) =>
        _inner.ReadStreamAsync(stream, fromVersion, max, cancellationToken);

    /// <inheritdoc />
    public ValueTask<ConsumerGroupState?> GetConsumerGroupAsync(string group, CancellationToken cancellationToken) =>
        _inner.GetConsumerGroupAsync(group, cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<DeadLetter>> ListDeadLettersAsync(string? source, int max, CancellationToken cancellationToken) =>
        _inner.Queries().ListDeadLettersAsync(source, max, cancellationToken);

    /// <inheritdoc />
    public ValueTask<bool> RetryDeadLetterAsync(long id, CancellationToken cancellationToken) => _inner.RetryDeadLetterAsync(id, cancellationToken);

    /// <inheritdoc />
    public ValueTask<bool> DiscardDeadLetterAsync(long id, CancellationToken cancellationToken) => _inner.DiscardDeadLetterAsync(id, cancellationToken);

    /// <inheritdoc />
    public ValueTask<int> PurgeInboxAsync(DateTimeOffset handledBefore, CancellationToken cancellationToken) => _inner.PurgeInboxAsync(handledBefore, cancellationToken);

    /// <inheritdoc />
    /// <remarks>
    /// The wrapped store's status with the broker's part added: messages ready on the broker and buffered in this
    /// process count as ready, deliveries claimed in this process as in flight (deliveries other processes hold are not
    /// visible). Waits for a relay batch in progress, so a message is never counted in both places.
    /// </remarks>
    public async ValueTask<StoreStatus> GetStatusAsync(CancellationToken cancellationToken)
    {
        var broker = new Dictionary<string, (long Ready, long InFlight)>(StringComparer.Ordinal);
        StoreStatus status;
        await Relay.Gate.WaitAsync(cancellationToken);
        try
        {
            status = await _inner.Queries().GetStatusAsync(cancellationToken);
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
        }
        finally
        {
            Relay.Gate.Release();
        }

        var queues = status.Queues.ToDictionary(q => q.Queue, StringComparer.Ordinal);
        foreach (var (name, (ready, inFlight)) in broker)
        {
            if (queues.TryGetValue(name, out var stored))
            {
                queues[name] = stored with { Ready = stored.Ready + ready, InFlight = stored.InFlight + inFlight };
            }
            else if (ready + inFlight > 0)
            {
                queues[name] = new QueueStatus(name, ready, 0, inFlight, 0);
            }
        }

        var groups = _log is null ? status.ConsumerGroups : status.ConsumerGroups.Where(g => g.Group != _log.RelayCheckpoint).ToList();
        return status with { Queues = [.. queues.Values.OrderBy(q => q.Queue, StringComparer.Ordinal)], ConsumerGroups = groups };
    }

    /// <inheritdoc />
    /// <remarks>Messages on the broker are not listed as pending: only the outbox, the inbox, the dead letters and the log are read.</remarks>
    public async ValueTask<IReadOnlyList<FlowItem>> ReadFlowAsync(string correlationId, CancellationToken cancellationToken) =>
        await AfterRelayBatchAsync(() => _inner.Queries().ReadFlowAsync(correlationId, cancellationToken), cancellationToken);

    /// <inheritdoc />
    public ValueTask<DbConnection> OpenReadConnectionAsync(CancellationToken cancellationToken) => _inner.Database().OpenReadConnectionAsync(cancellationToken);

    /// <inheritdoc />
    public async ValueTask<JobInfo?> GetJobAsync(Guid id, CancellationToken cancellationToken) =>
        await AfterRelayBatchAsync(() => _inner.JobQueries().GetJobAsync(id, cancellationToken), cancellationToken);

    /// <inheritdoc />
    public async ValueTask<IReadOnlyList<JobInfo>> ListJobsAsync(JobQuery query, CancellationToken cancellationToken) =>
        await AfterRelayBatchAsync(() => _inner.JobQueries().ListJobsAsync(query, cancellationToken), cancellationToken);

    /// <summary>Reads the queue table when no relay batch is between it and the broker.</summary>
    async Task<T> AfterRelayBatchAsync<T>(Func<ValueTask<T>> read, CancellationToken cancellationToken)
    {
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
    public ValueTask<JobBatchRecord?> GetBatchAsync(string id, CancellationToken cancellationToken) => _inner.JobQueries().GetBatchAsync(id, cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<RecurringJobRecord>> ListRecurringJobsAsync(CancellationToken cancellationToken) => _inner.JobQueries().ListRecurringJobsAsync(cancellationToken);

    /// <summary>
    /// Stops the background work, hands deliveries this process holds unclaimed back to the outbox (so a stop does not
    /// count as an attempt), closes the connection (the broker returns anything still unacknowledged) and disposes the
    /// wrapped store.
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
        await _inner.DisposeAsync();
        _stopping.Dispose();
    }
}
