using System.Text.RegularExpressions;
using Converge.Contracts;
using Converge.Faults;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Runtime;

/// <summary>Everything Converge needs to run in one process. Validated once at start-up.</summary>
public sealed partial class ConvergeOptions
{
    readonly Dictionary<string, QueueOptions> _queues = new(StringComparer.Ordinal);
    readonly Dictionary<string, SubscriptionOptions> _groups = new(StringComparer.Ordinal);
    readonly Dictionary<Type, string> _routes = [];
    readonly List<HandlerRegistration> _handlers = [];
    readonly List<Action<IServiceCollection>> _serviceRegistrations = [];
    readonly List<Converge.Projections.ProjectionRegistration> _projections = [];

    readonly List<string> _sagaErrors = [];

    /// <summary>Creates options with Converge's own message types registered.</summary>
    public ConvergeOptions()
    {
        Messages.Register<SagaStepTimeout>(SagaStepTimeout.TypeName);
        Messages.Register<SagaStepFailed>(SagaStepFailed.TypeName);
        Messages.Register<SagaResumeRequested>(SagaResumeRequested.TypeName);
        Messages.Register<Degraded.DegradedAccessGranted>(Degraded.DegradedAccessGranted.TypeName);
        Messages.Register<Degraded.DegradedAccessConfirmed>(Degraded.DegradedAccessConfirmed.TypeName);
        Messages.Register<Degraded.DegradedAccessRevoked>(Degraded.DegradedAccessRevoked.TypeName);
    }

    /// <summary>The explicit type-name registry. Every message and event type must be registered.</summary>
    public MessageTypeRegistry Messages { get; } = new();

    /// <summary>Fault injection for tests and canaries. Off by default.</summary>
    public FaultPlanOptions Faults { get; } = new();

    internal SagaRegistry SagaRegistry { get; } = new();

    /// <summary>The serializer. Default: System.Text.Json with web defaults.</summary>
    public IMessageSerializer Serializer { get; set; } = new SystemTextJsonMessageSerializer();

    /// <summary>Largest body accepted, in bytes. Larger sends throw; larger received messages are dead-lettered. Default 256 KiB.</summary>
    public int MaxMessageSize { get; set; } = 256 * 1024;

    /// <summary>How often consumers look for work written by other processes. Default 500 ms.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>How long a claimed message stays invisible to others; renewed while it is being handled. Default 30 s.</summary>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long one message handler may run before its <see cref="CancellationToken"/> is cancelled and the attempt
    /// fails (a transient <see cref="TimeoutException"/>, retried like any failure). On SQLite a handler runs inside its
    /// batch's write transaction, so a slow handler holds every writer of the file: keep handlers short and move slow
    /// I/O to jobs. A handler that ignores cancellation for a quarter of the timeout more (at most 5 s) is abandoned:
    /// its batch is rolled back (releasing the write lock), its message's attempt is counted, the rest of the batch is
    /// handed back, and the call is left running while its worker claims nothing more until it returns (its slot stays
    /// taken, so hung calls never pile up and a message's handler never runs twice at once in one process); the queue's
    /// other workers (<see cref="QueueOptions.Concurrency"/>) and other processes take its messages. A handler that blocks its worker thread and never returns
    /// cannot be abandoned: its leases are no longer renewed, so another consumer receives the messages when they
    /// expire. Default <c>null</c>: <see cref="LeaseDuration"/>.
    /// </summary>
    public TimeSpan? HandlerTimeout { get; set; }

    internal TimeSpan EffectiveHandlerTimeout => HandlerTimeout ?? LeaseDuration;

    /// <summary>How long an abandoned handler's cancellation is given to take effect: a quarter of the timeout, at most 5 s.</summary>
    internal TimeSpan HandlerGrace => EffectiveHandlerTimeout / 4 < TimeSpan.FromSeconds(5) ? EffectiveHandlerTimeout / 4 : TimeSpan.FromSeconds(5);

    /// <summary>Retry policy for queue handlers and consumer groups.</summary>
    public RetryOptions Retry { get; } = new();

