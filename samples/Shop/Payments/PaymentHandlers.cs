using Converge.Runtime;
using Converge.Samples.Shop.Customers;

namespace Converge.Samples.Shop.Payments;

/// <summary>
/// Payments: charges and refunds through the provider with idempotency keys derived from the order, and remembers
/// each order in shop_payments, so a refund that arrives before its (late) charge makes the charge decline.
/// </summary>
public sealed class PaymentHandlers(PaymentProvider provider) : IHandler<ChargePayment>, IHandler<RefundPayment>
{
    public async Task HandleAsync(ChargePayment message, MessageContext context, CancellationToken cancellationToken)
    {
        var transaction = await context.GetTransactionAsync(cancellationToken);
        switch (await CreditHandlers.Scalar(transaction, "SELECT status FROM shop_payments WHERE order_id = @order", ("@order", message.OrderId)) as string)
        {
            case "charged":
                var reference = (string)(await CreditHandlers.Scalar(transaction, "SELECT reference FROM shop_payments WHERE order_id = @order", ("@order", message.OrderId)))!;
                await context.ReplyAsync(new PaymentCharged(message.OrderId, reference), cancellationToken);
                return;
            case "refunded" or "cancelled":
                await context.ReplyAsync(new PaymentDeclined(message.OrderId, "the order was cancelled before it was charged"), cancellationToken);
                return;
        }

        // The provider is outside this transaction: if we crash after it charged, the redelivered command reuses
        // the key and the provider answers with the same charge.
        var cents = CreditHandlers.ToCents(message.Amount);
        var charged = provider.Charge(message.OrderId + ":charge", message.OrderId, message.CustomerId, cents);
        if (charged is null)
        {
            await context.ReplyAsync(new PaymentDeclined(message.OrderId, "card declined"), cancellationToken);
            return;
        }

        await context.ExecuteAsync("INSERT INTO shop_payments (order_id, status, amount, reference) VALUES (@order, 'charged', @amount, @reference)",
            ("@order", message.OrderId), ("@amount", cents), ("@reference", charged));
        await context.ReplyAsync(new PaymentCharged(message.OrderId, charged), cancellationToken);
    }

    public async Task HandleAsync(RefundPayment message, MessageContext context, CancellationToken cancellationToken)
    {
        var transaction = await context.GetTransactionAsync(cancellationToken);
        switch (await CreditHandlers.Scalar(transaction, "SELECT status FROM shop_payments WHERE order_id = @order", ("@order", message.OrderId)) as string)
        {
            case "charged":
                provider.Refund(message.OrderId + ":refund", message.OrderId);
                await context.ExecuteAsync("UPDATE shop_payments SET status = 'refunded' WHERE order_id = @order", ("@order", message.OrderId));
                break;
            case null:
                // Nothing charged yet: remember the cancellation so a charge that arrives late declines. The provider
                // is still asked, in case a charge reached it before a crash.
                provider.Refund(message.OrderId + ":refund", message.OrderId);
                await context.ExecuteAsync("INSERT INTO shop_payments (order_id, status, amount, reference) VALUES (@order, 'cancelled', 0, '')", ("@order", message.OrderId));
                break;
        }

        await context.ReplyAsync(new PaymentRefunded(message.OrderId), cancellationToken);
    }
}
