using Converge.Runtime;
using Converge.Sagas;
using Converge.Samples.Shop.Customers;

namespace Converge.Samples.Shop.Shipping;

/// <summary>Shipping: ships an order once; a repeated command answers with the same tracking number.</summary>
public sealed class ShippingHandler : IHandler<ShipOrder>
{
    public async Task HandleAsync(ShipOrder message, MessageContext context, CancellationToken cancellationToken)
    {
        // Inserted unless it exists: a second delivery of the command, even one running at the same time in another
        // process, finds the first shipment instead of failing on the key.
        await context.ExecuteAsync(
            "INSERT INTO shop_shipments (order_id, tracking) VALUES (@order, @tracking) ON CONFLICT (order_id) DO NOTHING",
            ("@order", message.OrderId), ("@tracking", "TRK-" + message.OrderId));
        var transaction = await context.GetTransactionAsync(cancellationToken);
        var tracking = (string)(await CreditHandlers.Scalar(transaction, "SELECT tracking FROM shop_shipments WHERE order_id = @order", ("@order", message.OrderId)))!;
        await context.ReplyAsync(new OrderShipped(message.OrderId, tracking), cancellationToken);
    }
}
