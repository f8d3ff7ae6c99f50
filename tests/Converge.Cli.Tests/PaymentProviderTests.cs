using Converge.Samples.Billing.Simulation;
using Converge.Testing;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Cli.Tests;

/// <summary>The Billing sample's simulated provider: throttling with Retry-After, outages, and idempotency keys.</summary>
public sealed class PaymentProviderTests : IDisposable
{
    readonly string _folder = Directory.CreateTempSubdirectory("converge-provider-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    PaymentProvider Start(FakeTimeProvider time, int callsPerSecond, TimeSpan outageEvery) => new(
        new PaymentProviderOptions
        {
            LedgerPath = Path.Combine(_folder, "ledger.db"),
            Latency = TimeSpan.Zero,
            CallsPerSecond = callsPerSecond,
            OutageEvery = outageEvery,
            OutageLength = TimeSpan.FromMilliseconds(300),
        },
        time);

    /// <summary>A charge of the account the key ends in, for the period 2026-11, with the key as its reference.</summary>
    static ChargeRequest Request(string key) =>
        new(key, "card-1", 1000, "EUR", key, long.Parse(key.AsSpan(key.LastIndexOf('-') + 1), System.Globalization.CultureInfo.InvariantCulture), "2026-11");

    [Fact]
    public async Task Above_its_limit_it_answers_429_with_the_time_until_the_next_second()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, 250, TimeSpan.Zero));
        await using var provider = Start(time, callsPerSecond: 3, outageEvery: TimeSpan.Zero);

        for (var i = 0; i < 3; i++)
        {
            Assert.True((await provider.ChargeAsync(Request("inv-" + i), CancellationToken.None)).Succeeded);
        }

        var throttled = await Assert.ThrowsAsync<ProviderThrottledException>(() => provider.ChargeAsync(Request("inv-3"), CancellationToken.None));
        time.Advance(throttled.RetryAfter);
        var charged = await provider.ChargeAsync(Request("inv-3"), CancellationToken.None);

        Assert.Equal(TimeSpan.FromMilliseconds(750), throttled.RetryAfter);
        Assert.Equal((1L, true), (provider.Throttled, charged.Succeeded));
    }

    [Fact]
    public async Task The_same_idempotency_key_replays_the_first_charge_and_never_charges_twice()
    {
        var time = new FakeTimeProvider();
        await using (var provider = Start(time, callsPerSecond: 100, outageEvery: TimeSpan.Zero))
        {
            var first = await provider.ChargeAsync(Request("inv-1"), CancellationToken.None);
            var again = await provider.ChargeAsync(Request("inv-1") with { AmountCents = 400 }, CancellationToken.None);

            Assert.Equal((first.Id, 1000L, false, true), (again.Id, again.AmountCents, first.Replayed, again.Replayed));
        }

        var ledger = PaymentProvider.ReadSummary(Path.Combine(_folder, "ledger.db"));
        Assert.Equal((1L, 0L, 1L), (ledger.Charges, ledger.DoubleCharges, ledger.Replays));
    }

    [Fact]
    public async Task Two_charges_for_one_account_and_period_under_different_keys_and_references_count_as_a_double_charge()
    {
        await using (var provider = Start(new FakeTimeProvider(), callsPerSecond: 100, outageEvery: TimeSpan.Zero))
        {
            await provider.ChargeAsync(Request("inv-7"), CancellationToken.None);
            await provider.ChargeAsync(Request("inv-8"), CancellationToken.None);

            // The invoice created twice: a new id, so a new key and reference, for the same account and period.
            await provider.ChargeAsync(Request("inv-again-7"), CancellationToken.None);

            // The same account in another period is a charge of its own.
            await provider.ChargeAsync(Request("inv-8") with { IdempotencyKey = "inv-dec-8", Reference = "inv-dec-8", Period = "2026-12" }, CancellationToken.None);
        }

        var ledger = PaymentProvider.ReadSummary(Path.Combine(_folder, "ledger.db"));
        Assert.Equal((4L, 1L), (ledger.Charges, ledger.DoubleCharges));
    }

    [Fact]
    public async Task During_an_outage_it_answers_503_and_charges_nothing()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        await using var provider = Start(time, callsPerSecond: 100, outageEvery: TimeSpan.FromSeconds(1));

        var outcomes = new List<string>();
        for (var i = 0; i < 10; i++)
        {
            try
            {
                await provider.ChargeAsync(Request("inv-" + i), CancellationToken.None);
                outcomes.Add("charged");
            }
            catch (ProviderUnavailableException)
            {
                outcomes.Add("unavailable");
            }

            time.Advance(TimeSpan.FromMilliseconds(100));
        }

        // 300 ms of every second is an outage.
        Assert.Equal(3, outcomes.Count(o => o == "unavailable"));
        Assert.Equal(3, provider.Unavailable);
    }
}
