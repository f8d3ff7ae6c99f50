using Converge.Choreography;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing;
using Converge.Tests.Sagas;

namespace Converge.Tests.Choreography;

public sealed record PlaceOrder(string Order);
public sealed record ReserveStock(string Order);
public sealed record OrderPlaced(string Order);
public sealed record ChargeCard(string Order);

public sealed class PlaceOrderHandler : IHandler<PlaceOrder>
{
    public async Task HandleAsync(PlaceOrder message, MessageContext context, CancellationToken cancellationToken)
    {
        await context.SendAsync(new ReserveStock(message.Order), cancellationToken: cancellationToken);
        await context.PublishAsync("order-" + message.Order, new OrderPlaced(message.Order), cancellationToken: cancellationToken);
    }
}

public sealed class ReserveStockHandler : IHandler<ReserveStock>
{
    public Task HandleAsync(ReserveStock message, MessageContext context, CancellationToken cancellationToken) => Task.CompletedTask;
}

public sealed class BillingHandler : IHandler<OrderPlaced>
{
    public async Task HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken) =>
        await context.SendAsync(new ChargeCard(message.Order), cancellationToken: cancellationToken);
}

public sealed class ChargeCardHandler : IHandler<ChargeCard>
{
    public Task HandleAsync(ChargeCard message, MessageContext context, CancellationToken cancellationToken) => Task.CompletedTask;
}

