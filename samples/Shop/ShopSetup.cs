using Converge.Runtime;
using Converge.Samples.Shop.Customers;
using Converge.Samples.Shop.Orders;
using Converge.Samples.Shop.Payments;
using Converge.Samples.Shop.Shipping;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Samples.Shop;

/// <summary>Which of the Shop's services a process runs.</summary>
[Flags]
public enum ShopServices
{
    None = 0,
    Orders = 1,
    Customers = 2,
    Payments = 4,
    Shipping = 8,
    All = Orders | Customers | Payments | Shipping,
}

/// <summary>How the place-order process is carried out.</summary>
public enum ShopStyle
{
    /// <summary>The <see cref="PlaceOrderSaga"/> orchestrates reserve credit, charge, ship and settle.</summary>
    Orchestrated,

    /// <summary>Events on the log: order created, credit reserved or refused, order approved or rejected.</summary>
    Choreographed,
}

/// <summary>Wires the Shop's services into Converge: one queue per service, in one process or in several.</summary>
public static class ShopSetup
{
    public static ShopServices Parse(string name) => name switch
    {
        "all" => ShopServices.All,
        "orders" => ShopServices.Orders,
        "customers" => ShopServices.Customers,
        "payments" => ShopServices.Payments,
        "shipping" => ShopServices.Shipping,
        _ => throw new ArgumentException($"Unknown service '{name}'; use all, orders, customers, payments or shipping."),
    };

    /// <summary>Registers every message type and route (every process needs them) and the handlers of <paramref name="services"/>.</summary>
    public static void Configure(ConvergeOptions o, ShopServices services)
    {
        new ShopContracts().Register(o.Messages);
        o.Route<ReserveCredit>(ShopQueues.Customers).Route<ReleaseCredit>(ShopQueues.Customers).Route<SettleCredit>(ShopQueues.Customers)
            .Route<ChargePayment>(ShopQueues.Payments).Route<RefundPayment>(ShopQueues.Payments)
            .Route<ShipOrder>(ShopQueues.Shipping);

        if (services.HasFlag(ShopServices.Orders))
        {
            o.AddSaga<PlaceOrderSaga>();
            o.Subscribe<OrderCreditReserved, OrderCreditHandler>(ShopQueues.OrdersGroup)
                .Subscribe<OrderCreditRefused, OrderCreditHandler>(ShopQueues.OrdersGroup);
        }

        if (services.HasFlag(ShopServices.Customers))
        {
            o.Handle<ReserveCredit, CreditHandlers>(ShopQueues.Customers)
                .Handle<ReleaseCredit, CreditHandlers>(ShopQueues.Customers)
                .Handle<SettleCredit, CreditHandlers>(ShopQueues.Customers)
                .Subscribe<OrderCreated, CreditHandlers>(ShopQueues.CustomersGroup);
        }

        if (services.HasFlag(ShopServices.Payments))
        {
            o.Handle<ChargePayment, PaymentHandlers>(ShopQueues.Payments).Handle<RefundPayment, PaymentHandlers>(ShopQueues.Payments);
        }

        if (services.HasFlag(ShopServices.Shipping))
        {
            o.Handle<ShipOrder, ShippingHandler>(ShopQueues.Shipping);
        }
    }

    /// <summary>The payment provider's ledger lives in its own file beside the shop's database.</summary>
    public static string LedgerPath(string databasePath) => databasePath + ".provider-ledger";

    /// <summary>The payment provider's ledger in a folder of the simulated outside services (the one a PostgreSQL run uses).</summary>
    public static string LedgerIn(string folder) => Path.Combine(folder, "shop-provider-ledger.db");

    /// <summary>Adds the payment provider, with its ledger at <paramref name="ledgerPath"/> (every process of a run uses the same file).</summary>
    public static void AddServices(IServiceCollection services, string ledgerPath) =>
        services.AddSingleton(_ => new PaymentProvider(ledgerPath));

    /// <summary>
    /// Creates the services' tables (each service owns its own, prefixed by its name). Amounts are cents in BIGINT,
    /// which SQLite reads as INTEGER and PostgreSQL as a 64-bit integer, so the same SQL runs on both stores.
    /// </summary>
    public static async Task CreateTablesAsync(IMessageStore store, CancellationToken cancellationToken)
    {
        await using var transaction = await store.BeginAsync(cancellationToken);
        foreach (var statement in new[]
        {
            "CREATE TABLE IF NOT EXISTS shop_orders (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, amount BIGINT NOT NULL, status TEXT NOT NULL, reason TEXT, style TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS shop_customers (id TEXT PRIMARY KEY, credit_limit BIGINT NOT NULL, reserved BIGINT NOT NULL DEFAULT 0)",
            "CREATE TABLE IF NOT EXISTS shop_reservations (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, amount BIGINT NOT NULL, status TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS shop_payments (order_id TEXT PRIMARY KEY, status TEXT NOT NULL, amount BIGINT NOT NULL, reference TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS shop_shipments (order_id TEXT PRIMARY KEY, tracking TEXT NOT NULL)",
        })
        {
            await transaction.ExecuteAsync(statement, [], cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
    }
}
