using Converge.Contracts;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests.Sagas;

public sealed record Reserve(string Order, decimal Amount);
public sealed record Reserved(string Order);
public sealed record Refused(string Order, string Reason);
public sealed record Release(string Order);
public sealed record Released(string Order);
public sealed record Charge(string Order, decimal Amount);
public sealed record Charged(string Order, string PaymentId);
public sealed record Refund(string Order);
public sealed record Refunded(string Order);
public sealed record Ship(string Order);
public sealed record Shipped(string Order, string Tracking);
public sealed record Notify(string Order);
public sealed record Notified(string Order);

public sealed class OrderData
{
    public string Order { get; set; } = "";
    public decimal Amount { get; set; }
    public string? PaymentId { get; set; }
    public string? Tracking { get; set; }
}

/// <summary>
/// The order process, declared once for every version: reserve (compensatable) -> charge (compensatable) ->
/// ship (pivot) [-> notify (retriable)]. Every step times out after <see cref="StepTimeout"/>; tests that need the
/// timeout to fire run on a <see cref="FakeTimeProvider"/> and advance it past this.
/// </summary>
public static class OrderSteps
{
    public static TimeSpan StepTimeout { get; } = TimeSpan.FromSeconds(30);

    public static void Define(SagaBuilder<OrderData> saga, bool notify, string outcome)
    {
        saga.Compensatable("reserve")
            .Send(d => new Reserve(d.Order, d.Amount))
            .OnReply<Reserved>()
            .FailOn<Refused>(r => r.Reason)
            .CompensateWith(d => new Release(d.Order))
            .OnCompensated<Released>()
            .Timeout(StepTimeout);
        saga.Compensatable("charge")
            .Send(d => new Charge(d.Order, d.Amount))
            .OnReply<Charged>((d, r) => d.PaymentId = r.PaymentId)
            .FailOn<Refused>(r => r.Reason)
            .CompensateWith(d => new Refund(d.Order))
            .OnCompensated<Refunded>()
            .Timeout(StepTimeout);
        saga.Pivot("ship")
            .Send(d => new Ship(d.Order))
            .OnReply<Shipped>((d, r) => d.Tracking = r.Tracking)
            .FailOn<Refused>(r => r.Reason)
            .Timeout(StepTimeout);
        if (notify)
        {
            saga.Retriable("notify")
                .Send(d => new Notify(d.Order))
                .OnReply<Notified>()
                .FailOn<Refused>(r => r.Reason)
                .RetryDelay(TimeSpan.FromMilliseconds(10))
                .Timeout(StepTimeout);
        }

        saga.WhenCompleted((c, _) => ShopSaga.RecordOutcomeAsync(c, outcome + "completed"))
            .WhenCompensated((c, _) => ShopSaga.RecordOutcomeAsync(c, outcome + "compensated"));
    }
}

/// <summary>Version 1: reserve -> charge -> ship -> notify.</summary>
public sealed class OrderSaga : SagaDefinition<OrderData>
{
    public override string Name => "order";

    protected override void Define(SagaBuilder<OrderData> saga) => OrderSteps.Define(saga, notify: true, outcome: "");
}

/// <summary>Version 2 of the same saga: notify is dropped; its end hooks record "v2-completed" / "v2-compensated".</summary>
public sealed class OrderSagaV2 : SagaDefinition<OrderData>
{
    public override string Name => "order";

    public override int Version => 2;

    protected override void Define(SagaBuilder<OrderData> saga) => OrderSteps.Define(saga, notify: false, outcome: "v2-");
}

/// <summary>What the participants did, per order: a recorded effect per command, deduplicated by the inbox.</summary>
public sealed class Participants
{
    readonly object _lock = new();
    readonly List<(string Order, string Command)> _effects = [];
    readonly Dictionary<(string Order, string Command), int> _refuse = [];
    readonly Dictionary<(string Order, string Command), int> _silent = [];

    /// <summary>The next <paramref name="times"/> <paramref name="command"/>s of <paramref name="order"/> are refused with a failure reply (no effect).</summary>
    public Participants Refuse(string order, string command, int times = int.MaxValue)
    {
        lock (_lock)
        {
            _refuse[(order, command)] = times;
        }

        return this;
    }

    /// <summary>The next <paramref name="times"/> <paramref name="command"/>s of <paramref name="order"/> take effect but are never answered.</summary>
    public Participants Silence(string order, string command, int times = int.MaxValue)
    {
        lock (_lock)
        {
            _silent[(order, command)] = times;
        }

        return this;
    }

    /// <summary>Refuse compensations with the step's own failure type (<see cref="Refused"/>) instead of the generic failure reply.</summary>
    public bool RefuseCompensationsWithStepFailureType { get; set; }

    /// <summary>Decides how to answer one command, and records its effect unless it is refused.</summary>
    internal (bool Refused, bool Silent) Handle(string order, string command)
    {
        lock (_lock)
        {
            if (Take(_refuse, (order, command)))
            {
                return (true, false);
            }

            _effects.Add((order, command));
            return (false, Take(_silent, (order, command)));
        }
    }