    /// <summary>
    /// How sagas re-send steps that fail or time out, and when they give up (become stuck); defaults for every saga.
    /// See <see cref="SagaRetryOptions"/>.
    /// </summary>
    public SagaRetryOptions SagaRetry { get; } = new();

    /// <summary>How long inbox records are kept for duplicate detection. Default 7 days.</summary>
    public TimeSpan InboxRetention { get; set; } = TimeSpan.FromDays(7);

    /// <summary>How often expired inbox records are deleted. Default 1 hour.</summary>
    public TimeSpan InboxCleanupInterval { get; set; } = TimeSpan.FromHours(1);

    /// <summary>
    /// How often the store's status (queue depths, the oldest ready message, dead letters, consumer-group lag, saga
    /// instances) is read for the <c>Converge</c> meter's gauges. Default 10 seconds. The gauges report the last
    /// reading and never query the store themselves; the store is read only while a meter listener (an OpenTelemetry
    /// <c>MeterProvider</c> with <c>AddMeter("Converge")</c>) observes them. The health checks reuse a reading no older
    /// than this and read the store themselves otherwise.
    /// </summary>
    public TimeSpan StatusInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Whether this process runs consumers. <c>false</c> makes a send-only process. Default <c>true</c>.</summary>
    public bool RunConsumers { get; set; } = true;

    /// <summary>
    /// The clock of every time-dependent behaviour: leases, retries, timeouts, polls, the transport's waits. Default
    /// <c>TimeProvider.System</c>; tests pass a fake one (<c>FakeTimeProvider</c>) and move it with <c>Advance</c>.
    /// </summary>
#pragma warning disable RS0030 // The composition root's default: everything else reads the clock set here.
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;
#pragma warning restore RS0030

    /// <summary>The random source for retry jitter. Default <see cref="SharedRandomSource"/>.</summary>
    public IRandomSource Random { get; set; } = SharedRandomSource.Instance;

    /// <summary>
    /// Where the runtime's loops (consumers, job workers, the scheduler of recurring jobs, projections, the status
    /// monitor) and the work they start run. Default <see cref="TaskScheduler.Default"/>, the thread pool. A
    /// deterministic simulation passes a scheduler that runs one piece of work at a time in an order it chooses; the
    /// loops' continuations return to the scheduler they started on.
    /// </summary>
    public TaskScheduler Scheduler { get; set; } = TaskScheduler.Default;

    /// <summary>Whether the loops run on a scheduler of their own (<see cref="Scheduler"/> is not the thread pool): their wake-ups then complete on the waking thread.</summary>
    internal bool OwnScheduler => Scheduler != TaskScheduler.Default;

    /// <summary>Starts <paramref name="work"/> on <see cref="Scheduler"/>, as <c>Task.Run</c> starts it on the thread pool.</summary>
    internal Task Run(Func<Task> work) =>
        Task.Factory.StartNew(work, CancellationToken.None, TaskCreationOptions.DenyChildAttach, Scheduler).Unwrap();

    /// <summary>Creates the store. Set by a provider's extension such as <c>UseSqlite</c>.</summary>
    public Func<StoreContext, IMessageStore>? StoreFactory { get; set; }

    /// <summary>
    /// Creates the transport that carries the store's queues on a broker; <c>null</c> (the default) keeps them in the
    /// store. Set by a transport's extension such as <c>UseRabbitMq</c>. The store still keeps the outbox, the inbox, the
    /// log, sagas and jobs; the process's job queues stay in the store (see <see cref="Transports.TransportedStore"/>).
    /// </summary>
    public Func<StoreContext, Transports.IMessageTransport>? TransportFactory { get; set; }

    /// <summary>
    /// Creates the store the runtime uses: the one <see cref="StoreFactory"/> makes, with the transport of
    /// <see cref="TransportFactory"/> in front when one is set. Read after every queue and job is registered.
    /// </summary>
    internal IMessageStore CreateStore(StoreContext context)
    {
        var store = StoreFactory!(context);
        if (TransportFactory is null)
        {
            return store;
        }

        return new Transports.TransportedStore(store, TransportFactory(context), Queues.Values.Where(q => q.RunsJobs).Select(q => q.Name));
    }

