using Converge.Samples.Identity;

namespace Converge.Cli.Tests;

/// <summary>
/// <c>converge demo identity</c>: a small run passes, and its verification of what the clients saw can fail: a gap, a
/// duplicate, an event the store does not hold there and a missed deadline planted into its input are each reported.
/// </summary>
public sealed class DemoIdentityTests
{
    static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task A_small_run_completes_every_request_with_no_gap_or_duplicate_and_revisits_every_grant()
    {
        using var folder = new TempFolder();

        var result = await Cli.RunAsync("demo", "identity", "--requests", "20", "--db", folder.File("identity.db"), "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.True(json.GetProperty("passed").GetBoolean(), result.ToString());
        Assert.Equal(20, json.GetProperty("completed").GetInt32());
        Assert.Equal((0, 0, 0), (json.GetProperty("gaps").GetInt32(), json.GetProperty("duplicates").GetInt32(), json.GetProperty("mismatches").GetInt32()));
        Assert.Equal(0, json.GetProperty("grants_open").GetInt32());
        Assert.Equal(json.GetProperty("grants_made").GetInt32(), json.GetProperty("grants_confirmed").GetInt32() + json.GetProperty("grants_revoked").GetInt32());
        Assert.Equal(20, json.GetProperty("tiers").EnumerateArray().Sum(t => t.GetProperty("decided").GetInt32()));
        Assert.Equal(20, json.GetProperty("verified").GetInt32() + json.GetProperty("refused").GetInt32());
    }

    [Fact]
    public void Clean_reads_pass()
    {
        var (clients, stored) = Reads();

        var verification = IdentityVerification.Verify(clients, stored, Deadline);

        Assert.True(verification.Passed, string.Join("\n", verification.Problems));
        Assert.Equal((20, 0, 0, 0), (verification.Completed, verification.Gaps, verification.Duplicates, verification.Mismatches));
    }

    [Fact]
    public void A_version_a_client_never_received_is_a_gap()
    {
        var (clients, stored) = Reads();
        clients[4] = clients[4] with { Events = [.. clients[4].Events.Where(e => e.Version != 3)] };

        var verification = IdentityVerification.Verify(clients, stored, Deadline);

        Assert.False(verification.Passed);
        Assert.Equal(1, verification.Gaps);
        Assert.Contains("idv-000005 skipped version 3", verification.Problems);
    }

    [Fact]
    public void An_event_a_client_received_twice_is_a_duplicate()
    {
        var (clients, stored) = Reads();
        var events = clients[7].Events.ToList();
        events.Insert(3, events[2]);
        clients[7] = clients[7] with { Events = events };

        var verification = IdentityVerification.Verify(clients, stored, Deadline);

        Assert.False(verification.Passed);
        Assert.Equal(1, verification.Duplicates);
        Assert.Contains("idv-000008 repeated version 3", verification.Problems);
    }

    [Fact]
    public void An_event_the_store_does_not_hold_at_that_version_is_a_mismatch()
    {
        var (clients, stored) = Reads();
        var events = clients[2].Events.ToList();
        events[1] = events[1] with { Id = Guid.NewGuid() };
        clients[2] = clients[2] with { Events = events };

        var verification = IdentityVerification.Verify(clients, stored, Deadline);

        Assert.Equal(1, verification.Mismatches);
        Assert.Contains(verification.Problems, p => p.StartsWith("idv-000003: version 2 was received as ", StringComparison.Ordinal));
    }

    [Fact]
    public void A_p99_full_result_over_the_deadline_is_reported()
    {
        var (clients, stored) = Reads();
        clients[11] = clients[11] with { ResultTime = TimeSpan.FromSeconds(12) };

        var verification = IdentityVerification.Verify(clients, stored, Deadline);

        Assert.False(verification.Passed);
        Assert.Equal(TimeSpan.FromSeconds(12), verification.FullResultP99);
        Assert.Contains("p99 time to the full result is 12000 ms, not under the deadline of 10 s", verification.Problems);
    }

    [Fact]
    public void A_client_without_its_result_or_a_decision_is_reported()
    {
        var (clients, stored) = Reads();
        clients[0] = clients[0] with { Events = clients[0].Events.Take(2).ToList(), ResultTime = null, Decision = null, DecisionTime = null, Error = "no result within 60 s" };

        var verification = IdentityVerification.Verify(clients, stored, Deadline);

        Assert.Equal((19, 1), (verification.Completed, verification.Undecided));
        Assert.Contains("idv-000001: no result (no result within 60 s)", verification.Problems);
        Assert.Contains("idv-000001: the medium stake was never decided", verification.Problems);
    }

    [Fact]
    public void Each_stake_decides_on_what_it_needs()
    {
        var ocr = new Dictionary<string, string> { [Checks.Ocr] = Outcomes.Passed };
        var granted = new Dictionary<string, string> { [Checks.Ocr] = Outcomes.Passed, [Checks.Tamper] = Outcomes.Passed, [Checks.Register] = Outcomes.Granted };
        var unavailable = new Dictionary<string, string>(granted) { [Checks.Register] = Outcomes.Unavailable };
        var tampered = new Dictionary<string, string> { [Checks.Tamper] = Outcomes.Failed };
        var verified = new VerificationResult("idv-1", "verified", [], DegradedGrantMade: false);

        Assert.Equal("accept", Thresholds.Decide(StakeTier.Small, ocr, null));
        Assert.Null(Thresholds.Decide(StakeTier.Medium, ocr, null));
        Assert.Equal("accept", Thresholds.Decide(StakeTier.Medium, granted, null));
        Assert.Null(Thresholds.Decide(StakeTier.Medium, unavailable, null));
        Assert.Equal("refuse", Thresholds.Decide(StakeTier.Medium, tampered, null));
        Assert.Null(Thresholds.Decide(StakeTier.Large, granted, null));
        Assert.Equal("accept", Thresholds.Decide(StakeTier.Large, granted, verified));
        Assert.Equal((StakeTier.Small, StakeTier.Medium, StakeTier.Large), (Thresholds.TierOf(200), Thresholds.TierOf(5_000), Thresholds.TierOf(300_000)));
    }

    [Fact]
    public async Task An_existing_db_file_and_a_request_count_out_of_range_are_misuse()
    {
        using var folder = new TempFolder();
        var existing = folder.File("taken.db");
        await File.WriteAllTextAsync(existing, "");

        var taken = await Cli.RunAsync("demo", "identity", "--requests", "5", "--db", existing);
        var none = await Cli.RunAsync("demo", "identity", "--requests", "0");

        Assert.True(taken.ExitCode == 2, taken.ToString());
        Assert.Contains("already exists", taken.Error, StringComparison.Ordinal);
        Assert.True(none.ExitCode == 2, none.ToString());
        Assert.Contains("--requests must be between 1 and 10000", none.Error, StringComparison.Ordinal);
    }

    /// <summary>Twenty clients that each read their stream cleanly (six events: requested, four partial results, the result), and the store's streams.</summary>
    static (List<ClientRecord> Clients, Dictionary<string, IReadOnlyList<Guid>> Stored) Reads()
    {
        var clients = new List<ClientRecord>();
        var stored = new Dictionary<string, IReadOnlyList<Guid>>(StringComparer.Ordinal);
        for (var number = 1; number <= 20; number++)
        {
            var id = $"idv-{number:D6}";
            var events = Enumerable.Range(1, 6)
                .Select(v => new SeenEvent(v, Guid.NewGuid(), v switch { 1 => "identity.requested@1", 6 => "identity.result@1", _ => "identity.partial-result@1" }))
                .ToList();
            stored[id] = [.. events.Select(e => e.Id)];
            clients.Add(new ClientRecord(id, (StakeTier)(number % 3), events, "accept", TimeSpan.FromMilliseconds(500 + number), TimeSpan.FromMilliseconds(3_000 + (number * 10))));
        }

        return (clients, stored);
    }
}
