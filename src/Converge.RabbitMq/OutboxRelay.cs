using Converge.Contracts;
using Converge.Storage;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Converge.RabbitMq;

/// <summary>Where a Converge queue's messages go.</summary>
internal enum RouteMode
{
    /// <summary>Not known yet whether the queue exists on the broker; the relay asks.</summary>
    Unknown,

    /// <summary>The queue exists on the broker: the relay moves its messages there.</summary>
    Broker,

    /// <summary>No consumer has declared the queue on the broker yet: its messages wait in the outbox.</summary>
    Absent,

    /// <summary>The queue stays in the store (a job queue, or listed in <see cref="RabbitMqTransportOptions.StoreQueues"/>).</summary>
    Store,
}

/// <summary>What this process knows about one Converge queue.</summary>
internal sealed class QueueRoute
{
    int _mode;
    int _pumping;

    public QueueRoute(string name, string brokerName, RouteMode mode)
    {
        Name = name;
        BrokerName = brokerName;
        _mode = (int)mode;
    }

    public string Name { get; }

    public string BrokerName { get; }

    public RouteMode Mode => (RouteMode)Volatile.Read(ref _mode);

    /// <summary>When (a timestamp of the transport's clock) to ask the broker again whether an absent queue exists.</summary>
    public long NextCheck { get; set; }

    /// <summary>This process's consumer of the queue, once a worker claimed from it.</summary>
    public BrokerQueue? Consumer { get; set; }

    long _relayedAt;

    /// <summary>Records that messages of this queue were just published to the broker (a timestamp of the broker clock).</summary>
    public void Relayed(long timestamp) => Interlocked.Exchange(ref _relayedAt, timestamp);

    /// <summary>
    /// Whether messages of this queue were published within <paramref name="window"/> of the broker clock: they are on
    /// their way to a consumer, so a claim that finds nothing buffered should wait for them rather than return empty.
    /// </summary>
    public bool RelayedWithin(TimeProvider brokerTime, TimeSpan window) =>
        Interlocked.Read(ref _relayedAt) is var at and not 0 && brokerTime.GetElapsedTime(at) < window;

