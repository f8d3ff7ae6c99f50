// What the README's snippets assume and do not show: the application's own message types and services, and the
// variables a snippet uses without declaring them (bus, jobs, sagas, o, ...). The test compiles this file beside
// each snippet. A type declared here is left out when the snippet declares one of the same name, and a snippet's
// own locals hide these fields, so every snippet may show as much of the program as it likes.
using System.Data.Common;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

#pragma warning disable CS8618, CA2211, IDE1006

// The variables, as static fields: "using static ReadmeScaffold" is global, and a snippet's own local of the same
// name wins over the field.
public static class ReadmeScaffold
{
    public static HostApplicationBuilder builder = null!;
    public static IServiceCollection services = null!;
    public static ConvergeOptions o = null!;
    public static ConvergeOptions options = null!;
    public static IMessageBus bus = null!;
    public static IJobClient jobs = null!;
    public static ISagaClient sagas = null!;
    public static IStoreTransaction transaction = null!;
    public static string connectionString = null!;
    public static string orderId = null!;
    public static PlaceOrderData data = null!;
    public static string invoiceId = null!;
    public static DateTimeOffset computedAt;
    public static ChargeInvoice job = null!;
}

// The quick start's messages (the test host snippet sends one).
public sealed record ReserveStock(string OrderId, string Sku, int Quantity);
public sealed record StockReserved(string OrderId, string Sku, int Quantity);
public sealed class OrderSummaryProjection : IHandler<StockReserved>
{
    public Task HandleAsync(StockReserved message, MessageContext context, CancellationToken ct) => Task.CompletedTask;
}

// The versioned contracts section's two versions of one event.
public sealed record OrderPlacedV2(string OrderId, decimal Amount);
public sealed record OrderPlaced(string OrderId, decimal Amount, string Currency);

// The projections section's events, and the fixed version it registers beside the one it shows.
public sealed record OrderPaid(string Customer, long Cents);
public sealed record OrderRefunded(string Customer, long Cents);
public sealed class RevenueByCustomerFixed : Converge.Projections.IProjection
{
    public IReadOnlyList<string> Tables { get; } = ["revenue"];
    public IReadOnlyList<Type> Events { get; } = [typeof(OrderPaid), typeof(OrderRefunded)];
    public ValueTask CreateTablesAsync(Converge.Projections.ProjectionContext context, CancellationToken cancellationToken) => ValueTask.CompletedTask;
    public ValueTask ApplyAsync(IReadOnlyList<Converge.Projections.ProjectedEvent> events, Converge.Projections.ProjectionContext context, CancellationToken cancellationToken) => ValueTask.CompletedTask;
}

// The place-order saga's data and messages.
public sealed class PlaceOrderData
{
    public string OrderId { get; set; } = "";
    public string CustomerId { get; set; } = "";
    public decimal Amount { get; set; }
}
public sealed record ReserveCredit(string OrderId, string CustomerId, decimal Amount);
public sealed record CreditReserved(string OrderId);
public sealed record CreditLimitExceeded(string OrderId, string Reason);
public sealed record ReleaseCredit(string OrderId);
public sealed record CreditReleased(string OrderId);
public sealed record ShipOrder(string OrderId);
public sealed record OrderShipped(string OrderId);
public sealed record SettleCredit(string OrderId);
public sealed record CreditSettled(string OrderId);
public sealed record OrderCompleted(string OrderId);

// The month close's jobs and the services its charge job calls.
public sealed record ChargeInvoice(string InvoiceId);
public sealed record MonthClose(string? Month);
public sealed record SendReceipt(string InvoiceId);
public sealed record Invoice(string Id, decimal Remaining, bool PaidManually);
public sealed record Charge(string Id, DateTimeOffset At);
public static class Invoices
{
    public static Task<Invoice> LoadAsync(DbConnection connection, string id, CancellationToken ct) => throw new NotSupportedException();
}
public sealed class PaymentProvider
{
    public Task<Charge> ChargeAsync(decimal amount, string idempotencyKey, CancellationToken ct) => throw new NotSupportedException();
}

// The read-your-writes snippet's event, projection and the application's read of the projection's view.
public sealed record OrderAccepted(string OrderId);
public sealed class OrderListProjection : Converge.Projections.IProjection
{
    public IReadOnlyList<string> Tables { get; } = ["orders"];
    public IReadOnlyList<Type> Events { get; } = [typeof(OrderAccepted)];
    public ValueTask CreateTablesAsync(Converge.Projections.ProjectionContext context, CancellationToken cancellationToken) => ValueTask.CompletedTask;
    public ValueTask ApplyAsync(IReadOnlyList<Converge.Projections.ProjectedEvent> events, Converge.Projections.ProjectionContext context, CancellationToken cancellationToken) => ValueTask.CompletedTask;
}
public static class OrderList
{
    public static Task<string?> FindAsync(string id) => Task.FromResult<string?>(id);
}
