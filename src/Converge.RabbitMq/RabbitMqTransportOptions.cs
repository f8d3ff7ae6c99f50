using System.Text.RegularExpressions;

namespace Converge.RabbitMq;

/// <summary>
/// Options of the RabbitMQ transport. Every property has a working default except <see cref="Uri"/>, which
/// <c>UseRabbitMq</c> sets. Validated once, when the transport is created, with messages that name the fix.
/// </summary>
public sealed partial class RabbitMqTransportOptions
{
    /// <summary>The broker, for example <c>amqp://user:password@rabbit:5672/vhost</c>. Required.</summary>
    public Uri? Uri { get; set; }

    /// <summary>
    /// Put in front of every queue, exchange and stream name Converge uses on the broker, so that several
    /// environments (or test runs) can share one virtual host. Letters, digits, '.', '-', '_' and ':'; at most 50.
    /// Default empty.
    /// </summary>
    public string QueuePrefix { get; set; } = "";

    /// <summary>
    /// Queues declared on the broker and relayed from the outbox from start-up, even before a consumer of them runs
    /// anywhere. Without this, a queue is declared by its first consumer, and until then its messages wait in the
    /// outbox. Default none.
    /// </summary>
    public IList<string> Queues { get; } = new List<string>();

    /// <summary>
    /// Queues that stay in the store and never go through the broker. Job queues always do (their concurrency and
    /// rate limits, cancellation and listings are store features); they are recognised from the options, from a job
    /// enqueue and from a claim with a <c>ClaimPolicy</c>, so list one here only when a process sends plain messages
    /// to it without knowing it holds jobs. Default none.
    /// </summary>
    public IList<string> StoreQueues { get; } = new List<string>();

    /// <summary>
    /// How many times the broker takes one message back unacknowledged before dead-lettering it
    /// (<c>x-delivery-limit</c> of the quorum queues; RabbitMQ 3.x delivers it once more when the returns are
    /// connection losses): a message whose consumers keep crashing or losing their connection ends up in Converge's
    /// dead letters with reason <c>max-attempts-exceeded</c>. Handler failures are counted by Converge's own retry
    /// policy and do not use this up. Changing it for an existing queue requires deleting the queue. Default 20.
    /// </summary>
    public int DeliveryLimit { get; set; } = 20;

    /// <summary>
    /// The quorum queue (and the fanout exchange of the same name) that receives what the broker dead-letters; its
    /// consumer moves each message into the store's dead letters with the broker's reason. Default
    /// <c>converge.dead-letters</c>.
    /// </summary>
    public string DeadLetterQueue { get; set; } = "converge.dead-letters";

    /// <summary>Whether this process consumes <see cref="DeadLetterQueue"/> (every process may; they compete). Default <c>true</c>.</summary>
    public bool ConsumeDeadLetters { get; set; } = true;

    /// <summary>
    /// The stream (<c>x-queue-type: stream</c>) the event log is mirrored to, in position order, for consumer groups to
    /// read and replay; <c>null</c> keeps the log in the store only. Default <c>converge.log</c>.
    /// </summary>
    public string? LogStream { get; set; } = "converge.log";

    /// <summary>
    /// How long the stream keeps events (<c>x-max-age</c>); <c>null</c> (default) keeps them until removed by hand.
    /// Reads of events the stream no longer holds come from the store, which keeps every event.
    /// </summary>
    public TimeSpan? LogStreamMaxAge { get; set; }

    /// <summary>
    /// Deliveries the broker hands this process per queue before it acknowledges any (consumer prefetch). Higher keeps
    /// busy consumers fed; lower shares a queue more evenly between processes. Default 512: twice a queue's default
    /// batch, so the next batch arrives while one is being handled.
    /// </summary>
    public int PrefetchCount { get; set; } = 512;

    /// <summary>
    /// How long this process keeps consuming a queue that none of its workers claims from (and that has nothing
    /// claimed): after that it hands the deliveries it holds unclaimed back (through the outbox, so the attempt is not
    /// counted) and stops consuming until the next claim, so they go to processes that work the queue. A running
    /// worker claims at every poll, so this only affects processes that stopped working a queue. Default 10 s.
    /// </summary>
    public TimeSpan IdleConsumerTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Messages the outbox relay moves to the broker per batch (one claim, one store commit). Default 256.</summary>
    public int RelayBatchSize { get; set; } = 256;