    /// <summary>Moves to <paramref name="mode"/>, unless the queue already stays in the store (that never changes back).</summary>
    public void Set(RouteMode mode)
    {
        var current = Volatile.Read(ref _mode);
        while (current != (int)RouteMode.Store)
        {
            var seen = Interlocked.CompareExchange(ref _mode, (int)mode, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }

    /// <summary>Moves from <paramref name="expected"/> to <paramref name="mode"/>; <c>false</c> when something else moved it first.</summary>
    public bool TrySet(RouteMode expected, RouteMode mode) => Interlocked.CompareExchange(ref _mode, (int)mode, (int)expected) == (int)expected;

    /// <summary>Keeps the queue in the store for good: it holds jobs.</summary>
    public void KeepInStore() => Volatile.Write(ref _mode, (int)RouteMode.Store);

    /// <summary><c>true</c> the first time only: the caller starts the queue's signal pump.</summary>
    public bool StartPumping() => Interlocked.Exchange(ref _pumping, 1) == 0;
}

/// <summary>
/// Moves messages from the store's queue table (the outbox, written inside the sender's transaction) to the broker:
/// claims due messages under a lease, publishes them with publisher confirms, and completes them in the store only
/// once the broker confirmed them. What the broker does not confirm (down, nacked, timed out) is handed back to the
/// outbox unchanged and published again later; nothing is lost, and a copy published twice is absorbed by the inbox.
/// </summary>
internal sealed class OutboxRelay : IAsyncDisposable
{
    const int ConfirmWindow = BrokerConnection.ConfirmWindow;

    readonly RabbitMqTransport _transport;
    readonly Doorbell _wake = new();
    IChannel? _publisher;
    int _publisherGeneration;

    public OutboxRelay(RabbitMqTransport transport) => _transport = transport;

    /// <summary>
    /// Held while a batch is between the outbox and the broker, so that readers of the store (the status, job and flow
    /// views) never see a message in both places or leased by the relay.
    /// </summary>
    public SemaphoreSlim Gate { get; } = new(1, 1);

    RabbitMqTransportOptions Options => _transport.Options;

    public void Wake() => _wake.Ring();

    public async Task RunAsync(CancellationToken stopping)
    {
        var failures = 0;
        while (!stopping.IsCancellationRequested)
        {
            var wait = Options.RelayPollInterval;
            try
            {
                if (!_transport.Connection.IsOpen)
                {
                    // The supervisor reconnects (and reports the outage); it wakes the relay once connected.
                    await _wake.WaitAsync(wait, _transport.Time, stopping);
                    continue;
                }

                var failed = false;
                foreach (var route in _transport.Routes)
                {
                    if (route.Mode == RouteMode.Store)
                    {
                        continue;
                    }

                    try
                    {
                        while (await RelayAsync(route, stopping) >= Options.RelayBatchSize)
                        {
                            // A full batch: there may be more due right now.
                        }
                    }
                    catch (Exception exception) when (exception is not OperationCanceledException || !stopping.IsCancellationRequested)
                    {
                        failed = true;
                        RabbitMqLog.RelayFailed(_transport.Logger, exception, route.Name, _transport.Backoff(failures + 1));
                    }
                }

                if (failed)
                {
                    throw new RelayFailedException();
                }

                failures = 0;
                wait = await UntilNextDueAsync(wait, stopping);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                break;
            }
            catch (Exception exception)
            {
                // Failing: wait out the backoff whatever rings meanwhile, so that every commit does not retry.
                var delay = _transport.Backoff(++failures);
                if (exception is not RelayFailedException)
                {
                    RabbitMqLog.RelayFailed(_transport.Logger, exception, "*", delay);
                }

                if (!await RabbitMqTransport.PausedAsync(Task.Delay(delay, _transport.Time, stopping)))
                {
                    break;
                }

                continue;
            }

            if (!await RabbitMqTransport.PausedAsync(_wake.WaitAsync(wait, _transport.Time, stopping)))
            {
                break;
            }
        }
    }

    sealed class RelayFailedException : Exception;

    /// <summary>How long until the next delayed message of a relayed queue falls due, at most <paramref name="poll"/>.</summary>
    async Task<TimeSpan> UntilNextDueAsync(TimeSpan poll, CancellationToken cancellationToken)
    {
        var wait = poll;
        foreach (var route in _transport.Routes)
        {
            if (route.Mode != RouteMode.Broker || await _transport.Store.NextVisibleAtAsync(route.Name, cancellationToken) is not { } next)
            {
                continue;
            }

            // Not sooner than 50 ms: a due message that the claim did not get is leased by another relay.
            var until = next - _transport.Time.GetUtcNow();
            wait = until < TimeSpan.FromMilliseconds(50) ? TimeSpan.FromMilliseconds(50) : until < wait ? until : wait;
        }

        return wait;
    }

    /// <summary>Relays one batch of <paramref name="route"/>'s due messages; returns how many the broker confirmed.</summary>
    public async Task<int> RelayAsync(QueueRoute route, CancellationToken cancellationToken)
    {
        await Gate.WaitAsync(cancellationToken);
        try
        {
            if (!await IsRoutableAsync(route, cancellationToken))
            {
                return 0;
            }

            var publisher = await PublisherAsync(cancellationToken);
            var batch = await _transport.Store.ClaimAsync(route.Name, Options.RelayBatchSize, Options.RelayLease, cancellationToken);
            if (batch.Count == 0)
            {
                return 0;
            }

            var (confirmed, failed, returned, error) = await PublishAsync(publisher, route, batch, cancellationToken);
            if (confirmed.Count > 0)
            {
                // Before the gate opens: a claim that relays after this batch finds nothing new to publish, and must
                // learn from this that deliveries are on their way.
                route.Relayed(_transport.BrokerTime.GetTimestamp());
            }

            RabbitMqLog.Relayed(_transport.Logger, route.Name, confirmed.Count, failed.Count, returned);
            if (confirmed.Count > 0)
            {
                try
                {
                    await using var transaction = await _transport.Store.BeginAsync(CancellationToken.None);
                    await transaction.CompleteAsync(confirmed, CancellationToken.None);
                    await transaction.CommitAsync(CancellationToken.None);
                }
                catch (Exception exception)
                {
                    // On the broker already; the lease runs out and they are published again.
                    RabbitMqLog.RelayCompletionFailed(_transport.Logger, exception, route.Name, confirmed.Count);
                }
            }

            if (failed.Count > 0)
            {
                await _transport.Store.ReleaseAsync(failed, countAttempt: false, CancellationToken.None);
            }

            if (returned)
            {
                MarkAbsent(route, RouteMode.Broker);
            }

            if (error is not null)
            {
                throw new IOException($"RabbitMQ did not confirm {failed.Count} message(s) of queue '{route.Name}'; they stay in the outbox.", error);
            }

            return confirmed.Count;
        }
        finally
        {
            Gate.Release();
        }
    }

    async Task<(List<QueuedMessage> Confirmed, List<QueuedMessage> Failed, bool Returned, Exception? Error)> PublishAsync(IChannel publisher, QueueRoute route, IReadOnlyList<QueuedMessage> batch, CancellationToken cancellationToken)
    {
        using var deadline = new CancellationTokenSource(Options.PublishTimeout, _transport.BrokerTime);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token);
        var confirmed = new List<QueuedMessage>(batch.Count);
        var failed = new List<QueuedMessage>();
        var pending = new List<(QueuedMessage Message, Task Confirm)>(ConfirmWindow);
        var returned = false;
        Exception? error = null;

        async Task AwaitConfirmsAsync()
        {
            foreach (var (message, confirm) in pending)
            {
                try
                {
                    await confirm;
                    confirmed.Add(message);
                }
                catch (PublishException exception) when (exception.IsReturn)
                {
                    // Mandatory and unroutable: the queue is gone from the broker.
                    returned = true;
                    failed.Add(message);
                }
                catch (Exception exception)
                {
                    error ??= exception;
                    failed.Add(message);
                }
            }

            pending.Clear();
        }

        foreach (var message in batch)
        {
            if (error is not null || returned)
            {
                failed.Add(message);
                continue;
            }

            try
            {
                // Mandatory: a queue no consumer declared would drop the message; returned, it stays in the outbox.
                var properties = AmqpEnvelope.ForMessage(message.Envelope, message.Attempt - 1, message.History, message.Priority);
                pending.Add((message, publisher.BasicPublishAsync(string.Empty, route.BrokerName, mandatory: true, properties, message.Envelope.Body, timeout.Token).AsTask()));
            }
            catch (Exception exception)
            {
                error ??= exception;
                failed.Add(message);
                continue;
            }

            if (pending.Count == ConfirmWindow)
            {
                await AwaitConfirmsAsync();
            }
        }

        await AwaitConfirmsAsync();
        return (confirmed, failed, returned, error);
    }

    /// <summary>Whether the relay may publish to <paramref name="route"/>: it is on the broker, or the broker says it now is.</summary>
    async Task<bool> IsRoutableAsync(QueueRoute route, CancellationToken cancellationToken)
    {
        var mode = route.Mode;
        switch (mode)
        {
            case RouteMode.Broker:
                return true;
            case RouteMode.Store:
                return false;
        }

        if (_transport.Time.GetTimestamp() < route.NextCheck)
        {
            return false;
        }

        if (await _transport.Connection.InspectAsync(route.BrokerName, cancellationToken) is not null)
        {
            route.TrySet(mode, RouteMode.Broker);
            return route.Mode == RouteMode.Broker;
        }

        MarkAbsent(route, mode);
        return route.Mode == RouteMode.Broker;
    }

    /// <summary>
    /// Records that the queue was not on the broker when the relay looked (in <paramref name="seen"/> mode); a consumer
    /// that declared it meanwhile wins.
    /// </summary>
    void MarkAbsent(QueueRoute route, RouteMode seen)
    {
        route.NextCheck = _transport.Time.GetTimestamp() + (long)(Options.QueueCheckInterval.TotalSeconds * _transport.Time.TimestampFrequency);
        if (route.TrySet(seen, RouteMode.Absent) && seen != RouteMode.Absent)
        {
            RabbitMqLog.QueueAbsent(_transport.Logger, route.Name);
        }
    }

    async Task<IChannel> PublisherAsync(CancellationToken cancellationToken)
    {
        if (_publisher is { IsOpen: true } open && _publisherGeneration == _transport.Connection.Generation)
        {
            return open;
        }

        if (_publisher is { } old)
        {
            _publisher = null;
            await BrokerConnection.CloseQuietlyAsync(old);
        }

        var channel = await _transport.Connection.CreateChannelAsync(confirms: true, cancellationToken);
        _publisherGeneration = _transport.Connection.Generation;
        _publisher = channel;
        return channel;
    }

    public async ValueTask DisposeAsync()
    {
        await Gate.WaitAsync();
        try
        {
            if (_publisher is { } publisher)
            {
                _publisher = null;
                await BrokerConnection.CloseQuietlyAsync(publisher);
            }
        }
        finally
        {
            Gate.Release();
        }
    }
}
