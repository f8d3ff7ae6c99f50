using System.Data.Common;
using Converge.Runtime;
using Converge.Sqlite;

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

        var transaction = await context.GetTransactionAsync(cancellationToken);
        await Sql.ExecuteAsync(transaction, "INSERT INTO reservations (order_id, sku, quantity) VALUES (@o, @s, @q)", ("@o", message.OrderId), ("@s", message.Sku), ("@q", message.Quantity));
        await context.PublishAsync("order-" + message.OrderId, new StockReserved(message.OrderId, message.Sku, message.Quantity), cancellationToken: cancellationToken);
    }
}

/// <summary>A read model built from the log; its rows and its checkpoint commit together.</summary>
public sealed class OrderSummaryProjection : IHandler<StockReserved>
{
    public async Task HandleAsync(StockReserved message, MessageContext context, CancellationToken cancellationToken) =>
        await Sql.ExecuteAsync(
            await context.GetTransactionAsync(cancellationToken),
            "INSERT INTO order_summary (order_id, status, reserved_at) VALUES (@o, 'reserved', @at)",
            ("@o", message.OrderId),
            ("@at", context.Envelope.SentAt.ToString("O")));
}

internal static class Sql
{
    public static async Task ExecuteAsync(DbTransaction transaction, string sql, params (string Name, object Value)[] parameters)
    {
        await using var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        foreach (var (name, value) in parameters)
        {
            var parameter = command.CreateParameter();
            parameter.ParameterName = name;
            parameter.Value = value;
            command.Parameters.Add(parameter);
        }

        await command.ExecuteNonQueryAsync();
    }

    public static async Task ExecuteAsync(SqliteMessageStore store, string sql)
    {
        await using var connection = store.OpenConnection();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync();
    }

    public static async Task<long> ScalarAsync(SqliteMessageStore store, string sql)
    {
        await using var connection = store.OpenConnection();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        return (long)(await command.ExecuteScalarAsync())!;
    }
}
