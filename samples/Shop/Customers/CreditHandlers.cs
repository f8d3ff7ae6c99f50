using System.Data.Common;
using System.Globalization;
using Converge.Faults;
using Converge.Runtime;

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
        var transaction = await context.GetTransactionAsync(cancellationToken);
        var status = await Scalar(transaction, "SELECT status FROM shop_reservations WHERE order_id = @order", ("@order", message.OrderId)) as string;
        if (status == "reserved")
        {
            await context.ExecuteAsync("UPDATE shop_customers SET reserved = reserved - (SELECT amount FROM shop_reservations WHERE order_id = @order) WHERE id = (SELECT customer_id FROM shop_reservations WHERE order_id = @order)", ("@order", message.OrderId));
            await context.ExecuteAsync("UPDATE shop_reservations SET status = 'released' WHERE order_id = @order", ("@order", message.OrderId));
        }
        else if (status is null)
        {
            await context.ExecuteAsync("INSERT INTO shop_reservations (order_id, customer_id, amount, status) VALUES (@order, '', 0, 'released')", ("@order", message.OrderId));
        }

        await context.ReplyAsync(new CreditReleased(message.OrderId), cancellationToken);
    }

    public async Task HandleAsync(SettleCredit message, MessageContext context, CancellationToken cancellationToken)
    {
        // Paid and shipped: the order no longer draws on the customer's credit.
        var transaction = await context.GetTransactionAsync(cancellationToken);
        if (await Scalar(transaction, "SELECT status FROM shop_reservations WHERE order_id = @order", ("@order", message.OrderId)) as string == "reserved")
        {
            await context.ExecuteAsync("UPDATE shop_customers SET reserved = reserved - (SELECT amount FROM shop_reservations WHERE order_id = @order) WHERE id = (SELECT customer_id FROM shop_reservations WHERE order_id = @order)", ("@order", message.OrderId));
            await context.ExecuteAsync("UPDATE shop_reservations SET status = 'settled' WHERE order_id = @order", ("@order", message.OrderId));
        }

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
        var transaction = await context.GetTransactionAsync(cancellationToken);
        switch (await Scalar(transaction, "SELECT status FROM shop_reservations WHERE order_id = @order", ("@order", orderId)) as string)
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
        await context.ExecuteAsync("INSERT INTO shop_reservations (order_id, customer_id, amount, status) VALUES (@order, @customer, @amount, @status)",
            ("@order", orderId), ("@customer", customerId), ("@amount", cents), ("@status", room == 1 ? "reserved" : "refused"));
        return room == 1 ? null : "credit limit exceeded";
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