    /// <summary>Queues with handlers in this process, by name.</summary>
    public IReadOnlyDictionary<string, QueueOptions> Queues => _queues;

    /// <summary>Consumer groups in this process, by name.</summary>
    public IReadOnlyDictionary<string, SubscriptionOptions> ConsumerGroups => _groups;

    /// <summary>Which queue each message type is sent to by default.</summary>
    public IReadOnlyDictionary<Type, string> Routes => _routes;

    internal IReadOnlyList<HandlerRegistration> Handlers => _handlers;

    internal IReadOnlyList<Action<IServiceCollection>> ServiceRegistrations => _serviceRegistrations;

    internal IReadOnlyList<Converge.Projections.ProjectionRegistration> Projections => _projections;

    /// <summary>
    /// Run in the dead-lettering transaction after a queue message is dead-lettered: the hooks capabilities register
    /// (the saga protocol replies a failure to a saga whose command was dead-lettered), so that the runtime knows none
    /// of them. Registered by the composition root, <c>AddConverge</c>.
    /// </summary>
    internal List<DeadLetterHook> DeadLetterHooks { get; } = [];

    /// <summary>Configures <paramref name="queue"/> (created on first use).</summary>
    public ConvergeOptions Queue(string queue, Action<QueueOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        configure(GetQueue(queue));
        return this;
    }

    /// <summary>Configures consumer group <paramref name="group"/> (created on first use).</summary>
    public ConvergeOptions ConsumerGroup(string group, Action<SubscriptionOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        configure(GetGroup(group));
        return this;
    }

    /// <summary>Sends <typeparamref name="TMessage"/> to <paramref name="queue"/> unless a send names another queue.</summary>
    public ConvergeOptions Route<TMessage>(string queue)
    {
        ValidateName(queue, "queue");
        _routes[typeof(TMessage)] = queue;
        return this;
    }

    /// <summary>
    /// Handles <typeparamref name="TMessage"/> from <paramref name="queue"/> with <typeparamref name="THandler"/>,
    /// resolved from a new DI scope per message (registered as scoped unless already registered). Also routes the
    /// type to the queue when it has no route yet. One handler per message type per queue.
    /// </summary>
    public ConvergeOptions Handle<TMessage, THandler>(string queue)
        where THandler : class, IHandler<TMessage>
    {
        GetQueue(queue);
        _routes.TryAdd(typeof(TMessage), queue);
        _handlers.Add(new HandlerRegistration(queue, null, typeof(TMessage), typeof(THandler), HandlerInvoker.For<TMessage, THandler>()));
        _serviceRegistrations.Add(static services => services.AddScopedIfMissing<THandler>());
        return this;
    }

    /// <summary>
    /// Subscribes consumer group <paramref name="group"/> to <typeparamref name="TEvent"/> in the log. The group
    /// reads every event in order from its checkpoint; the checkpoint commits with the handler's writes.
    /// </summary>
    public ConvergeOptions Subscribe<TEvent, THandler>(string group, Action<SubscriptionOptions>? configure = null)
        where THandler : class, IHandler<TEvent>
    {
        var options = GetGroup(group);
        configure?.Invoke(options);
        _handlers.Add(new HandlerRegistration(null, group, typeof(TEvent), typeof(THandler), HandlerInvoker.For<TEvent, THandler>()));
        _serviceRegistrations.Add(static services => services.AddScopedIfMissing<THandler>());
        return this;
    }

