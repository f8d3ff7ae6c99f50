using Converge.Runtime;

namespace Converge.Samples.Reprocess;

/// <summary>An order was placed by a customer; nothing is owed yet.</summary>
public sealed record OrderPlaced(string OrderId, string CustomerId, long AmountCents);

/// <summary>The customer paid for the order.</summary>
public sealed record OrderPaid(string OrderId, string CustomerId, long AmountCents);

/// <summary>Part or all of a paid order's amount went back to the customer.</summary>
public sealed record OrderRefunded(string OrderId, string CustomerId, long AmountCents);

/// <summary>The order was cancelled before it was paid.</summary>
public sealed record OrderCancelled(string OrderId, string CustomerId);

/// <summary>The events of the orders and where they go on the log.</summary>
public static class OrderEvents
{
    public const string Placed = "reprocess.order-placed";

    public const string Paid = "reprocess.order-paid";

    public const string Refunded = "reprocess.order-refunded";

    public const string Cancelled = "reprocess.order-cancelled";

    /// <summary>One stream per order.</summary>
    public static string StreamOf(string orderId) => "order-" + orderId;

    public static void Register(ConvergeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Messages
            .Register<OrderPlaced>(Placed)
            .Register<OrderPaid>(Paid)
            .Register<OrderRefunded>(Refunded)
            .Register<OrderCancelled>(Cancelled);
    }
}
