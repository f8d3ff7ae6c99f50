using System.Text;
using Converge.Samples.Reprocess;

namespace Converge.Cli.Tests;

/// <summary>
/// <c>converge demo reprocess</c>: a small run rebuilds the fixed version beside the live one and switches with no failed
/// read, on SQLite and on PostgreSQL; and its check can fail: a total that differs from the events, a row missing, a
/// failed read and reads that went back, planted into its input, are each reported.
/// </summary>
public sealed class DemoReprocessTests
{
    [Fact]
    public async Task A_small_run_rebuilds_the_fixed_version_beside_the_live_one_shows_the_bug_and_switches_with_no_failed_read()
    {
        using var folder = new TempFolder();

        var result = await Cli.RunAsync("demo", "reprocess", "--orders", "2000", "--db", folder.File("reprocess.db"), "--json");

        AssertPassed(result);
        Assert.Equal("sqlite", result.Json().GetProperty("store").GetString());
    }

    [Fact]
    public async Task A_small_run_on_PostgreSQL_switches_while_readers_read_two_views_in_one_statement_with_no_failed_read()
    {
        await using var schema = await DemoSchema.CreateAsync();

        var result = await Cli.RunAsync("demo", "reprocess", "--orders", "1500", "--postgres", PostgresStore.ConnectionString, "--schema", schema.Name, "--json");

        AssertPassed(result);
        Assert.Equal("postgresql", result.Json().GetProperty("store").GetString());
    }

    [Fact]
    public void Clean_totals_and_reads_pass()
    {
        var (expected, live, reads) = Input();

        var verification = ReprocessVerification.Verify(expected, live, reads);

        Assert.True(verification.Passed, string.Join("\n", verification.Problems));
        Assert.Equal((3, 0, 0, 0), (verification.Customers, verification.Mismatches, verification.FailedReads, verification.ReadsBack));
    }

    [Fact]
    public void A_live_total_that_differs_from_the_events_is_a_mismatch()
    {
        var (expected, live, reads) = Input();
        live[1] = live[1] with { RevenueCents = 9_000 };

        var verification = ReprocessVerification.Verify(expected, live, reads);

        Assert.False(verification.Passed);
        Assert.Equal(1, verification.Mismatches);
        Assert.Contains("c-2: the live view holds 2 orders and 90.00; the events give 2 orders and 70.00", verification.Problems);
    }

    [Fact]
    public void A_customer_missing_from_the_live_view_or_unknown_to_the_events_is_a_mismatch()
    {
        var (expected, live, reads) = Input();
        live.RemoveAt(2);
        live.Add(new CustomerTotal("c-9", 1, 100));

        var verification = ReprocessVerification.Verify(expected, live, reads);

        Assert.Equal(2, verification.Mismatches);
        Assert.Contains("c-3: missing from the live view; the events give 1 orders and 0.00", verification.Problems);
        Assert.Contains("c-9: the live view holds 1 orders and 1.00, but the events name no such customer", verification.Problems);
    }

    [Fact]
    public void A_failed_read_is_reported()
    {
        var (expected, live, reads) = Input();
        reads.Add(new ReadRecord(3, 40, 4, 0, 0, 0, "PostgresException: 40P01: deadlock detected"));

        var verification = ReprocessVerification.Verify(expected, live, reads);

        Assert.False(verification.Passed);
        Assert.Equal(1, verification.FailedReads);
        Assert.Contains("reader 3: a read failed: PostgresException: 40P01: deadlock detected", verification.Problems);
    }

    [Fact]
    public void A_read_that_sees_an_earlier_position_or_fewer_orders_than_a_finished_read_went_back()
    {
        var (expected, live, reads) = Input();
        reads.Add(new ReadRecord(2, 50, 5, 45, 5, 2, null));
        reads.Add(new ReadRecord(4, 50, 5, 50, 4, 2, null));

        var verification = ReprocessVerification.Verify(expected, live, reads);

        Assert.False(verification.Passed);
        Assert.Equal(2, verification.ReadsBack);
        Assert.Contains("reader 2: a read went back: position 45 and 5 orders (version 2) after a read had seen position 50 and 5 orders", verification.Problems);
        Assert.Contains("reader 4: a read went back: position 50 and 4 orders (version 2) after a read had seen position 50 and 5 orders", verification.Problems);
    }

