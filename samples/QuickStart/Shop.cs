using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;

namespace QuickStart;

/// <summary>A command to the inventory service.</summary>
public sealed record ReserveStock(string OrderId, string Sku, int Quantity);

/// <summary>An event: stock was reserved for an order.</summary>
public sealed record StockReserved(string OrderId, string Sku, int Quantity);

/// <summary>Reserves stock; the reservation row commits with the inbox record and the event, exactly once.</summary>
public sealed class ReserveStockHandler : IHandler<ReserveStock>
{
    public async Task HandleAsync(ReserveStock message, MessageContext context, CancellationToken cancellationToken)
    {
        if (!message.Sku.StartsWith("sku-", StringComparison.Ordinal))
        {
            throw new HandlerFailureException($"Unknown product '{message.Sku}'", nonRetryable: true);
        }

        await context.ExecuteAsync(
            "INSERT INTO reservations (order_id, sku, quantity) VALUES (@o, @s, @q)",
            [("@o", message.OrderId), ("@s", message.Sku), ("@q", message.Quantity)],
            cancellationToken);
        await context.PublishAsync("order-" + message.OrderId, new StockReserved(message.OrderId, message.Sku, message.Quantity), cancellationToken: cancellationToken);
    }
}

/// <summary>A read model built from the log; its rows and its checkpoint commit together.</summary>
public sealed class OrderSummaryProjection : IHandler<StockReserved>
{
    public async Task HandleAsync(StockReserved message, MessageContext context, CancellationToken cancellationToken) =>
        await context.ExecuteAsync(
            "INSERT INTO order_summary (order_id, status, reserved_at) VALUES (@o, 'reserved', @at)",
            [("@o", message.OrderId), ("@at", context.Envelope.SentAt.ToString("O"))],
            cancellationToken);
}

/// <summary>Reads a count through a read-only connection to the store's database.</summary>
internal static class Sql
{
    public static async Task<long> ScalarAsync(IMessageStore store, string sql)
    {
        await using var connection = await store.Database().OpenReadConnectionAsync(CancellationToken.None);
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        return (long)(await command.ExecuteScalarAsync())!;
    }
}