    /// <summary>
    /// Runs version <paramref name="version"/> of projection <paramref name="name"/> with <typeparamref name="TProjection"/>
    /// (resolved from the services; registered as a singleton unless already registered). The version gets tables of
    /// its own and is built from position 0 beside the others; the first version built becomes live, later ones when
    /// switched (<c>converge projections switch</c>) or, with <see cref="Converge.Projections.ProjectionOptions.SwitchWhenBuilt"/>,
    /// by themselves. Needs a store on a database (SQLite or PostgreSQL). Register the live version and the one being
    /// built side by side while a new version is rolled out; drop the old one's registration once it is dropped.
    /// </summary>
    /// <exception cref="ArgumentException">The name is not lower-case letters, digits, '-' and '_', or the version is below 1.</exception>
    /// <exception cref="InvalidOperationException">That version of the projection is already registered.</exception>
    public ConvergeOptions AddProjection<TProjection>(string name, int version, Action<Converge.Projections.ProjectionOptions>? configure = null)
        where TProjection : class, Converge.Projections.IProjection
    {
        Converge.Projections.ProjectionNames.ValidateName(name);
        ArgumentOutOfRangeException.ThrowIfLessThan(version, 1);
        if (_projections.Any(p => p.Name == name && p.Version == version))
        {
            throw new InvalidOperationException($"Version {version} of projection '{name}' is already registered; a version has one implementation.");
        }

        var options = new Converge.Projections.ProjectionOptions();
        configure?.Invoke(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BatchSize, 1, "BatchSize");
        _projections.Add(new Converge.Projections.ProjectionRegistration(name, version, typeof(TProjection), options));
        _serviceRegistrations.Add(static services =>
        {
            if (!services.Any(d => d.ServiceType == typeof(TProjection)))
            {
                services.AddSingleton<TProjection>();
            }
        });
        return this;
    }

    /// <summary>
    /// Registers an orchestrated saga definition. Register every version whose instances may still be running; new
    /// instances start on the newest. All versions of one saga share its reply queue, <paramref name="queue"/>
    /// (default <c>sagas.NAME</c>, fixed by the first version registered), where replies and timeouts are handled;
    /// tune it with <see cref="Queue"/>. Every command and reply type the saga uses must be registered in
    /// <see cref="Messages"/>, and every command type needs a route (or a queue in its step).
    /// </summary>
    public ConvergeOptions AddSaga<TSaga>(string? queue = null) where TSaga : ISagaDefinition, new()
    {
        var model = new TSaga().Build();
        var replyQueue = SagaRegistry.Versions(model.Name).Count > 0 ? SagaRegistry.QueueOf(model.Name) : queue ?? "sagas." + model.Name;
        GetQueue(replyQueue).RecordsInbox = false;
        if (!SagaRegistry.Add(model, replyQueue))
        {
            _sagaErrors.Add($"Saga '{model.Name}' version {model.Version} is registered twice ({typeof(TSaga).Name}); give the new definition a higher Version.");
            return this;
        }

        foreach (var type in model.ReplyTypes.Append(typeof(SagaStepTimeout)).Append(typeof(SagaStepFailed)).Append(typeof(SagaResumeRequested)))
        {
            if (!_handlers.Any(h => h.Queue == replyQueue && h.MessageType == type))
            {
                _handlers.Add(new HandlerRegistration(replyQueue, null, type, typeof(SagaEngine), SagaInvoker.Instance));
            }
        }

        return this;
    }

    QueueOptions GetQueue(string queue)
    {
        ValidateName(queue, "queue");
        if (!_queues.TryGetValue(queue, out var options))
        {
            _queues[queue] = options = new QueueOptions(queue);
        }

        return options;
    }

    SubscriptionOptions GetGroup(string group)
    {
        ValidateName(group, "consumer group");
        if (!_groups.TryGetValue(group, out var options))
        {
            _groups[group] = options = new SubscriptionOptions(group);
        }

        return options;
    }

