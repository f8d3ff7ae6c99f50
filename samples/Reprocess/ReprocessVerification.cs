using System.Text.Json;

namespace Converge.Samples.Reprocess;

/// <summary>A customer's row: orders placed and revenue kept, in cents.</summary>
public sealed record CustomerTotal(string CustomerId, long Orders, long RevenueCents);

/// <summary>
/// One read of the live view by a reader: the position and orders it saw (and the version that served it), and what
/// the readers had already seen when it began (<paramref name="Floor"/>, <paramref name="OrdersFloor"/>): a read that
/// began after another ended must not see less. <paramref name="Error"/> is set when the read failed.
/// </summary>
public sealed record ReadRecord(int Reader, long Floor, long OrdersFloor, long Position, long Orders, int Version, string? Error);

/// <summary>What the reprocess demo's check found.</summary>
public sealed record ReprocessVerification(int Customers, int Mismatches, int FailedReads, int ReadsBack, IReadOnlyList<string> Problems)
{
    public bool Passed => Problems.Count == 0;

    /// <summary>At most this many examples of each kind of problem are listed.</summary>
    const int Examples = 10;

    /// <summary>
    /// Checks the live view after the switch against totals computed from the events themselves, and every read the
    /// readers made during the run: none may fail, none may see the view further back than a read that ended before it
    /// began.
    /// </summary>
    public static ReprocessVerification Verify(IReadOnlyDictionary<string, CustomerTotal> expected, IReadOnlyList<CustomerTotal> live, IReadOnlyList<ReadRecord> reads)
    {
        ArgumentNullException.ThrowIfNull(expected);
        ArgumentNullException.ThrowIfNull(live);
        ArgumentNullException.ThrowIfNull(reads);
        var problems = new List<string>();
        var mismatches = 0;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var row in live)
        {
            seen.Add(row.CustomerId);
            if (!expected.TryGetValue(row.CustomerId, out var want))
            {
                mismatches++;
                Example(problems, mismatches, $"{row.CustomerId}: the live view holds {row.Orders} orders and {Money(row.RevenueCents)}, but the events name no such customer");
            }
            else if (want != row)
            {
                mismatches++;
                Example(problems, mismatches, $"{row.CustomerId}: the live view holds {row.Orders} orders and {Money(row.RevenueCents)}; the events give {want.Orders} orders and {Money(want.RevenueCents)}");
            }
        }

        foreach (var (customer, want) in expected.Where(e => !seen.Contains(e.Key)).OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            mismatches++;
            Example(problems, mismatches, $"{customer}: missing from the live view; the events give {want.Orders} orders and {Money(want.RevenueCents)}");
        }

        if (mismatches > Examples)
        {
            problems.Add($"{mismatches} customers in all differ between the live view and the events");
        }

        var failed = 0;
        var back = 0;
        foreach (var read in reads)
        {
            if (read.Error is not null)
            {
                failed++;
                Example(problems, failed, $"reader {read.Reader}: a read failed: {read.Error}");
            }
            else if (read.Position < read.Floor || read.Orders < read.OrdersFloor)
            {
                back++;
                Example(problems, back, $"reader {read.Reader}: a read went back: position {read.Position} and {read.Orders} orders (version {read.Version}) after a read had seen position {read.Floor} and {read.OrdersFloor} orders");
            }
        }

        if (failed > Examples)
        {
            problems.Add($"{failed} reads in all failed");
        }

        if (back > Examples)
        {
            problems.Add($"{back} reads in all went back");
        }

        return new ReprocessVerification(expected.Count, mismatches, failed, back, problems);
    }

    /// <summary>What a customer's totals are, computed from the events alone (not by the projection's code).</summary>
    public static Dictionary<string, CustomerTotal> Expected(IEnumerable<(string Type, ReadOnlyMemory<byte> Body)> events)
    {
        ArgumentNullException.ThrowIfNull(events);
        var totals = new Dictionary<string, CustomerTotal>(StringComparer.Ordinal);
        foreach (var (type, body) in events)
        {
            using var json = JsonDocument.Parse(body);
            var root = json.RootElement;
            var name = type[..type.LastIndexOf('@')];
            var (orders, revenue) = name switch
            {
                OrderEvents.Placed => (1L, 0L),
                OrderEvents.Paid => (0L, root.GetProperty("amountCents").GetInt64()),
                OrderEvents.Refunded => (0L, -root.GetProperty("amountCents").GetInt64()),
                OrderEvents.Cancelled => (0L, 0L),
                _ => (-1L, 0L),
            };
            if (orders < 0)
            {
                continue;
            }

            var customer = root.GetProperty("customerId").GetString()!;
            var total = totals.GetValueOrDefault(customer) ?? new CustomerTotal(customer, 0, 0);
            totals[customer] = total with { Orders = total.Orders + orders, RevenueCents = total.RevenueCents + revenue };
        }

        return totals;
    }

    static void Example(List<string> problems, int count, string problem)
    {
        if (count <= Examples)
        {
            problems.Add(problem);
        }
    }

    static string Money(long cents) => (cents / 100m).ToString("N2", System.Globalization.CultureInfo.InvariantCulture);
}