    [Fact]
    public void Totals_are_computed_from_the_events_with_refunds_subtracted()
    {
        static (string, ReadOnlyMemory<byte>) Event(string type, string json) => (type + "@1", Encoding.UTF8.GetBytes(json));

        var totals = ReprocessVerification.Expected(
        [
            Event(OrderEvents.Placed, """{"orderId":"o-1","customerId":"c-1","amountCents":5000}"""),
            Event(OrderEvents.Paid, """{"orderId":"o-1","customerId":"c-1","amountCents":5000}"""),
            Event(OrderEvents.Refunded, """{"orderId":"o-1","customerId":"c-1","amountCents":2000}"""),
            Event(OrderEvents.Placed, """{"orderId":"o-2","customerId":"c-2","amountCents":700}"""),
            Event(OrderEvents.Cancelled, """{"orderId":"o-2","customerId":"c-2"}"""),
            Event("other.event", """{"customerId":"c-3"}"""),
        ]);

        Assert.Equal([new CustomerTotal("c-1", 1, 3000), new CustomerTotal("c-2", 1, 0)], totals.Values.OrderBy(t => t.CustomerId));
    }

    [Fact]
    public async Task An_existing_db_file_and_an_order_count_out_of_range_are_misuse()
    {
        using var folder = new TempFolder();
        var existing = folder.File("taken.db");
        await File.WriteAllTextAsync(existing, "");

        var taken = await Cli.RunAsync("demo", "reprocess", "--orders", "5", "--db", existing);
        var none = await Cli.RunAsync("demo", "reprocess", "--orders", "0");

        Assert.True(taken.ExitCode == 2, taken.ToString());
        Assert.Contains("already exists", taken.Error, StringComparison.Ordinal);
        Assert.True(none.ExitCode == 2, none.ToString());
        Assert.Contains("--orders must be between 1 and 5000000", none.Error, StringComparison.Ordinal);
    }

    static void AssertPassed(CliResult result)
    {
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.True(json.GetProperty("passed").GetBoolean(), result.ToString());
        Assert.True(json.GetProperty("switched").GetBoolean(), result.ToString());
        Assert.Equal(2, json.GetProperty("live_version").GetInt32());
        Assert.Equal((0, 0, 0), (json.GetProperty("mismatches").GetInt32(), json.GetProperty("failed_reads").GetInt32(), json.GetProperty("reads_back").GetInt32()));
        Assert.True(json.GetProperty("compare_differing_customers").GetInt32() > 0, "version 1's bug shows in the comparison");
        Assert.True(json.GetProperty("rebuild_events_per_second").GetDouble() > 0);
        Assert.True(json.GetProperty("rebuild_position").GetInt64() >= json.GetProperty("events_seeded").GetInt64());
        Assert.True(json.GetProperty("reads_of_v1").GetInt64() > 0 && json.GetProperty("reads_of_v2").GetInt64() > 0, result.ToString());
        Assert.True(json.GetProperty("events_during_run").GetInt64() > 0, "orders kept flowing");
    }

    /// <summary>Three customers' totals as the events give them, the live view agreeing, and reads that only moved forward.</summary>
    static (Dictionary<string, CustomerTotal> Expected, List<CustomerTotal> Live, List<ReadRecord> Reads) Input()
    {
        var expected = new[] { new CustomerTotal("c-1", 3, 12_000), new CustomerTotal("c-2", 2, 7_000), new CustomerTotal("c-3", 1, 0) }
            .ToDictionary(t => t.CustomerId, StringComparer.Ordinal);
        var live = expected.Values.ToList();
        var reads = new List<ReadRecord>
        {
            new(1, 0, 0, 10, 1, 1, null),
            new(2, 10, 1, 30, 3, 1, null),
            new(1, 30, 3, 30, 3, 1, null),
            new(3, 30, 3, 50, 5, 2, null),
        };
        return (expected, live, reads);
    }
}