    /// <summary>
    /// How often the outbox relay looks for due messages when nothing wakes it (it is woken at once by commits in this
    /// process and by the store's notifications). Delayed messages and retries are relayed when they fall due. Default 1 s.
    /// </summary>
    public TimeSpan RelayPollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How long the relay holds the outbox rows it is publishing; if the process dies meanwhile, another relay publishes
    /// them again once this passes (a duplicate the inbox absorbs): the longest a killed process delays what it was
    /// relaying. Must exceed <see cref="PublishTimeout"/> by the time the relay needs to remove a confirmed batch from
    /// the outbox. Default 15 s.
    /// </summary>
    public TimeSpan RelayLease { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// How long the relay waits for the broker to confirm a batch before handing it back to the outbox. Default 5 s;
    /// a healthy broker confirms a batch in milliseconds.
    /// </summary>
    public TimeSpan PublishTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long a claim that finds nothing waits for a delivery before it returns empty, so that callers that poll do
    /// not spin. Default 50 ms.
    /// </summary>
    public TimeSpan ClaimWait { get; set; } = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// How long a claim waits for messages it has just relayed from the outbox (or handed back to the broker) to be
    /// delivered. Default 2 s.
    /// </summary>
    public TimeSpan DeliveryWait { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>The first wait before connecting again after the broker was unreachable; doubled after each failure. Default 200 ms.</summary>
    public TimeSpan ReconnectDelay { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>The longest wait between attempts to reach the broker. Default 10 s.</summary>
    public TimeSpan MaxReconnectDelay { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How often the relay asks the broker again whether a queue that did not exist there has been declared by a
    /// consumer meanwhile. Default 5 s.
    /// </summary>
    public TimeSpan QueueCheckInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The clock that bounds waits for the broker's answers: deliveries to arrive (<see cref="ClaimWait"/>,
    /// <see cref="DeliveryWait"/>), publisher confirms (<see cref="PublishTimeout"/>), a consumer's cancellation. The
    /// broker answers in real time whatever clock the application runs on, so the default is the system clock and a
    /// claim returns promptly when a test fakes <c>ConvergeOptions.TimeProvider</c>. Everything the transport decides
    /// by time (leases, delayed messages, retries and reconnection backoff, polls, <see cref="IdleConsumerTimeout"/>,
    /// <see cref="QueueCheckInterval"/>) follows <c>ConvergeOptions.TimeProvider</c> instead.
    /// </summary>
#pragma warning disable RS0030 // The option's default, set where the transport is composed: the broker's answers take real time.
    public TimeProvider BrokerTimeProvider { get; set; } = TimeProvider.System;
#pragma warning restore RS0030

    /// <summary>The connection name the broker shows for this process. Default <c>converge</c>.</summary>
    public string ConnectionName { get; set; } = "converge";

    internal void Validate()
    {
        var errors = new List<string>();
        if (Uri is null)
        {
            errors.Add("RabbitMQ needs the broker's address: options.UseRabbitMq(new Uri(\"amqp://user:password@host:5672/\")).");
        }
        else if (Uri.Scheme is not ("amqp" or "amqps"))
        {
            errors.Add($"The RabbitMQ address '{Uri.GetLeftPart(UriPartial.Authority)}' must use amqp:// or amqps://.");
        }

        if (QueuePrefix.Length > 0 && !PrefixPattern().IsMatch(QueuePrefix))
        {
            errors.Add($"QueuePrefix '{QueuePrefix}' is not valid: use letters, digits, '.', '-', '_' and ':' (at most 50).");
        }

        if (DeliveryLimit is < 1 or > 1000)
        {
            errors.Add($"DeliveryLimit is {DeliveryLimit}; use 1 to 1000 (default 20).");
        }

        if (string.IsNullOrWhiteSpace(DeadLetterQueue) || !NamePattern().IsMatch(DeadLetterQueue))
        {
            errors.Add($"DeadLetterQueue '{DeadLetterQueue}' is not valid: use letters, digits, '.', '-', '_' and ':' (default converge.dead-letters).");
        }

        if (LogStream is not null && !NamePattern().IsMatch(LogStream))
        {
            errors.Add($"LogStream '{LogStream}' is not valid: use letters, digits, '.', '-', '_' and ':', or null to keep the log in the store only.");
        }

        if (LogStreamMaxAge is { } age && age < TimeSpan.FromSeconds(1))
        {
            errors.Add($"LogStreamMaxAge is {age}; use at least 1 second, or null to keep every event.");
        }

        if (BrokerTimeProvider is null)
        {
            errors.Add("BrokerTimeProvider is null; leave the default (the system clock) unless a test fakes the broker's waits.");
        }

        if (PrefetchCount is < 1 or > ushort.MaxValue)
        {
            errors.Add($"PrefetchCount is {PrefetchCount}; use 1 to {ushort.MaxValue} (default 512).");
        }

        if (RelayBatchSize is < 1 or > 10_000)
        {
            errors.Add($"RelayBatchSize is {RelayBatchSize}; use 1 to 10000 (default 256).");
        }

        foreach (var (name, value) in new[]
        {
            (nameof(RelayPollInterval), RelayPollInterval), (nameof(PublishTimeout), PublishTimeout), (nameof(ClaimWait), ClaimWait),
            (nameof(DeliveryWait), DeliveryWait), (nameof(ReconnectDelay), ReconnectDelay), (nameof(QueueCheckInterval), QueueCheckInterval),
            (nameof(IdleConsumerTimeout), IdleConsumerTimeout),
        })
        {
            if (value <= TimeSpan.Zero || value > TimeSpan.FromHours(1))
            {
                errors.Add($"{name} is {value}; use a positive duration of at most an hour.");
            }
        }

        if (MaxReconnectDelay < ReconnectDelay)
        {
            errors.Add($"MaxReconnectDelay ({MaxReconnectDelay}) is shorter than ReconnectDelay ({ReconnectDelay}); make it at least as long.");
        }

        if (RelayLease <= PublishTimeout)
        {
            errors.Add($"RelayLease ({RelayLease}) must be longer than PublishTimeout ({PublishTimeout}), or another relay publishes a batch again while it is being confirmed.");
        }

        foreach (var queue in Queues.Concat(StoreQueues).Where(q => !NamePattern().IsMatch(q ?? "")))
        {
            errors.Add($"The queue name '{queue}' in Queues or StoreQueues is not valid: use letters, digits, '.', '-', '_' and ':'.");
        }

        foreach (var queue in Queues.Intersect(StoreQueues, StringComparer.Ordinal))
        {
            errors.Add($"Queue '{queue}' is listed both in Queues (on the broker) and StoreQueues (in the store); keep one.");
        }

        if (errors.Count > 0)
        {
            throw new ArgumentException("RabbitMQ transport options are not valid: " + string.Join(" ", errors));
        }
    }

    [GeneratedRegex(@"^[A-Za-z0-9._:-]{1,50}\z")]
    private static partial Regex PrefixPattern();

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}\z")]
    private static partial Regex NamePattern();
}
