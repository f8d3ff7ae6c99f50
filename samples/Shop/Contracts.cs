using Converge.Contracts;

namespace Converge.Samples.Shop;

/// <summary>
/// Every message type of the Shop with its stable name: registered by every Shop process, and read by
/// <c>converge contracts check --assembly Converge.Samples.Shop.dll --snapshot samples/Shop/contracts.json</c> in CI.
/// </summary>
public sealed class ShopContracts : IConvergeContracts
{
    public void Register(MessageTypeRegistry messages) => messages
        .Register<ReserveCredit>("shop.reserve-credit").Register<CreditReserved>("shop.credit-reserved").Register<CreditLimitExceeded>("shop.credit-limit-exceeded")
        .Register<ReleaseCredit>("shop.release-credit").Register<CreditReleased>("shop.credit-released")
        .Register<SettleCredit>("shop.settle-credit").Register<CreditSettled>("shop.credit-settled")
        .Register<ChargePayment>("shop.charge-payment").Register<PaymentCharged>("shop.payment-charged").Register<PaymentDeclined>("shop.payment-declined")
        .Register<RefundPayment>("shop.refund-payment").Register<PaymentRefunded>("shop.payment-refunded")
        .Register<ShipOrder>("shop.ship-order").Register<OrderShipped>("shop.order-shipped").Register<ShipmentRefused>("shop.shipment-refused")
        .Register<OrderCreated>("shop.order-created").Register<OrderCreditReserved>("shop.order-credit-reserved").Register<OrderCreditRefused>("shop.order-credit-refused")
        .Register<OrderApproved>("shop.order-approved").Register<OrderRejected>("shop.order-rejected")
        .Register<OrderCompleted>("shop.order-completed").Register<OrderCancelled>("shop.order-cancelled");
}

// Commands and replies of the orchestrated place-order saga. Every message names the order: participants are
// idempotent per order, whatever the message id.
public sealed record ReserveCredit(string OrderId, string CustomerId, decimal Amount);
public sealed record CreditReserved(string OrderId);
public sealed record CreditLimitExceeded(string OrderId, string Reason);
public sealed record ReleaseCredit(string OrderId);
public sealed record CreditReleased(string OrderId);
public sealed record SettleCredit(string OrderId);
public sealed record CreditSettled(string OrderId);
public sealed record ChargePayment(string OrderId, string CustomerId, decimal Amount);
public sealed record PaymentCharged(string OrderId, string ProviderReference);
public sealed record PaymentDeclined(string OrderId, string Reason);
public sealed record RefundPayment(string OrderId);
public sealed record PaymentRefunded(string OrderId);
public sealed record ShipOrder(string OrderId);
public sealed record OrderShipped(string OrderId, string TrackingNumber);
public sealed record ShipmentRefused(string OrderId, string Reason);

// Events of the choreographed flow, published to the log on stream "order-{id}".
public sealed record OrderCreated(string OrderId, string CustomerId, decimal Amount);
public sealed record OrderCreditReserved(string OrderId, string CustomerId, decimal Amount);
public sealed record OrderCreditRefused(string OrderId, string CustomerId, string Reason);
public sealed record OrderApproved(string OrderId);
public sealed record OrderRejected(string OrderId, string Reason);
public sealed record OrderCompleted(string OrderId);
public sealed record OrderCancelled(string OrderId, string Reason);

/// <summary>The Shop's queues and consumer groups: one per service.</summary>
public static class ShopQueues
{
    public const string Orders = "shop.orders";
    public const string Customers = "shop.customers";
    public const string Payments = "shop.payments";
    public const string Shipping = "shop.shipping";
    public const string CustomersGroup = "shop.customers.events";
    public const string OrdersGroup = "shop.orders.events";

    public static string Stream(string orderId) => "order-" + orderId;
}
