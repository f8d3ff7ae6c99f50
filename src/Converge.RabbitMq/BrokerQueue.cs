using Converge.Contracts;
using Converge.Storage;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;

namespace Converge.RabbitMq;

/// <summary>
/// One delivery from the broker, from the moment it arrives until it is settled: buffered (delivered, not yet
/// claimed), claimed under a lease kept on the store's clock, then settled once (acknowledged, returned, or lost
/// with its channel). Only the first settlement reaches the broker: settling a delivery tag twice would close the
/// channel.
/// </summary>
internal sealed class Delivery
{
    const int Buffered = 0;
    const int Claimed = 1;
    const int Settled = 2;
    int _state;

    public Delivery(BrokerQueue owner, IChannel channel, ulong tag, Envelope envelope, int attempt, int priority, IReadOnlyList<AttemptRecord> history)
    {
        Owner = owner;
        Channel = channel;
        Tag = tag;
        Envelope = envelope;
        Attempt = attempt;
        Priority = priority;
        History = history;
    }

    public BrokerQueue Owner { get; }

    public IChannel Channel { get; }

    public ulong Tag { get; }

    public Envelope Envelope { get; }

    public int Attempt { get; }

    public int Priority { get; }

    public IReadOnlyList<AttemptRecord> History { get; }

    /// <summary>The message handed to the runtime; set when claimed.</summary>
    public QueuedMessage? Message { get; private set; }

    public DateTimeOffset LeaseUntil { get; set; }

    public bool IsSettled => Volatile.Read(ref _state) == Settled;

    /// <summary>Whether <paramref name="message"/> is this delivery's claim and it is not settled yet.</summary>
    public bool IsHeldBy(QueuedMessage message) =>
        Volatile.Read(ref _state) == Claimed && Message is { } claimed && claimed.LeaseToken == message.LeaseToken && Channel.IsOpen;

    public QueuedMessage Claim(long id, DateTimeOffset leaseUntil)
    {
        LeaseUntil = leaseUntil;
        Message = new QueuedMessage
        {
            Id = id,
            Queue = Owner.Name,
            Envelope = Envelope,
            Attempt = Attempt,
            Priority = Priority,
            LeaseToken = Guid.NewGuid(),
            History = History,
        };
        Volatile.Write(ref _state, Claimed);
        return Message;
    }

    /// <summary>Marks the delivery settled; <c>true</c> for the one caller that may tell the broker.</summary>
    public bool TrySettle()
    {
        var state = Volatile.Read(ref _state);
        while (state != Settled)
        {
            var seen = Interlocked.CompareExchange(ref _state, Settled, state);
            if (seen == state)
            {
                return true;
            }

            state = seen;
        }

        return false;
    }
}

/// <summary>
/// The consumer of one Converge queue's quorum queue in this process: declares the queue, consumes it with manual
/// acknowledgements and a prefetch, buffers what arrives until a worker claims it, and settles deliveries.
/// </summary>
internal sealed class BrokerQueue : IDisposable
{
    /// <summary>How long stopping waits for the broker to confirm a consumer's cancellation.</summary>
    static readonly TimeSpan CancelTimeout = TimeSpan.FromSeconds(5);

    static readonly TimeSpan ArrivalGap = TimeSpan.FromMilliseconds(20);

    readonly RabbitMqTransport _transport;
    readonly object _lock = new();
    readonly Queue<Delivery> _buffer = new();
    readonly HashSet<Delivery> _claimed = [];
    readonly Doorbell _arrived = new();
    readonly SemaphoreSlim _starting = new(1, 1);
    readonly SemaphoreSlim _sending = new(1, 1);
    readonly HashSet<IChannel> _closing = [];

    /// <summary>When <see cref="ExpireLeases"/> last handed deliveries back (a broker-clock timestamp; 0: never).</summary>
    long _returnedAt;
    IChannel? _channel;
    string? _consumerTag;