    internal static void ValidateName(string name, string what)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (!NamePattern().IsMatch(name))
        {
            throw new ArgumentException($"The {what} name '{name}' is not valid: use letters, digits, '.', '-', '_' and ':' (at most 200).", nameof(name));
        }
    }

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}\z")]
    private static partial Regex NamePattern();

    static readonly TimeSpan MaxInterval = TimeSpan.FromDays(30);

    internal IEnumerable<string> Validate()
    {
        if (StoreFactory is null)
        {
            yield return "No store is configured. Call options.UseSqlite(\"converge.db\") (package Converge.Sqlite) or another provider's Use... method.";
        }

        if (MaxMessageSize < 1024)
        {
            yield return $"MaxMessageSize is {MaxMessageSize} bytes; set at least 1024.";
        }

        if (LeaseDuration < TimeSpan.FromSeconds(1))
        {
            yield return $"LeaseDuration is {LeaseDuration}; set at least 1 second so a lease outlives one renewal round.";
        }

        if (HandlerTimeout is { } handlerTimeout && (handlerTimeout <= TimeSpan.Zero || handlerTimeout > MaxInterval))
        {
            yield return $"HandlerTimeout is {handlerTimeout}; set a positive duration of at most {MaxInterval.TotalDays} days, or null for LeaseDuration.";
        }

        if (PollInterval <= TimeSpan.Zero)
        {
            yield return $"PollInterval is {PollInterval}; set a positive interval (default 500 ms).";
        }

        if (InboxRetention <= TimeSpan.Zero || InboxCleanupInterval <= TimeSpan.Zero)
        {
            yield return "InboxRetention and InboxCleanupInterval must be positive (defaults 7 days and 1 hour).";
        }

        if (StatusInterval <= TimeSpan.Zero || StatusInterval > MaxInterval)
        {
            yield return $"StatusInterval is {StatusInterval}; set a positive interval of at most {MaxInterval.TotalDays} days (default 10 seconds).";
        }

        if (InboxCleanupInterval > MaxInterval || PollInterval > MaxInterval || LeaseDuration > MaxInterval || Retry.MaxDelay > MaxInterval)
        {
            yield return $"InboxCleanupInterval, PollInterval, LeaseDuration and Retry.MaxDelay must each be at most {MaxInterval.TotalDays} days (a timer limit).";
        }

        foreach (var error in _sagaErrors.Concat(Faults.Validate()).Concat(ValidateJobs()))
        {
            yield return error;
        }

        foreach (var error in Retry.Validate().Concat(SagaRetry.Validate()))
        {
            yield return error;
        }

        foreach (var queue in _queues.Values)
        {
            foreach (var error in queue.Validate())
            {
                yield return error;
            }
        }

        foreach (var handler in _handlers)
        {
            if (!Messages.IsRegistered(handler.MessageType))
            {
                yield return $"{handler.MessageType.Name} is handled by {handler.HandlerType.Name} but has no type name. Call options.Messages.Register<{handler.MessageType.Name}>(\"name\", version: 1).";
            }
        }

        foreach (var duplicate in _handlers.Where(h => h.Queue is not null).GroupBy(h => (h.Queue, h.MessageType)).Where(g => g.Count() > 1))
        {
            yield return $"Queue '{duplicate.Key.Queue}' has {duplicate.Count()} handlers for {duplicate.Key.MessageType.Name}; a command has one handler per queue. Publish an event to the log for several consumers.";
        }

        foreach (var duplicate in _handlers.Where(h => h.Group is not null).GroupBy(h => (h.Group, h.MessageType, h.HandlerType)).Where(g => g.Count() > 1))
        {
            yield return $"Consumer group '{duplicate.Key.Group}' subscribes {duplicate.Key.HandlerType.Name} to {duplicate.Key.MessageType.Name} {duplicate.Count()} times; each event would be handled that often. Subscribe once and use options.ConsumerGroup(\"{duplicate.Key.Group}\", g => ...) to change its settings.";
        }

        foreach (var group in _groups.Values.Where(g => g.BatchSize is < 1 or > 10_000))
        {
            yield return $"Consumer group '{group.Name}': BatchSize is {group.BatchSize}; use 1 to 10000.";
        }
    }
}

/// <summary>How a queue's batch keeps one message's failure from the other messages' writes.</summary>
public enum BatchIsolation
{
    /// <summary>
    /// Every message runs under a savepoint of its own: a failure undoes only its writes, and no handler runs twice for
    /// one attempt, so calls to outside services stay bounded by the retry limit. On PostgreSQL a message costs a round
    /// trip for its savepoint and inbox record besides its handler's own statements.
    /// </summary>
    PerMessage,

