using Converge.Projections;
using Converge.Storage;

namespace Converge.Samples.Reprocess;

/// <summary>
/// Revenue per customer: orders placed and money kept (paid less refunded), one row per customer in <c>totals</c>, and
/// in <c>progress</c> the position of the last event applied and the version that applied it, so readers can tell
/// how far the view they read has got. Each batch is aggregated in memory and every customer it touches is written
/// once (on PostgreSQL, every customer of the batch in one statement).
/// </summary>
public abstract class RevenueProjection : IProjection
{
    public const string Name = "revenue-per-customer";

    public IReadOnlyList<string> Tables { get; } = ["totals", "progress"];

    public IReadOnlyList<Type> Events { get; } = [typeof(OrderPlaced), typeof(OrderPaid), typeof(OrderRefunded), typeof(OrderCancelled)];

    /// <summary>Whether a refund takes its amount off the customer's revenue.</summary>
    protected abstract bool SubtractsRefunds { get; }

    public async ValueTask CreateTablesAsync(ProjectionContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        await context.Database.ExecuteAsync(
            $"CREATE TABLE {context.Table("totals")} (customer_id text PRIMARY KEY, orders bigint NOT NULL, revenue_cents bigint NOT NULL)", [], cancellationToken);
        await context.Database.ExecuteAsync(
            $"CREATE TABLE {context.Table("progress")} (id integer PRIMARY KEY, version integer NOT NULL, position bigint NOT NULL)", [], cancellationToken);
        await context.Database.ExecuteAsync(
            $"INSERT INTO {context.Table("progress")} (id, version, position) VALUES (1, @version, 0)", [new("@version", context.Version)], cancellationToken);
    }

    public async ValueTask ApplyAsync(IReadOnlyList<ProjectedEvent> events, ProjectionContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(events);
        ArgumentNullException.ThrowIfNull(context);
        var changes = new Dictionary<string, (long Orders, long Revenue)>(StringComparer.Ordinal);
        foreach (var projected in events)
        {
            var (customer, orders, revenue) = projected.Message switch
            {
                OrderPlaced placed => (placed.CustomerId, 1L, 0L),
                OrderPaid paid => (paid.CustomerId, 0L, paid.AmountCents),
                OrderRefunded refunded => (refunded.CustomerId, 0L, SubtractsRefunds ? -refunded.AmountCents : 0L),
                OrderCancelled cancelled => (cancelled.CustomerId, 0L, 0L),
                _ => (null, 0L, 0L),
            };
            if (customer is not null)
            {
                var (o, r) = changes.GetValueOrDefault(customer);
                changes[customer] = (o + orders, r + revenue);
            }
        }

        var totals = context.Table("totals");
        if (context.Dialect == SqlDialect.PostgreSql)
        {
            await context.Database.ExecuteAsync(
                $"INSERT INTO {totals} AS t (customer_id, orders, revenue_cents) SELECT * FROM unnest(@customers, @orders, @revenue) " +
                "ON CONFLICT (customer_id) DO UPDATE SET orders = t.orders + excluded.orders, revenue_cents = t.revenue_cents + excluded.revenue_cents",
                [new("@customers", changes.Keys.ToArray()), new("@orders", changes.Values.Select(c => c.Orders).ToArray()), new("@revenue", changes.Values.Select(c => c.Revenue).ToArray())],
                cancellationToken);
        }
        else
        {
            foreach (var (customer, (orders, revenue)) in changes)
            {
                await context.Database.ExecuteAsync(
                    $"INSERT INTO {totals} AS t (customer_id, orders, revenue_cents) VALUES (@customer, @orders, @revenue) " +
                    "ON CONFLICT (customer_id) DO UPDATE SET orders = t.orders + excluded.orders, revenue_cents = t.revenue_cents + excluded.revenue_cents",
                    [new("@customer", customer), new("@orders", orders), new("@revenue", revenue)],
                    cancellationToken);
            }
        }

        await context.Database.ExecuteAsync(
            $"UPDATE {context.Table("progress")} SET position = @position WHERE id = 1",
            [new("@position", events[^1].Event.Position)],
            cancellationToken);
    }
}

/// <summary>Version 1, as first shipped: it forgets refunds, so a refunded customer's revenue stays as paid.</summary>
public sealed class RevenuePerCustomerV1 : RevenueProjection
{
    protected override bool SubtractsRefunds => false;
}

/// <summary>Version 2, fixed: a refund takes its amount off the customer's revenue.</summary>
public sealed class RevenuePerCustomerV2 : RevenueProjection
{
    protected override bool SubtractsRefunds => true;
}