    /// <summary>
    /// 1 from the moment this process cancels its consumer until it starts the next: a cancellation it did not ask for
    /// is the broker's.
    /// </summary>
    int _cancelling;
    TaskCompletionSource _unregistered = new(TaskCreationOptions.RunContinuationsAsynchronously);
    long _lastClaim;

    public BrokerQueue(RabbitMqTransport transport, string name, string brokerName)
    {
        _transport = transport;
        Name = name;
        BrokerName = brokerName;
        _lastClaim = transport.Time.GetTimestamp();
    }

    /// <summary>The Converge queue.</summary>
    public string Name { get; }

    /// <summary>The queue on the broker (with the prefix).</summary>
    public string BrokerName { get; }

    public bool IsConsuming => _channel is { IsOpen: true };

    int _paused;

    /// <summary>
    /// Set when this process stops consuming because nobody claimed; the next claim clears it. Written with a full
    /// fence, as <see cref="ClaimStarting"/> writes the claim's time: a pause sets this before it checks for a claim, a
    /// claim notes its time before it reads this, so one of them always sees the other.
    /// </summary>
    public bool Paused
    {
        get => Volatile.Read(ref _paused) != 0;
        set => Interlocked.Exchange(ref _paused, value ? 1 : 0);
    }

    /// <summary>Held while a claim starts the consumer or the supervisor pauses it, so that neither finds it half done.</summary>
    public SemaphoreSlim Lifecycle { get; } = new(1, 1);

    /// <summary>Whether the queue is consumed here while no worker claims from it and nothing is claimed.</summary>
    public bool IsIdle(TimeSpan timeout)
    {
        lock (_lock)
        {
            return _channel is { IsOpen: true } && _claimed.Count == 0 && _transport.Time.GetElapsedTime(Volatile.Read(ref _lastClaim)) > timeout;
        }
    }

    /// <summary>Delivered to this process and not claimed yet.</summary>
    public int BufferedCount
    {
        get
        {
            lock (_lock)
            {
                return _buffer.Count;
            }
        }
    }

    /// <summary>Claimed by a worker and not settled yet.</summary>
    public int ClaimedCount
    {
        get
        {
            lock (_lock)
            {
                return _claimed.Count;
            }
        }
    }

    /// <summary>Declares the queue and starts consuming it, unless this process already does.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (IsConsuming)
        {
            return;
        }

