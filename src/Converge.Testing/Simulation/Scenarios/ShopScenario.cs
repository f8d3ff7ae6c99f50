using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing.Conformance;
using Converge.Verification;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Testing.Simulation.Scenarios;

/// <summary>
/// The shop's orders as a saga: reserve stock (undone by releasing it), charge the card (undone by refunding it), ship
/// (the pivot). Orders named <c>broke-*</c> are refused their charge and must be undone. The participants keep each
/// effect in their handler's transaction; judged per order from those records: reserve, charge, ship, or reserve then
/// release, each once.
/// </summary>
/// <param name="planted">
/// <see cref="PlantedBug.EffectOutsideTransaction"/>: the participants keep effects the moment they run, outside the
/// transaction that records the message as handled, so a crash or a redelivery repeats one (the simulation must say so).
/// </param>
public sealed class ShopScenario(PlantedBug planted = PlantedBug.None) : SimulationScenario
{
    /// <summary>The orders placed; those named <c>broke-*</c> are refused their charge.</summary>
    public static IReadOnlyList<string> Orders { get; } = ["o-1", "o-2", "o-3", "o-4", "o-5", "broke-6", "o-7", "broke-8"];

    static readonly (string Effect, string? Compensation)[] Steps = [("reserve", "release"), ("charge", "refund"), ("ship", null)];

    readonly System.Collections.Concurrent.ConcurrentQueue<string> _carelessEffects = new();

    /// <summary>The bug planted, if any.</summary>
    public PlantedBug Planted => planted;

    /// <summary>The effects kept outside the handlers' transactions when <see cref="PlantedBug.EffectOutsideTransaction"/> is planted, in the order they were kept.</summary>
    public IReadOnlyList<string> CarelessEffects => [.. _carelessEffects];

    /// <inheritdoc />
    public override string Name => "shop";

    /// <inheritdoc />
    public override void Configure(ConvergeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ScenarioParts.Timings(options, quickRetries: false);
        options.Messages.Register<Reserve>("shop.reserve").Register<Reserved>("shop.reserved").Register<Release>("shop.release")
            .Register<Released>("shop.released").Register<Charge>("shop.charge").Register<Charged>("shop.charged")
            .Register<ChargeRefused>("shop.charge-refused").Register<Refund>("shop.refund").Register<Refunded>("shop.refunded")
            .Register<Ship>("shop.ship").Register<Shipped>("shop.shipped");
        options.Handle<Reserve, Desk>("stock").Handle<Release, Desk>("stock").Handle<Charge, Desk>("payments")
            .Handle<Refund, Desk>("payments").Handle<Ship, Desk>("shipping");
        options.Queue("stock", q => q.Concurrency = 2).Queue("payments", q => q.Concurrency = 2);
        options.AddSaga<OrderSaga>();
    }

    /// <inheritdoc />
    public override void ConfigureServices(IServiceCollection services) => services.AddSingleton(this).AddSingleton<Desk>();

    /// <inheritdoc />
    public override async Task PlaceAsync(IServiceProvider services, IMessageStore store, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(services);
        var sagas = services.GetRequiredService<ISagaClient>();
        foreach (var order in Orders)
        {
            // Idempotent: an order already placed is left as it is.
            await sagas.StartAsync("shop-order", order, new Order { Id = order }, cancellationToken);
        }
    }

    /// <inheritdoc />
    public override async Task<bool> SettledAsync(IMessageStore store, CancellationToken cancellationToken)
    {
        foreach (var order in Orders)
        {
            if (await store.SagaQueries().GetSagaAsync(order, cancellationToken) is not { State: SagaState.Completed or SagaState.Compensated })
            {
                return false;
            }
        }

        return true;
    }

    /// <inheritdoc />
    public override async Task<IReadOnlyList<string>> JudgeAsync(IMessageStore store, CancellationToken cancellationToken)
    {
        var states = new Dictionary<string, SagaState>(StringComparer.Ordinal);
        foreach (var order in Orders)
        {
            if (await store.SagaQueries().GetSagaAsync(order, cancellationToken) is { } saga)
            {
                states[order] = saga.State;
            }
        }

        return Judge(states, planted == PlantedBug.EffectOutsideTransaction ? CarelessEffects : Effects.CommittedKeys(store));
    }