    static bool Take(Dictionary<(string, string), int> counts, (string, string) key)
    {
        if (!counts.TryGetValue(key, out var left) || left <= 0)
        {
            return false;
        }

        counts[key] = left == int.MaxValue ? left : left - 1;
        return true;
    }

    public IReadOnlyList<string> EffectsOf(string order)
    {
        lock (_lock)
        {
            return [.. _effects.Where(e => e.Order == order).Select(e => e.Command)];
        }
    }
}

public sealed class Participant(Participants state) :
    IHandler<Reserve>, IHandler<Release>, IHandler<Charge>, IHandler<Refund>, IHandler<Ship>, IHandler<Notify>
{
    async Task Answer(MessageContext context, string order, string command, object reply)
    {
        var (refused, silent) = state.Handle(order, command);
        if (refused && command is "release" or "refund" && !state.RefuseCompensationsWithStepFailureType)
        {
            // A compensation has no failure type of its own: the participant says it failed with the generic reply.
            await context.ReplyFailureAsync(command + " refused");
        }
        else if (refused)
        {
            await context.ReplyAsync(new Refused(order, command + " refused"));
        }
        else if (!silent)
        {
            await context.ReplyAsync(reply);
        }
    }

    public Task HandleAsync(Reserve message, MessageContext context, CancellationToken cancellationToken) => Answer(context, message.Order, "reserve", new Reserved(message.Order));
    public Task HandleAsync(Release message, MessageContext context, CancellationToken cancellationToken) => Answer(context, message.Order, "release", new Released(message.Order));
    public Task HandleAsync(Charge message, MessageContext context, CancellationToken cancellationToken) => Answer(context, message.Order, "charge", new Charged(message.Order, "pay-" + message.Order));
    public Task HandleAsync(Refund message, MessageContext context, CancellationToken cancellationToken) => Answer(context, message.Order, "refund", new Refunded(message.Order));
    public Task HandleAsync(Ship message, MessageContext context, CancellationToken cancellationToken) => Answer(context, message.Order, "ship", new Shipped(message.Order, "track-" + message.Order));
    public Task HandleAsync(Notify message, MessageContext context, CancellationToken cancellationToken) => Answer(context, message.Order, "notify", new Notified(message.Order));
}

public static class ShopSaga
{
    public const string Queue = "sagas.order";

    const string CreateOutcomes = "CREATE TABLE IF NOT EXISTS outcomes (tx TEXT NOT NULL, outcome TEXT NOT NULL)";

    public static void RegisterMessages(ConvergeOptions o)
    {
        o.Messages.Register<Reserve>("test.reserve").Register<Reserved>("test.reserved").Register<Refused>("test.refused")
            .Register<Release>("test.release").Register<Released>("test.released")
            .Register<Charge>("test.charge").Register<Charged>("test.charged").Register<Refund>("test.refund").Register<Refunded>("test.refunded")
            .Register<Ship>("test.ship").Register<Shipped>("test.shipped").Register<Notify>("test.notify").Register<Notified>("test.notified");
    }

    /// <summary>Registers the messages and the participants, except those on <paramref name="without"/> (whose commands are only routed, so they wait on their queue).</summary>
    public static void Configure(ConvergeOptions o, params string[] without)
    {
        RegisterMessages(o);
        if (without.Contains("credit"))
        {
            o.Route<Reserve>("credit").Route<Release>("credit");
        }
        else
        {
            o.Handle<Reserve, Participant>("credit").Handle<Release, Participant>("credit");
        }

        if (without.Contains("payments"))
        {
            o.Route<Charge>("payments").Route<Refund>("payments");
        }
        else
        {
            o.Handle<Charge, Participant>("payments").Handle<Refund, Participant>("payments");
        }

        if (without.Contains("shipping"))
        {
            o.Route<Ship>("shipping");
        }
        else
        {
            o.Handle<Ship, Participant>("shipping");
        }

        if (without.Contains("notify"))
        {
            o.Route<Notify>("notify");
        }
        else
        {
            o.Handle<Notify, Participant>("notify");
        }
    }

    /// <summary>
    /// Starts a host with the participants and the saga: <paramref name="sagas"/> registers the definitions (default:
    /// <see cref="OrderSaga"/> only); <paramref name="without"/> names participant queues left without a consumer.
    /// </summary>
    public static async Task<ConvergeTestHost> StartAsync(
        Participants participants,
        Action<ConvergeOptions>? configure = null,
        Action<IServiceCollection>? services = null,
        Action<ConvergeOptions>? sagas = null,
        string[]? without = null)
    {
        var host = await ConvergeTestHost.StartAsync(
            o =>
            {
                Configure(o, without ?? []);
                if (sagas is null)
                {
                    o.AddSaga<OrderSaga>();
                }
                else
                {
                    sagas(o);
                }

                configure?.Invoke(o);
            },
            s =>
            {
                s.AddSingleton(participants);
                s.AddSingleton<Participant>();
                services?.Invoke(s);
            });
        await using var transaction = await host.Store.BeginAsync(CancellationToken.None);
        await transaction.ExecuteAsync(CreateOutcomes, [], CancellationToken.None);
        await transaction.CommitAsync();
        return host;
    }