        await _starting.WaitAsync(cancellationToken);
        IChannel? channel = null;
        try
        {
            if (IsConsuming)
            {
                return;
            }

            channel = await _transport.Connection.CreateChannelAsync(confirms: false, cancellationToken);
            await _transport.DeclareQueueAsync(channel, BrokerName, cancellationToken);
            await channel.BasicQosAsync(0, (ushort)_transport.Options.PrefetchCount, global: false, cancellationToken);
            var consumer = new AsyncEventingBasicConsumer(channel);
            var current = channel;
            var unregistered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            consumer.ReceivedAsync += (_, delivery) => OnReceivedAsync(current, delivery);
            consumer.UnregisteredAsync += (_, _) =>
            {
                unregistered.TrySetResult();
                if (Volatile.Read(ref _cancelling) == 0)
                {
                    // Cancelled by the broker (its queue deleted, say), not by this process: the channel stays open and
                    // would look like a consumer forever. Closed, its deliveries go back and the supervisor (or the next
                    // claim) declares the queue and consumes it again. Not awaited here: a close waits for the
                    // consumer's dispatch, which is running this.
                    RabbitMqLog.ConsumerCancelled(_transport.Logger, Name);
                    _ = Task.Run(() => CloseAsync(current), CancellationToken.None);
                }

                return Task.CompletedTask;
            };
            _unregistered = unregistered;
            Volatile.Write(ref _cancelling, 0);
            channel.ChannelShutdownAsync += (_, _) =>
            {
                Drop(current);
                return Task.CompletedTask;
            };
            lock (_lock)
            {
                _channel = channel;
            }

            _consumerTag = await channel.BasicConsumeAsync(BrokerName, autoAck: false, consumer, cancellationToken);
            channel = null;
        }
        finally
        {
            if (channel is not null)
            {
                lock (_lock)
                {
                    if (ReferenceEquals(_channel, channel))
                    {
                        _channel = null;
                    }
                }

                await CloseAsync(channel);
            }

            _starting.Release();
        }
    }

    async Task OnReceivedAsync(IChannel channel, BasicDeliverEventArgs args)
    {
        // The body's memory belongs to the client library once this handler returns.
        var body = args.Body.ToArray();
        var properties = args.BasicProperties;
        if (!AmqpEnvelope.TryRead(properties, body, out var envelope, out var error))
        {
            await _transport.DeadLetterInvalidAsync(this, channel, args.DeliveryTag, properties, body, error!);
            return;
        }

        var attemptsMade = AmqpEnvelope.AttemptsMade(properties);
        var returned = AmqpEnvelope.DeliveryCount(properties);
        RabbitMqLog.Delivered(_transport.Logger, envelope.MessageId, Name, attemptsMade, returned);
        var delivery = new Delivery(
            this,
            channel,
            args.DeliveryTag,
            envelope,
            attemptsMade + returned + 1,
            AmqpEnvelope.Priority(properties),
            AmqpEnvelope.History(properties));
        lock (_lock)
        {
            if (!ReferenceEquals(_channel, channel))
            {
                // Arrived on a channel that has been dropped: the broker returns it with the channel.
                return;
            }

            _buffer.Enqueue(delivery);
        }

        _arrived.Ring();
        _transport.Signals.RingQueue(Name);
    }

    /// <summary>Everything that arrived on <paramref name="channel"/> is returned by the broker when it closes: forget it.</summary>
    void Drop(IChannel channel)
    {
        lock (_lock)
        {
            if (ReferenceEquals(_channel, channel))
            {
                _channel = null;
            }

            var kept = _buffer.Where(d => !ReferenceEquals(d.Channel, channel)).ToList();
            foreach (var delivery in _buffer.Where(d => ReferenceEquals(d.Channel, channel)))
            {
                delivery.TrySettle();
            }

            _buffer.Clear();
            kept.ForEach(_buffer.Enqueue);
            foreach (var delivery in _claimed.Where(d => ReferenceEquals(d.Channel, channel)).ToList())
            {
                delivery.TrySettle();
                _claimed.Remove(delivery);
                _transport.Forget(delivery);
            }
        }

        _transport.WakeSupervisor();
    }

    /// <summary>
    /// Marks the consumer as in use by a claim that is starting, before it hands expired leases back: otherwise the
    /// supervisor could find it with nothing claimed and its last claim long ago, and pause it while the claim waits
    /// for the redelivery of what it handed back.
    /// </summary>
    public void ClaimStarting() => Interlocked.Exchange(ref _lastClaim, _transport.Time.GetTimestamp());

    /// <summary>Claims up to <paramref name="max"/> buffered deliveries under a lease until <paramref name="leaseUntil"/>.</summary>
    public List<QueuedMessage> Take(int max, DateTimeOffset leaseUntil)
    {
        var taken = new List<QueuedMessage>(Math.Min(max, 64));
        Volatile.Write(ref _lastClaim, _transport.Time.GetTimestamp());
        lock (_lock)
        {
            while (taken.Count < max && _buffer.TryDequeue(out var delivery))
            {
                if (delivery.IsSettled)
                {
                    continue;
                }

                taken.Add(delivery.Claim(_transport.NextDeliveryId(), leaseUntil));
                _claimed.Add(delivery);
                _transport.Remember(delivery);
            }
        }

        return taken;
    }

    /// <summary>Takes every buffered delivery out, for handing back when the process stops.</summary>
    public List<Delivery> TakeBuffered()
    {
        lock (_lock)
        {
            var all = _buffer.Where(d => !d.IsSettled).ToList();
            _buffer.Clear();
            return all;
        }
    }

    /// <summary>
    /// Returns claimed deliveries whose lease has ended on the store's clock to the broker, which delivers them again
    /// (to this process or another) with their attempt counted, as a store makes an expired lease visible again.
    /// </summary>
    /// <returns>How many were returned.</returns>
    public int ExpireLeases(DateTimeOffset now)
    {
        List<Delivery>? expired = null;
        lock (_lock)
        {
            foreach (var delivery in _claimed)
            {
                if (delivery.LeaseUntil <= now)
                {
                    (expired ??= []).Add(delivery);
                }
            }

            if (expired is null)
            {
                return 0;
            }

            // Recorded before the deliveries leave the claimed set: a claim that finds them gone must also find that
            // they were just handed back, and wait for their redelivery instead of returning empty.
            Interlocked.Exchange(ref _returnedAt, _transport.BrokerTime.GetTimestamp());
            foreach (var delivery in expired)
            {
                _claimed.Remove(delivery);
                _transport.Forget(delivery);
            }
        }

        var returned = 0;
        foreach (var delivery in expired)
        {
            if (delivery.TrySettle())
            {
                returned++;
                _ = SendAsync(delivery, acknowledge: false);
            }
        }

        if (returned > 0)
        {
            RabbitMqLog.LeasesExpired(_transport.Logger, Name, returned);
        }

        return returned;
    }

    /// <summary>
    /// Whether deliveries were handed back within <paramref name="window"/>, by a claim or by the transport's lease
    /// supervisor: the broker is still to deliver them again, so a claim that finds nothing buffered should wait for
    /// them rather than return empty.
    /// </summary>
    public bool ReturnedWithin(TimeSpan window) =>
        Interlocked.Read(ref _returnedAt) is var at and not 0 && _transport.BrokerTime.GetElapsedTime(at) < window;

    /// <summary>Acknowledges (done with it) or returns (deliver again, attempt counted) a delivery, once.</summary>
    public Task SettleAsync(Delivery delivery, bool acknowledge)
    {
        lock (_lock)
        {
            _claimed.Remove(delivery);
        }

        _transport.Forget(delivery);
        return delivery.TrySettle() ? SendAsync(delivery, acknowledge) : Task.CompletedTask;
    }

    Task SendAsync(Delivery delivery, bool acknowledge) => SendAsync(delivery.Channel, delivery.Tag, acknowledge);

    /// <summary>Acknowledges or returns the delivery <paramref name="tag"/> of <paramref name="channel"/>; for deliveries never buffered (invalid envelopes).</summary>
    public async Task SendAsync(IChannel channel, ulong tag, bool acknowledge)
    {
        // One settlement at a time per consumer, and never while its channel is being closed.
        await _sending.WaitAsync();
        try
        {
            if (!channel.IsOpen || _closing.Contains(channel))
            {
                // The broker returns it when the channel closes.
                return;
            }

            if (acknowledge)
            {
                await channel.BasicAckAsync(tag, multiple: false);
            }
            else
            {
                await channel.BasicNackAsync(tag, multiple: false, requeue: true);
            }
        }
        catch (Exception exception) when (exception is AlreadyClosedException or OperationInterruptedException or IOException or ObjectDisposedException)
        {
            RabbitMqLog.SettleFailed(_transport.Logger, exception, Name);
        }
        finally
        {
            _sending.Release();
        }
    }

    /// <summary>
    /// With some deliveries buffered, waits while more keep arriving (each within <see cref="ArrivalGap"/> of the last),
    /// up to <paramref name="target"/>: a burst the relay just published is claimed together, not one by one.
    /// </summary>
    public async Task WaitForBurstAsync(int target, CancellationToken cancellationToken)
    {
        while (BufferedCount is > 0 and var buffered && buffered < Deliverable(target))
        {
            if (!await _arrived.WaitAsync(ArrivalGap, _transport.BrokerTime, cancellationToken))
            {
                return;
            }
        }
    }

    /// <summary>
    /// At most <paramref name="target"/>, and no more than the broker can still send: it stops at the prefetch count of
    /// deliveries not yet acknowledged, so waiting for more than that would only wait out the arrival gap.
    /// </summary>
    int Deliverable(int target) => Math.Min(target, Math.Max(1, _transport.Options.PrefetchCount - ClaimedCount));

    /// <summary>
    /// Waits until at least one delivery is buffered (at most <paramref name="firstWait"/>), then for up to
    /// <paramref name="target"/> while they keep arriving.
    /// </summary>
    public async Task WaitForDeliveriesAsync(int target, TimeSpan firstWait, CancellationToken cancellationToken)
    {
        var started = _transport.BrokerTime.GetTimestamp();
        while (BufferedCount == 0)
        {
            var remaining = firstWait - _transport.BrokerTime.GetElapsedTime(started);
            if (remaining <= TimeSpan.Zero)
            {
                return;
            }

            await _arrived.WaitAsync(remaining, _transport.BrokerTime, cancellationToken);
        }

        while (BufferedCount < Deliverable(target) && _transport.BrokerTime.GetElapsedTime(started) < firstWait)
        {
            if (!await _arrived.WaitAsync(ArrivalGap, _transport.BrokerTime, cancellationToken))
            {
                return;
            }
        }
    }

    /// <summary>Stops consuming: the broker returns what is still unacknowledged when the channel closes.</summary>
    public async Task StopAsync()
    {
        IChannel? channel;
        lock (_lock)
        {
            channel = _channel;
            _channel = null;
        }

        if (channel is not null)
        {
            await CloseAsync(channel);
        }
    }

    /// <summary>
    /// Closes a channel once no settlement is being sent on it, and sends none after: an acknowledgement that reaches
    /// the broker after the channel's close is an error that closes the whole connection. The semaphore is not held
    /// while closing: the close waits for the delivery handler, which may be waiting to settle.
    /// </summary>
    async Task CloseAsync(IChannel channel)
    {
        await _sending.WaitAsync();
        _closing.Add(channel);
        _sending.Release();
        await BrokerConnection.CloseQuietlyAsync(channel);
        await _sending.WaitAsync();
        _closing.Remove(channel);
        _sending.Release();
    }

    /// <summary>Stops new deliveries without closing the channel, so that buffered ones can still be settled.</summary>
    public async Task CancelConsumersAsync()
    {
        var channel = _channel;
        if (channel is not { IsOpen: true } || _consumerTag is not { } tag)
        {
            return;
        }

        Volatile.Write(ref _cancelling, 1);
        try
        {
            // Bounded: a broker that does not answer (just back from an outage, say) must not hold up stopping, and
            // what it still delivers is redelivered to another consumer once this channel closes.
            using var timeout = new CancellationTokenSource(CancelTimeout, _transport.BrokerTime);
            await channel.BasicCancelAsync(tag, noWait: false, timeout.Token);

            // Deliveries sent before the cancellation are dispatched before it: once it is, every one is buffered.
            await _unregistered.Task.WaitAsync(CancelTimeout, _transport.BrokerTime);
        }
        catch (Exception exception) when (exception is TimeoutException or OperationCanceledException)
        {
            RabbitMqLog.SettleFailed(_transport.Logger, exception, Name);
        }
        catch (Exception exception) when (exception is AlreadyClosedException or OperationInterruptedException or IOException or ObjectDisposedException)
        {
            RabbitMqLog.SettleFailed(_transport.Logger, exception, Name);
        }
    }

    public void Dispose()
    {
        _starting.Dispose();
        _sending.Dispose();
    }
}
