using Converge.Faults;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;

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

/// <summary>reserve (compensatable) -> charge (compensatable) -> ship (pivot) -> notify (retriable).</summary>
public sealed class OrderSaga : SagaDefinition<OrderData>
{
    public static TimeSpan StepTimeout { get; set; } = TimeSpan.FromSeconds(30);

    public override string Name => "order";

    protected override void Define(SagaBuilder<OrderData> saga)
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
        saga.Retriable("notify")
            .Send(d => new Notify(d.Order))
            .OnReply<Notified>()
            .FailOn<Refused>(r => r.Reason)
            .RetryDelay(TimeSpan.FromMilliseconds(10))
            .Timeout(StepTimeout);
        saga.WhenCompleted((c, _) => c.ExecuteAsync("INSERT INTO outcomes (tx, outcome) VALUES (@tx, 'completed')", ("@tx", c.TransactionId)).AsTask())
            .WhenCompensated((c, _) => c.ExecuteAsync("INSERT INTO outcomes (tx, outcome) VALUES (@tx, 'compensated')", ("@tx", c.TransactionId)).AsTask());
    }
}

/// <summary>What the participants did, per order: a recorded effect per command, deduplicated by the inbox.</summary>
public sealed class Participants
{
    readonly object _lock = new();
    readonly List<(string Order, string Command)> _effects = [];

    /// <summary>Orders whose step (by command name) is refused with a failure reply.</summary>
    public HashSet<(string Order, string Command)> Refuse { get; } = [];

    /// <summary>Commands that are handled but never answered (the participant is slow or lost the reply).</summary>
    public HashSet<(string Order, string Command)> Silent { get; } = [];

    public void Record(string order, string command)
    {
        lock (_lock)
        {
            _effects.Add((order, command));
        }
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
        if (state.Refuse.Contains((order, command)))
        {
            await context.ReplyAsync(new Refused(order, command + " refused"));
            return;
        }

        state.Record(order, command);
        if (!state.Silent.Contains((order, command)))
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
    public static void RegisterMessages(ConvergeOptions o)
    {
        o.Messages.Register<Reserve>("test.reserve").Register<Reserved>("test.reserved").Register<Refused>("test.refused")
            .Register<Release>("test.release").Register<Released>("test.released")
            .Register<Charge>("test.charge").Register<Charged>("test.charged").Register<Refund>("test.refund").Register<Refunded>("test.refunded")
            .Register<Ship>("test.ship").Register<Shipped>("test.shipped").Register<Notify>("test.notify").Register<Notified>("test.notified");
    }

    public static void Configure(ConvergeOptions o)
    {
        RegisterMessages(o);
        o.Handle<Reserve, Participant>("credit").Handle<Release, Participant>("credit")
            .Handle<Charge, Participant>("payments").Handle<Refund, Participant>("payments")
            .Handle<Ship, Participant>("shipping").Handle<Notify, Participant>("notify");
    }

    public static async Task<ConvergeTestHost> StartAsync(Participants participants, Action<ConvergeOptions>? configure = null, Action<IServiceCollection>? services = null)
    {
        var host = await ConvergeTestHost.StartAsync(
            o =>
            {
                Configure(o);
                o.AddSaga<OrderSaga>();
                configure?.Invoke(o);
            },
            s =>
            {
                s.AddSingleton(participants);
                s.AddSingleton<Participant>();
                services?.Invoke(s);
            });
        await using var transaction = await host.Store.BeginAsync(CancellationToken.None);
        await transaction.ExecuteAsync("CREATE TABLE IF NOT EXISTS outcomes (tx TEXT NOT NULL, outcome TEXT NOT NULL)", [], CancellationToken.None);
        await transaction.CommitAsync();
        return host;
    }

    public static async Task<IReadOnlyList<string>> KindsAsync(ConvergeTestHost host, string tx) =>
        [.. (await host.Store.ReadSagaLogAsync(tx, CancellationToken.None)).Select(e => e.Step is null ? e.Kind : $"{e.Kind}:{e.Step}")];
}
