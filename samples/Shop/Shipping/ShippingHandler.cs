using Converge.Runtime;
using Converge.Samples.Shop.Customers;

namespace Converge.Samples.Shop.Shipping;

/// <summary>Shipping: ships an order once; a repeated command answers with the same tracking number.</summary>
public sealed class ShippingHandler : IHandler<ShipOrder>
{
    public async Task HandleAsync(ShipOrder message, MessageContext context, CancellationToken cancellationToken)
    {
        var transaction = await context.GetTransactionAsync(cancellationToken);
        var tracking = await CreditHandlers.Scalar(transaction, "SELECT tracking FROM shop_shipments WHERE order_id = @order", ("@order", message.OrderId)) as string;
        if (tracking is null)
        {
            tracking = "TRK-" + message.OrderId;
            await context.ExecuteAsync("INSERT INTO shop_shipments (order_id, tracking) VALUES (@order, @tracking)", ("@order", message.OrderId), ("@tracking", tracking));
        }

        await context.ReplyAsync(new OrderShipped(message.OrderId, tracking), cancellationToken);
    }
}
