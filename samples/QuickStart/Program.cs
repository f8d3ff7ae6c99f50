// Quick start: a shop writes an order and announces it through the outbox; the inventory service reserves
// stock exactly once (inbox) and publishes an event to the log; a projection reads the log in order. One
// order names an unknown product and ends in the dead letters with its reason.
using Converge.Contracts;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using QuickStart;

var path = args.Length > 0 ? args[0] : "quickstart.db";
foreach (var file in new[] { path, path + "-wal", path + "-shm" })
{
    File.Delete(file);
}

var builder = Host.CreateApplicationBuilder(args);
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Services.AddConverge(o =>
{
    o.UseSqlite(path);
    o.Messages.Register<ReserveStock>("shop.reserve-stock");
    o.Messages.Register<StockReserved>("shop.stock-reserved");
    o.Handle<ReserveStock, ReserveStockHandler>("inventory");
    o.Subscribe<StockReserved, OrderSummaryProjection>("order-summary");
});
using var host = builder.Build();
await host.StartAsync();

var bus = host.Services.GetRequiredService<IMessageBus>();
var store = host.Services.GetRequiredService<IMessageStore>();

// The application's own tables, in a transaction on the store's database like any of its writes.
await using (var schema = await bus.BeginTransactionAsync())
{
    await schema.ExecuteAsync("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, sku TEXT NOT NULL, quantity INTEGER NOT NULL)");
    await schema.ExecuteAsync("CREATE TABLE IF NOT EXISTS reservations (order_id TEXT NOT NULL, sku TEXT NOT NULL, quantity INTEGER NOT NULL)");
    await schema.ExecuteAsync("CREATE TABLE IF NOT EXISTS order_summary (order_id TEXT PRIMARY KEY, status TEXT NOT NULL, reserved_at TEXT NOT NULL)");
    await schema.CommitAsync();
}

// The order row and the ReserveStock command commit together, or not at all.
var orders = Enumerable.Range(1, 20).Select(i => (Id: $"order-{i}", Sku: i == 13 ? "no-such-sku" : "sku-" + (i % 3), Quantity: i)).ToList();
Guid firstMessage = default;
foreach (var order in orders)
{
    await using var transaction = await bus.BeginTransactionAsync();
    await transaction.ExecuteAsync("INSERT INTO orders (id, sku, quantity) VALUES (@id, @sku, @q)", ("@id", order.Id), ("@sku", order.Sku), ("@q", order.Quantity));
    var id = await bus.SendAsync(new ReserveStock(order.Id, order.Sku, order.Quantity), transaction.Transaction, new SendOptions { CorrelationId = order.Id });
    firstMessage = firstMessage == default ? id : firstMessage;
    await transaction.CommitAsync();
}

// The same message delivered again (a retrying sender, a redelivery): the inbox makes it a no-op.
await bus.SendAsync(new ReserveStock("order-1", "sku-1", 1), new SendOptions { MessageId = firstMessage, CorrelationId = "order-1" });

using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
while (true)
{
    var status = await store.Queries().GetStatusAsync(timeout.Token);
    if (status.Queues.All(q => q.Ready + q.InFlight + q.Scheduled == 0) && status.ConsumerGroups.Count == 1 && status.ConsumerGroups.All(g => g.Lag == 0))
    {
        break;
    }

    await Task.Delay(TimeSpan.FromMilliseconds(20), timeout.Token);
}

var final = await store.Queries().GetStatusAsync(CancellationToken.None);
var letters = await store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None);
Console.WriteLine($"Converge quick start on {Path.GetFullPath(path)}");
Console.WriteLine($"  orders written with their command (outbox): {await Sql.ScalarAsync(store, "SELECT count(*) FROM orders")}");
Console.WriteLine($"  reservations (one per valid order, duplicate skipped): {await Sql.ScalarAsync(store, "SELECT count(*) FROM reservations")} rows for {await Sql.ScalarAsync(store, "SELECT count(DISTINCT order_id) FROM reservations")} orders");
Console.WriteLine($"  events in the log: {final.LogPosition}; projection rows: {await Sql.ScalarAsync(store, "SELECT count(*) FROM order_summary")}; lag of 'order-summary': {final.ConsumerGroups[0].Lag}");
foreach (var letter in letters)
{
    Console.WriteLine($"  dead letter #{letter.Id} from '{letter.Source}': {letter.Reason} ({letter.Envelope.CorrelationId}): {(letter.History.Count > 0 ? letter.History[^1].Error : "")}");
}

Console.WriteLine($"  inbox records: {final.InboxRecords}");
Console.WriteLine($"Inspect it: dotnet run --project src/Converge.Cli -- status --db {path}");
await host.StopAsync();
return letters.Count == 1 && final.LogPosition == 19 ? 0 : 1;

