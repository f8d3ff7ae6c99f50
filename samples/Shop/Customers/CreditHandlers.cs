using System.Data.Common;
using System.Globalization;
using Converge.Faults;
using Converge.Runtime;
using Converge.Sagas;

namespace Converge.Samples.Shop.Customers;

/// <summary>
/// Customers: credit limits and per-order reservations. Each reservation row is the participant's memory of the
/// order, so every command is idempotent, and a release that arrives before its (late) reservation leaves a
/// tombstone that makes the reservation refuse.
/// </summary>
public sealed class CreditHandlers(FaultInjector faults) :
    IHandler<ReserveCredit>, IHandler<ReleaseCredit>, IHandler<SettleCredit>, IHandler<OrderCreated>
{
    public async Task HandleAsync(ReserveCredit message, MessageContext context, CancellationToken cancellationToken)
    {
        var refusal = await ReserveAsync(context, message.OrderId, message.CustomerId, message.Amount, cancellationToken);
        await (refusal is null
            ? context.ReplyAsync(new CreditReserved(message.OrderId), cancellationToken)
            : context.ReplyAsync(new CreditLimitExceeded(message.OrderId, refusal), cancellationToken));
    }

    public async Task HandleAsync(ReleaseCredit message, MessageContext context, CancellationToken cancellationToken)
    {
        switch (await ClaimAsync(context, message.OrderId, cancellationToken))
        {
            case "reserved":
                await ReturnCreditAsync(context, message.OrderId, "released");
                break;
            case Claimed:
                // Nothing reserved yet: the row stays as a tombstone, so a reservation that arrives late refuses.
                await context.ExecuteAsync("UPDATE shop_reservations SET status = 'released' WHERE order_id = @order", ("@order", message.OrderId));
                break;
        }

        await context.ReplyAsync(new CreditReleased(message.OrderId), cancellationToken);
    }

    public async Task HandleAsync(SettleCredit message, MessageContext context, CancellationToken cancellationToken)
    {
        // Paid and shipped: the order no longer draws on the customer's credit. The status changes only from
        // 'reserved', in the statement that locks the row, so two deliveries cannot both return the credit.
        await ReturnCreditAsync(context, message.OrderId, "settled");
        await context.ReplyAsync(new CreditSettled(message.OrderId), cancellationToken);
    }

    /// <summary>The choreographed flow: an order was created; say whether its credit is reserved.</summary>
    public async Task HandleAsync(OrderCreated message, MessageContext context, CancellationToken cancellationToken)
    {
        var refusal = faults.Find(FaultAction.Fail, context.CorrelationId, "reserve-credit") is { } fault
            ? fault.Error
            : await ReserveAsync(context, message.OrderId, message.CustomerId, message.Amount, cancellationToken);
        var stream = ShopQueues.Stream(message.OrderId);
        object outcome = refusal is null
            ? new OrderCreditReserved(message.OrderId, message.CustomerId, message.Amount)
            : new OrderCreditRefused(message.OrderId, message.CustomerId, refusal);
        await context.PublishAsync(stream, outcome, cancellationToken: cancellationToken);
        if (faults.Find(FaultAction.DuplicateReply, context.CorrelationId, "reserve-credit") is not null)
        {
            // A second copy of the event, as a participant that retried its publish would produce.
            await context.PublishAsync(stream, outcome, cancellationToken: cancellationToken);
        }
    }

    /// <returns><c>null</c> when reserved (now or before), otherwise why not.</returns>
    static async Task<string?> ReserveAsync(MessageContext context, string orderId, string customerId, decimal amount, CancellationToken cancellationToken)
    {
        switch (await ClaimAsync(context, orderId, cancellationToken))
        {
            case "reserved" or "settled":
                return null;
            case "released":
                return "the order was cancelled before its credit was reserved";
            case "refused":
                return "credit limit exceeded";
        }

        var cents = ToCents(amount);
        var room = await context.ExecuteAsync("UPDATE shop_customers SET reserved = reserved + @amount WHERE id = @customer AND reserved + @amount <= credit_limit", ("@amount", cents), ("@customer", customerId));
        await context.ExecuteAsync("UPDATE shop_reservations SET customer_id = @customer, amount = @amount, status = @status WHERE order_id = @order",
            ("@order", orderId), ("@customer", customerId), ("@amount", cents), ("@status", room == 1 ? "reserved" : "refused"));
        return room == 1 ? null : "credit limit exceeded";
    }

    /// <summary>The status of a row this transaction has just claimed and nothing has decided yet.</summary>
    const string Claimed = "claimed";

    /// <summary>
    /// Makes sure the order's reservation row exists and locks it, then returns its status (<see cref="Claimed"/> when
    /// nothing was decided for the order yet). Every command about an order starts here: on PostgreSQL, where each
    /// statement reads what is committed, a second command for the same order waits at this row until the first
    /// commits and then reads its outcome, instead of both acting on the same old status. (SQLite runs one writer
    /// at a time, so there the lock changes nothing.) If the transaction rolls back, so does the claimed row.
    /// </summary>
    static async Task<string?> ClaimAsync(MessageContext context, string orderId, CancellationToken cancellationToken)
    {
        await context.ExecuteAsync(
            "INSERT INTO shop_reservations (order_id, customer_id, amount, status) VALUES (@order, '', 0, 'claimed') ON CONFLICT (order_id) DO UPDATE SET status = shop_reservations.status",
            ("@order", orderId));
        var transaction = await context.GetTransactionAsync(cancellationToken);
        return await Scalar(transaction, "SELECT status FROM shop_reservations WHERE order_id = @order", ("@order", orderId)) as string;
    }

    /// <summary>Moves a 'reserved' reservation to <paramref name="status"/> and gives its amount back to the customer; nothing otherwise.</summary>
    static async Task ReturnCreditAsync(MessageContext context, string orderId, string status)
    {
        if (await context.ExecuteAsync("UPDATE shop_reservations SET status = @status WHERE order_id = @order AND status = 'reserved'", ("@status", status), ("@order", orderId)) == 1)
        {
            await context.ExecuteAsync(
                "UPDATE shop_customers SET reserved = reserved - (SELECT amount FROM shop_reservations WHERE order_id = @order) WHERE id = (SELECT customer_id FROM shop_reservations WHERE order_id = @order)",
                ("@order", orderId));
        }
    }

    internal static long ToCents(decimal amount) => (long)decimal.Round(amount * 100, MidpointRounding.AwayFromZero);

    internal static async Task<object?> Scalar(DbTransaction transaction, string sql, params (string Name, object? Value)[] parameters)
    {
        await using var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        foreach (var (name, value) in parameters)
        {
            var parameter = command.CreateParameter();
            parameter.ParameterName = name;
            parameter.Value = value ?? DBNull.Value;
            command.Parameters.Add(parameter);
        }

        var result = await command.ExecuteScalarAsync();
        return result is DBNull ? null : result;
    }

    internal static string Format(long cents) => (cents / 100m).ToString("0.00", CultureInfo.InvariantCulture);
}
