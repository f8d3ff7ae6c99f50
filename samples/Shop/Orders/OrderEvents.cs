using Converge.Runtime;

namespace Converge.Samples.Shop.Orders;

/// <summary>
/// Orders in the choreographed flow: approves or rejects an order when Customers says whether its credit was
/// reserved. Idempotent: only a pending order changes.
/// </summary>
public sealed class OrderCreditHandler : IHandler<OrderCreditReserved>, IHandler<OrderCreditRefused>
{
    public async Task HandleAsync(OrderCreditReserved message, MessageContext context, CancellationToken cancellationToken)
    {
        if (await context.ExecuteAsync("UPDATE shop_orders SET status = 'approved' WHERE id = @id AND status = 'pending'", ("@id", message.OrderId)) == 1)
        {
            await context.PublishAsync(ShopQueues.Stream(message.OrderId), new OrderApproved(message.OrderId), cancellationToken: cancellationToken);
        }
    }

    public async Task HandleAsync(OrderCreditRefused message, MessageContext context, CancellationToken cancellationToken)
    {
        if (await context.ExecuteAsync("UPDATE shop_orders SET status = 'rejected', reason = @reason WHERE id = @id AND status = 'pending'", ("@reason", message.Reason), ("@id", message.OrderId)) == 1)
        {
            await context.PublishAsync(ShopQueues.Stream(message.OrderId), new OrderRejected(message.OrderId, message.Reason), cancellationToken: cancellationToken);
        }
    }
}