    /// <summary>The end hooks' write, in the saga's transaction (creating the table first, for a host that restarts on a store).</summary>
    public static async Task RecordOutcomeAsync(SagaContext context, string outcome)
    {
        await context.ExecuteAsync(CreateOutcomes);
        await context.ExecuteAsync("INSERT INTO outcomes (tx, outcome) VALUES (@tx, @outcome)", ("@tx", context.TransactionId), ("@outcome", outcome));
    }

    /// <summary>The outcomes recorded by the end hooks for <paramref name="tx"/>, in order.</summary>
    public static async Task<IReadOnlyList<string>> OutcomesAsync(ConvergeTestHost host, string tx)
    {
        await using var connection = ((SqliteMessageStore)(host.Store is RacingStore racing ? racing.Inner : host.Store)).OpenConnection();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT outcome FROM outcomes WHERE tx = $tx ORDER BY rowid";
        command.Parameters.AddWithValue("$tx", tx);
        var outcomes = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            outcomes.Add(reader.GetString(0));
        }

        return outcomes;
    }

    public static async Task<IReadOnlyList<string>> KindsAsync(ConvergeTestHost host, string tx) =>
        [.. (await host.Store.SagaQueries().ReadSagaLogAsync(tx, CancellationToken.None)).Select(e => e.Step is null ? e.Kind : $"{e.Kind}:{e.Step}")];

    public static Task<IReadOnlyList<SagaLogEntry>> LogAsync(ConvergeTestHost host, string tx) => host.Store.SagaQueries().ReadSagaLogAsync(tx, CancellationToken.None).AsTask();

    /// <summary>Awaits <paramref name="condition"/>, checking again after short pauses; fails after 30 seconds with <paramref name="what"/>.</summary>
    public static Task WaitUntilAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null) => Eventually.UntilAsync(condition, what, timeout);

    /// <summary>Waits until the saga log of <paramref name="tx"/> has an entry matching <paramref name="match"/>; returns the log.</summary>
    public static async Task<IReadOnlyList<SagaLogEntry>> WaitForLogAsync(ConvergeTestHost host, string tx, Func<SagaLogEntry, bool> match, string what)
    {
        IReadOnlyList<SagaLogEntry> log = [];
        await WaitUntilAsync(async () => (log = await LogAsync(host, tx)).Any(match), $"saga '{tx}' to log {what}; log so far: {string.Join(", ", log.Select(e => e.Kind + ":" + e.Step))}");
        return log;
    }

    /// <summary>Waits until the message <paramref name="messageId"/> of <paramref name="tx"/> was handled (its consumer's inbox has it).</summary>
    public static Task WaitForFlowHandledAsync(ConvergeTestHost host, string tx, Guid messageId) =>
        WaitUntilAsync(
            async () => (await host.Store.Queries().ReadFlowAsync(tx, CancellationToken.None)).Any(i => i.MessageId == messageId && i.Status == "handled"),
            $"message {messageId:N} of '{tx}' to be handled");

    /// <summary>
    /// Moves the manual clock and wakes every queue's consumer, so a consumer that went back to sleep on the old
    /// time looks again at once.
    /// </summary>
    public static void Advance(ConvergeTestHost host, FakeTimeProvider time, TimeSpan by)
    {
        time.Advance(by);
        foreach (var queue in host.Options.Queues.Keys)
        {
            host.Store.Signals.Queue(queue).Ring();
        }
    }

    /// <summary>Delivers <paramref name="reply"/> to the saga as a participant's reply to <paramref name="command"/> would arrive.</summary>
    public static async Task<Guid> DeliverReplyAsync<T>(ConvergeTestHost host, string tx, string step, Guid command, T reply, Guid? messageId = null, string queue = Queue) where T : notnull
    {
        var options = host.Options;
        var envelope = new Envelope
        {
            MessageId = messageId ?? Guid.CreateVersion7(),
            MessageType = options.Messages.GetName(typeof(T)),
            CorrelationId = tx,
            CausationId = command,
            SentAt = options.TimeProvider.GetUtcNow(),
            Headers = new Dictionary<string, string> { [SagaHeaders.Step] = step },
            Body = options.Serializer.Serialize(reply, typeof(T)),
        };
        await using var transaction = await host.Store.BeginAsync(CancellationToken.None);
        await transaction.EnqueueAsync(new OutgoingMessage(queue, envelope), CancellationToken.None);
        await transaction.CommitAsync();
        return envelope.MessageId;
    }

    /// <summary>The id of the command a step sent (the <paramref name="nth"/> sending, from 1).</summary>
    public static async Task<Guid> CommandIdAsync(ConvergeTestHost host, string tx, string step, int nth = 1, string kind = SagaLogKinds.CommandSent) =>
        (await LogAsync(host, tx)).Where(e => e.Kind == kind && e.Step == step).Skip(nth - 1).First().MessageId!.Value;
}
