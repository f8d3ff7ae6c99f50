using Converge.Sagas;

namespace Converge.Samples.Shop.Orders;

/// <summary>The saga's data: the order, and what the participants answered.</summary>
public sealed class PlaceOrderData
{
    public string OrderId { get; set; } = "";
    public string CustomerId { get; set; } = "";
    public decimal Amount { get; set; }
    public string? ProviderReference { get; set; }
    public string? TrackingNumber { get; set; }
}

/// <summary>
/// Place an order, orchestrated: reserve credit, charge, ship (the pivot: goods that left cannot be un-shipped),
/// then settle the credit. A failure before shipping releases the credit and refunds the charge, in that order.
/// </summary>
public sealed class PlaceOrderSaga : SagaDefinition<PlaceOrderData>
{
    public const string SagaName = "place-order";

    /// <summary>How long each step waits for its participant. The demo shortens it so dropped replies resolve quickly.</summary>
    public static TimeSpan StepTimeout { get; set; } = TimeSpan.FromSeconds(30);

    public override string Name => SagaName;

    public override int Version => 1;

    protected override void Define(SagaBuilder<PlaceOrderData> saga)
    {
        saga.Compensatable("reserve-credit")
            .Send(d => new ReserveCredit(d.OrderId, d.CustomerId, d.Amount))
            .OnReply<CreditReserved>()
            .FailOn<CreditLimitExceeded>(r => r.Reason)
            .CompensateWith(d => new ReleaseCredit(d.OrderId))
            .OnCompensated<CreditReleased>()
            .Timeout(StepTimeout);

        saga.Compensatable("charge")
            .Send(d => new ChargePayment(d.OrderId, d.CustomerId, d.Amount))
            .OnReply<PaymentCharged>((d, r) => d.ProviderReference = r.ProviderReference)
            .FailOn<PaymentDeclined>(r => r.Reason)
            .CompensateWith(d => new RefundPayment(d.OrderId))
            .OnCompensated<PaymentRefunded>()
            .Timeout(StepTimeout);

        saga.Pivot("ship")
            .Send(d => new ShipOrder(d.OrderId))
            .OnReply<OrderShipped>((d, r) => d.TrackingNumber = r.TrackingNumber)
            .FailOn<ShipmentRefused>(r => r.Reason)
            .Timeout(StepTimeout);

        saga.Retriable("settle-credit")
            .Send(d => new SettleCredit(d.OrderId))
            .OnReply<CreditSettled>()
            .RetryDelay(TimeSpan.FromMilliseconds(200))
            .Timeout(StepTimeout);

        // The order's own row changes with the saga's end, and an event lets other services react later.
        saga.WhenCompleted(async (context, cancellationToken) =>
        {
            await context.ExecuteAsync("UPDATE shop_orders SET status = 'completed' WHERE id = @id", ("@id", context.Data.OrderId));
            await context.PublishAsync(ShopQueues.Stream(context.Data.OrderId), new OrderCompleted(context.Data.OrderId), cancellationToken: cancellationToken);
        });
        saga.WhenCompensated(async (context, cancellationToken) =>
        {
            var rejected = context.FailedStep == "reserve-credit";
            await context.ExecuteAsync("UPDATE shop_orders SET status = @status, reason = @reason WHERE id = @id",
                ("@status", rejected ? "rejected" : "compensated"), ("@reason", context.Failure), ("@id", context.Data.OrderId));
            await context.PublishAsync(ShopQueues.Stream(context.Data.OrderId), new OrderCancelled(context.Data.OrderId, context.Failure ?? ""), cancellationToken: cancellationToken);
        });
    }
}
