using Converge.Runtime;
using Converge.Sagas;
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
        switch (await ClaimAsync(context, message.OrderId, cancellationToken))
        {
            case "charged":
                var reference = (string)(await CreditHandlers.Scalar(transaction, "SELECT reference FROM shop_payments WHERE order_id = @order", ("@order", message.OrderId)))!;
                await context.ReplyAsync(new PaymentCharged(message.OrderId, reference), cancellationToken);
                return;
            case "declined":
                await context.ReplyAsync(new PaymentDeclined(message.OrderId, "card declined"), cancellationToken);
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
            await context.ExecuteAsync("UPDATE shop_payments SET status = 'declined' WHERE order_id = @order", ("@order", message.OrderId));
            await context.ReplyAsync(new PaymentDeclined(message.OrderId, "card declined"), cancellationToken);
            return;
        }

        await context.ExecuteAsync("UPDATE shop_payments SET status = 'charged', amount = @amount, reference = @reference WHERE order_id = @order",
            ("@order", message.OrderId), ("@amount", cents), ("@reference", charged));
        await context.ReplyAsync(new PaymentCharged(message.OrderId, charged), cancellationToken);
    }

    public async Task HandleAsync(RefundPayment message, MessageContext context, CancellationToken cancellationToken)
    {
        switch (await ClaimAsync(context, message.OrderId, cancellationToken))
        {
            case "charged":
                provider.Refund(message.OrderId + ":refund", message.OrderId);
                await context.ExecuteAsync("UPDATE shop_payments SET status = 'refunded' WHERE order_id = @order", ("@order", message.OrderId));
                break;
            case Claimed:
                // Nothing charged yet: remember the cancellation so a charge that arrives late declines. The provider
                // is still asked, in case a charge reached it before a crash.
                provider.Refund(message.OrderId + ":refund", message.OrderId);
                await context.ExecuteAsync("UPDATE shop_payments SET status = 'cancelled' WHERE order_id = @order", ("@order", message.OrderId));
                break;
        }

        await context.ReplyAsync(new PaymentRefunded(message.OrderId), cancellationToken);
    }

    /// <summary>The status of a row this transaction has just claimed and nothing has decided yet.</summary>
    const string Claimed = "claimed";

    /// <summary>
    /// Makes sure the order's payment row exists and locks it, then returns its status (<see cref="Claimed"/> when
    /// nothing was decided for the order yet). A charge and a refund of the same order then take turns even on
    /// PostgreSQL, where each statement reads what is committed: without the lock both could find nothing recorded,
    /// and the refund would ask the provider before the charge reached it, leaving money charged on a cancelled
    /// order. If the transaction rolls back, so does the claimed row.
    /// </summary>
    static async Task<string?> ClaimAsync(MessageContext context, string orderId, CancellationToken cancellationToken)
    {
        await context.ExecuteAsync(
            "INSERT INTO shop_payments (order_id, status, amount, reference) VALUES (@order, 'claimed', 0, '') ON CONFLICT (order_id) DO UPDATE SET status = shop_payments.status",
            ("@order", orderId));
        var transaction = await context.GetTransactionAsync(cancellationToken);
        return await CreditHandlers.Scalar(transaction, "SELECT status FROM shop_payments WHERE order_id = @order", ("@order", orderId)) as string;
    }
}