    /// <summary>
    /// The batch runs without savepoints, and its inbox records are one statement: on PostgreSQL a message costs only its
    /// handler's statements. When a handler fails (or a lease was lost), the whole batch is undone and run again with a
    /// savepoint per message, so the other handlers of that batch run a second time in the same attempt. Choose it for
    /// handlers whose effects are all written in the message's transaction.
    /// </summary>
    OnFailure,
}

/// <summary>Settings of one queue's consumer in this process.</summary>
public sealed class QueueOptions
{
    internal QueueOptions(string name) => Name = name;

    /// <summary>The queue name.</summary>
    public string Name { get; }

    int? _concurrency;

    /// <summary>
    /// Message queues: consumers working this queue at once in this process, each with a batch in a transaction of
    /// its own. Default 1: on SQLite writes are serialized, so more consumers only help handlers that wait on something
    /// else; on PostgreSQL more consumers overlap their commits, but batches that update the same rows (a customer's
    /// balance) then wait on each other's locks until they commit, so raise it for handlers whose writes do not
    /// collide. Job queues: jobs running at once in this process (they run outside transactions). Default 16.
    /// </summary>
    public int Concurrency
    {
        get => _concurrency ?? (RunsJobs ? 16 : 1);
        set => _concurrency = value;
    }


    /// <summary>Whether the queue runs jobs (<see cref="ConvergeOptions.Job{TJob, THandler}"/>) rather than message handlers.</summary>
    public bool RunsJobs { get; internal set; }

    /// <summary>
    /// Job queues: the most jobs of this queue running at once across every process on the store; <c>null</c>
    /// (default) for no limit beyond each process's <see cref="Concurrency"/>.
    /// </summary>
    public int? MaxInFlight { get; set; }

    /// <summary>
    /// Job queues: the most job starts per second across every process on the store (for a third-party API that
    /// allows N calls per second); <c>null</c> (default) for no limit.
    /// </summary>
    public RateLimit? RateLimit { get; set; }

    /// <summary>
    /// Job queues: of every this-many jobs a worker claims, one is the longest-waiting job whatever its priority, so
    /// low priorities keep moving while high ones keep arriving. Default 4 (a quarter); 0 makes priority strict.
    /// </summary>
    public int OldestFirstEvery { get; set; } = 4;

    /// <summary>
    /// Whether handled messages are recorded in the inbox. Off only for saga reply queues: a saga matches each reply
    /// to the command it awaits, so a redelivered reply is recognised (and logged) without an inbox record.
    /// </summary>
    internal bool RecordsInbox { get; set; } = true;

    /// <summary>
    /// Messages claimed, handled and committed together. Larger batches commit less often (much faster on a
    /// durable disk); a failure in one message never affects the others. Default 256.
    /// </summary>
    public int BatchSize { get; set; } = 256;

    /// <summary>
    /// Message queues: how a batch keeps one message's failure from the others' writes. Default
    /// <see cref="BatchIsolation.PerMessage"/>. Either way a failure undoes only the failing message's writes and records
    /// its attempt; they differ in what runs again.
    /// </summary>
    public BatchIsolation Isolation { get; set; } = BatchIsolation.PerMessage;

    internal IEnumerable<string> Validate()
    {
        if (Concurrency is < 1 or > 1024)
        {
            yield return $"Queue '{Name}': Concurrency is {Concurrency}; use 1 to 1024.";
        }

        if (BatchSize is < 1 or > 10_000)
        {
            yield return $"Queue '{Name}': BatchSize is {BatchSize}; use 1 to 10000.";
        }

        if (MaxInFlight is < 1)
        {
            yield return $"Queue '{Name}': MaxInFlight is {MaxInFlight}; use at least 1, or null for no limit.";
        }

        if (RateLimit is { } limit && (!(limit.PermitsPerSecond > 0) || double.IsInfinity(limit.PermitsPerSecond) || limit.Burst < 1))
        {
            yield return $"Queue '{Name}': RateLimit is {limit.PermitsPerSecond}/s with burst {limit.Burst}; use a positive rate and a burst of at least 1.";
        }

        if (OldestFirstEvery < 0)
        {
            yield return $"Queue '{Name}': OldestFirstEvery is {OldestFirstEvery}; use 0 (off) or more.";
        }

        if (!RunsJobs && (MaxInFlight is not null || RateLimit is not null))
        {
            yield return $"Queue '{Name}': MaxInFlight and RateLimit apply to job queues; register its jobs with options.Job<TJob, THandler>(\"{Name}\").";
        }
    }
}