public sealed class FlowViewTests
{
    static readonly DateTimeOffset T0 = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);

    [Fact]
    public async Task A_command_its_command_and_event_and_the_command_a_consumer_group_sent_form_a_tree_in_causal_order()
    {
        await using var host = await ConvergeTestHost.StartAsync(o =>
        {
            o.Messages.Register<PlaceOrder>("flow.place-order").Register<ReserveStock>("flow.reserve-stock")
                .Register<OrderPlaced>("flow.order-placed").Register<ChargeCard>("flow.charge-card");
            o.Handle<PlaceOrder, PlaceOrderHandler>("orders")
                .Handle<ReserveStock, ReserveStockHandler>("stock")
                .Handle<ChargeCard, ChargeCardHandler>("payments")
                .Subscribe<OrderPlaced, BillingHandler>("billing");
        });

        await host.SendAndWaitAsync(new PlaceOrder("o1"), new SendOptions { CorrelationId = "tx-flow" });
        var flow = await FlowView.BuildAsync(host.Store, "tx-flow", CancellationToken.None);

        Assert.Equal(
            [
                "0 flow.place-order@1 queue:orders handled",
                "1 flow.reserve-stock@1 queue:stock handled",
                "1 flow.order-placed@1 log:order-o1 appended",
                "2 flow.charge-card@1 queue:payments handled",
            ],
            flow.Select(s => $"{s.Depth} {s.Item.MessageType} {s.Item.Where} {s.Item.Status}"));
        Assert.Null(flow[0].Item.CausationId);
        Assert.Equal(flow[0].Item.MessageId, flow[1].Item.CausationId);
        Assert.Equal(flow[0].Item.MessageId, flow[2].Item.CausationId);
        Assert.Equal(flow[2].Item.MessageId, flow[3].Item.CausationId);
        Assert.True(flow[1].Item.SentAt <= flow[2].Item.SentAt);
        Assert.All(flow, s => Assert.Empty(s.Saga));
        Assert.All(flow.Where(s => s.Item.Status == "handled"), s => Assert.NotNull(s.Item.HandledAt));

        Assert.Empty(await FlowView.BuildAsync(host.Store, "tx-unknown", CancellationToken.None));
    }

    [Fact]
    public async Task A_compensated_saga_shows_each_reply_under_its_command_with_the_saga_log_on_the_rows_it_concerns()
    {
        var participants = new Participants();
        participants.Refuse("o7", "charge");
        await using var host = await ShopSaga.StartAsync(participants);

        Assert.True(await host.Sagas.StartAsync("order", "tx-comp", new OrderData { Order = "o7", Amount = 5 }));
        Assert.Equal(SagaState.Compensated, (await host.WaitForSagaAsync("tx-comp")).State);
        var flow = await FlowView.BuildAsync(host.Store, "tx-comp", CancellationToken.None);

        static string Kinds(FlowStep s) => string.Join(",", s.Saga.Select(e => e.Step is null ? e.Kind : $"{e.Kind}:{e.Step}"));
        Assert.Equal(
            [
                "0 test.reserve@1 handled started,command-sent:reserve",
                "1 test.reserved@1 received reply-received:reserve",
                "2 test.charge@1 handled command-sent:charge",
                "3 test.refused@1 received reply-received:charge,step-failed:charge,state-changed:charge",
                "4 test.release@1 handled compensation-sent:reserve",
                "5 test.released@1 received reply-received:reserve,state-changed",
            ],
            flow.Select(s => $"{s.Depth} {s.Item.MessageType} {s.Item.Status} {Kinds(s)}"));

        // Every saga log entry is placed exactly once.
        var log = await host.Store.SagaQueries().ReadSagaLogAsync("tx-comp", CancellationToken.None);
        Assert.Equal(log.Select(e => e.Id).Order(), flow.SelectMany(s => s.Saga).Select(e => e.Id).Order());
    }

    static FlowItem Item(int id, int? cause, int atMs, string where = "queue:q", string status = "handled") =>
        new(Id(id), "t" + id, cause is { } c ? Id(c) : null, T0.AddMilliseconds(atMs), where, status, status == "handled" ? T0.AddMilliseconds(atMs + 1) : null);

    static Guid Id(int n) => new(n, 0, 0, [0, 0, 0, 0, 0, 0, 0, 0]);

    static List<string> Describe(IReadOnlyList<FlowStep> flow) =>
        [.. flow.Select(s => $"{new string(' ', s.Depth * 2)}t{s.Item.MessageId.ToString("N")[..8].TrimStart('0')} {s.Item.Where} {s.Item.Status}")];

    [Fact]
    public void Duplicates_collapse_per_place_siblings_order_by_sent_time_then_id_and_unknown_causes_are_roots()
    {
        FlowItem[] items =
        [
            Item(4, 1, 20),
            Item(1, null, 0, status: "pending"),
            Item(3, 1, 10),
            Item(1, null, 0),
            Item(2, 1, 10),
            Item(1, null, 0, where: "dead-letters:q", status: "dead-lettered"),
            Item(5, 99, 5, where: "log:s", status: "appended"),
            Item(6, 5, 6),
        ];

        var flow = FlowView.Build(items, []);

        Assert.Equal(
            [
                "t1 queue:q handled",
                "t1 dead-letters:q dead-lettered",
                "  t2 queue:q handled",
                "  t3 queue:q handled",
                "  t4 queue:q handled",
                "t5 log:s appended",
                "  t6 queue:q handled",
            ],
            Describe(flow));
    }

    [Fact]
    public void Causes_that_loop_are_shown_once_from_their_earliest_message()
    {
        var flow = FlowView.Build([Item(2, 1, 5), Item(1, 2, 0), Item(3, 3, 9)], []);

        Assert.Equal(["t1 queue:q handled", "  t2 queue:q handled", "t3 queue:q handled"], Describe(flow));
    }

    [Fact]
    public void Messages_only_the_saga_log_knows_get_rows_and_a_fault_plan_stand_in_sits_under_the_message_that_injected_it()
    {
        static SagaLogEntry Entry(long id, string kind, string? step = null, int? message = null, string? type = null, string? detail = null) =>
            new("tx", T0.AddMilliseconds(id), kind, step, message is { } m ? Id(m) : null, type, detail) { Id = id };

        // Command 1 was handled and its inbox record purged; its reply 2 is still in the inbox. A fault plan then
        // fails step b (stand-in 90, whose failure reply is 4), and the compensation 5 goes to another store's queue.
        FlowItem[] items = [Item(2, 1, 2, where: "queue:sagas.s"), Item(4, 90, 5, where: "queue:sagas.s")];
        SagaLogEntry[] log =
        [
            Entry(1, SagaLogKinds.Started, detail: "version 1"),
            Entry(2, SagaLogKinds.CommandSent, "a", 1, "t1"),
            Entry(3, SagaLogKinds.ReplyReceived, "a", 2, "t2"),
            Entry(4, SagaLogKinds.FaultInjected, "b", 90, detail: "fail: no"),
            Entry(6, SagaLogKinds.ReplyReceived, "b", 4, "t4", "failure"),
            Entry(7, SagaLogKinds.StepFailed, "b", detail: "no"),
            Entry(8, SagaLogKinds.StateChanged, "b", detail: "running -> compensating"),
            Entry(9, SagaLogKinds.CompensationSent, "a", 5, "t5"),
        ];

        var flow = FlowView.Build(items, log);

        Assert.Equal(
            [
                "t1 saga-log sent",
                "  t2 queue:sagas.s handled",
                "    t4 queue:sagas.s handled",
                "      t5 saga-log sent",
            ],
            Describe(flow));
        Assert.Equal([1L, 2L], flow[0].Saga.Select(e => e.Id));
        Assert.Equal([3L, 4L], flow[1].Saga.Select(e => e.Id));
        Assert.Equal([6L, 7L, 8L], flow[2].Saga.Select(e => e.Id));
        Assert.Equal([9L], flow[3].Saga.Select(e => e.Id));
        Assert.Equal("t5", flow[3].Item.MessageType);
        Assert.Equal(Id(4), flow[3].Item.CausationId);
    }
}