    /// <summary>
    /// What is wrong with the orders, from their sagas' <paramref name="states"/> and the participants' records
    /// (<paramref name="effects"/>, as <c>order:effect</c> in the order they were kept): every order's saga ended as
    /// it should (completed; compensated when its charge is refused), its steps kept once each and in order, or the
    /// steps done then undone in reverse.
    /// </summary>
    public static List<string> Judge(IReadOnlyDictionary<string, SagaState> states, IReadOnlyList<string> effects)
    {
        ArgumentNullException.ThrowIfNull(states);
        ArgumentNullException.ThrowIfNull(effects);
        var violations = new List<string>();
        foreach (var order in Orders)
        {
            var done = effects.Where(e => e.StartsWith(order + ":", StringComparison.Ordinal)).Select(e => e[(order.Length + 1)..]).ToList();
            SagaState? state = states.TryGetValue(order, out var found) ? found : null;
            violations.AddRange(Invariants.SagaOutcome(order, state, done, Steps));
            var want = order.StartsWith("broke-", StringComparison.Ordinal) ? SagaState.Compensated : SagaState.Completed;
            if (state is { } ended && ended != want)
            {
                violations.Add($"{order}: saga {ended}, expected {want}");
            }
        }

        return violations;
    }

    /// <summary>Keeps one effect as the scenario's participants do (see the class summary).</summary>
    Task KeepAsync(MessageContext context, string effect, CancellationToken cancellationToken)
    {
        if (planted == PlantedBug.EffectOutsideTransaction)
        {
            _carelessEffects.Enqueue(effect);
            return Task.CompletedTask;
        }

        return Effects.WriteAsync(context, context.Queue!, effect, cancellationToken);
    }

    /// <summary>The saga of one order.</summary>
    public sealed class OrderSaga : SagaDefinition<Order>
    {
        /// <inheritdoc />
        public override string Name => "shop-order";

        /// <inheritdoc />
        protected override void Define(SagaBuilder<Order> saga)
        {
            ArgumentNullException.ThrowIfNull(saga);
            saga.Compensatable("reserve").Send(d => new Reserve(d.Id)).OnReply<Reserved>().CompensateWith(d => new Release(d.Id)).OnCompensated<Released>();
            saga.Compensatable("charge").Send(d => new Charge(d.Id)).OnReply<Charged>().FailOn<ChargeRefused>(r => r.Reason)
                .CompensateWith(d => new Refund(d.Id)).OnCompensated<Refunded>();
            saga.Pivot("ship").Send(d => new Ship(d.Id)).OnReply<Shipped>();
        }
    }

    /// <summary>An order's saga data.</summary>
    public sealed class Order
    {
        /// <summary>The order's id, which is also its saga's transaction id.</summary>
        public string Id { get; set; } = "";
    }

    /// <summary>The participants: stock, payments and shipping.</summary>
    public sealed class Desk(ShopScenario scenario) : IHandler<Reserve>, IHandler<Release>, IHandler<Charge>, IHandler<Refund>, IHandler<Ship>
    {
        async Task DoAsync(MessageContext context, string order, string effect, object reply, CancellationToken cancellationToken)
        {
            await scenario.KeepAsync(context, order + ":" + effect, cancellationToken);
            await context.ReplyAsync(reply, cancellationToken);
        }

        /// <inheritdoc />
        public Task HandleAsync(Reserve message, MessageContext context, CancellationToken cancellationToken) => DoAsync(context, message.Order, "reserve", new Reserved(message.Order), cancellationToken);

        /// <inheritdoc />
        public Task HandleAsync(Release message, MessageContext context, CancellationToken cancellationToken) => DoAsync(context, message.Order, "release", new Released(message.Order), cancellationToken);

        /// <inheritdoc />
        public async Task HandleAsync(Charge message, MessageContext context, CancellationToken cancellationToken)
        {
            if (message.Order.StartsWith("broke-", StringComparison.Ordinal))
            {
                await context.ReplyAsync(new ChargeRefused(message.Order, "card declined"), cancellationToken);
                return;
            }

            await DoAsync(context, message.Order, "charge", new Charged(message.Order), cancellationToken);
        }

        /// <inheritdoc />
        public Task HandleAsync(Refund message, MessageContext context, CancellationToken cancellationToken) => DoAsync(context, message.Order, "refund", new Refunded(message.Order), cancellationToken);

        /// <inheritdoc />
        public Task HandleAsync(Ship message, MessageContext context, CancellationToken cancellationToken) => DoAsync(context, message.Order, "ship", new Shipped(message.Order), cancellationToken);
    }

#pragma warning disable CS1591 // The shop's messages: their names say what they are.
    public sealed record Reserve(string Order);
    public sealed record Reserved(string Order);
    public sealed record Release(string Order);
    public sealed record Released(string Order);
    public sealed record Charge(string Order);
    public sealed record Charged(string Order);
    public sealed record ChargeRefused(string Order, string Reason);
    public sealed record Refund(string Order);
    public sealed record Refunded(string Order);
    public sealed record Ship(string Order);
    public sealed record Shipped(string Order);
#pragma warning restore CS1591
}

/// <summary>A bug a scenario can plant, for a test that the simulation finds it.</summary>
public enum PlantedBug
{
    /// <summary>No bug.</summary>
    None,

    /// <summary>A participant keeps its effect outside the transaction that records its message as handled.</summary>
    EffectOutsideTransaction,
}