/// <summary>Settings of one consumer group in this process.</summary>
public sealed class SubscriptionOptions
{
    internal SubscriptionOptions(string name) => Name = name;

    /// <summary>The group name.</summary>
    public string Name { get; }

    /// <summary>Events read and handled per transaction. Default 256.</summary>
    public int BatchSize { get; set; } = 256;

    /// <summary>
    /// What the group does with an event that still fails after <see cref="RetryOptions.MaxAttempts"/>: when
    /// <c>true</c> it is parked in the dead letters and the group moves on; when <c>false</c> (the default) the
    /// group stops at it and keeps retrying at the maximum backoff, so no event is skipped unless you say so.
    /// </summary>
    public bool ParkPoisonEvents { get; set; }

    /// <summary>
    /// Where the group starts the first time it runs, when it has no checkpoint yet: <see cref="GroupStart.Beginning"/>
    /// (the default: every event ever appended), <see cref="GroupStart.Head"/> (only events appended from then on) or
    /// <see cref="GroupStart.After"/> a position. Ignored once the group has a checkpoint; move one with
    /// <c>converge groups reset</c>.
    /// </summary>
    public GroupStart StartAt { get; set; } = GroupStart.Beginning;
}

/// <summary>Where a consumer group with no checkpoint starts reading the log.</summary>
public readonly record struct GroupStart
{
    GroupStart(long? position) => Position = position;

    /// <summary>The position after which the group starts; <c>null</c> for the head of the log when it first runs.</summary>
    public long? Position { get; }

    /// <summary>From the first event of the log.</summary>
    public static GroupStart Beginning => new(0);

    /// <summary>From the head of the log when the group first runs: events appended before are never handled by it.</summary>
    public static GroupStart Head => new(null);

    /// <summary>After <paramref name="position"/>: the event at <paramref name="position"/> + 1 is the first handled.</summary>
    public static GroupStart After(long position) =>
        position >= 0 ? new(position) : throw new ArgumentOutOfRangeException(nameof(position), position, "A log position is 0 or more.");

    /// <inheritdoc />
    public override string ToString() => Position is { } position ? (position == 0 ? "beginning" : $"after {position}") : "head";
}

/// <summary>What a store factory receives.</summary>
/// <param name="TimeProvider">The clock every store reading of "now" must use.</param>
/// <param name="Services">The application's services.</param>
public sealed record StoreContext(TimeProvider TimeProvider, IServiceProvider Services);

internal sealed record HandlerRegistration(string? Queue, string? Group, Type MessageType, Type HandlerType, HandlerInvoker Invoker);

internal abstract class HandlerInvoker
{
    public static HandlerInvoker For<TMessage, THandler>() where THandler : class, IHandler<TMessage> => new Typed<TMessage, THandler>();

    public abstract Task InvokeAsync(IServiceProvider services, object message, MessageContext context, CancellationToken cancellationToken);

    sealed class Typed<TMessage, THandler> : HandlerInvoker where THandler : class, IHandler<TMessage>
    {
        public override Task InvokeAsync(IServiceProvider services, object message, MessageContext context, CancellationToken cancellationToken) =>
            services.GetRequiredService<THandler>().HandleAsync((TMessage)message, context, cancellationToken);
    }
}

internal static class ServiceCollectionHelpers
{
    public static void AddScopedIfMissing<T>(this IServiceCollection services) where T : class
    {
        if (!services.Any(d => d.ServiceType == typeof(T)))
        {
            services.AddScoped<T>();
        }
    }
}
