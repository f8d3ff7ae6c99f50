namespace Converge.Samples.Shop;

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
