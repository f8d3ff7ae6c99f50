using System.Runtime.CompilerServices;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests.Sagas;

/// <summary>
/// Instances recorded from a version 1 run (Fixtures/order-v1-instances.json: after start, mid-way, and while
/// compensating, with their logs and pending messages) are carried to the end by today's definitions, v1 and v2
/// registered. A change to the v1 definition that strands running instances fails here.
/// </summary>
public sealed class RecordedV1Tests
{
    const string FixtureName = "order-v1-instances.json";

    /// <summary>The clock the fixture was recorded on: its messages are due then, not at the fake clock's default start.</summary>
    static readonly DateTimeOffset RecordedAt = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);

    static string FixturePath => Path.Combine(AppContext.BaseDirectory, "Sagas", "Fixtures", FixtureName);

    [Fact]
    public async Task Recorded_v1_instances_continue_to_the_end_with_v1_and_v2_registered()
    {
        var recording = RecordedSagas.Load(FixturePath);
        Assert.Equal(
            ["after-start", "mid-way", "compensating", "compensating-two-steps"],
            recording.Instances.Select(i => i.Point));
        Assert.All(recording.Instances, i => Assert.Equal(1, i.Version));
        var time = new FakeTimeProvider(RecordedAt);
        var participants = new Participants();
        await using var host = await ShopSaga.StartAsync(participants, o => o.TimeProvider = time, sagas: o => o.AddSaga<OrderSaga>().AddSaga<OrderSagaV2>());

        await recording.ImportAsync(host.Store);
        var started = await host.WaitForSagaAsync("v1-after-start");
        var midway = await host.WaitForSagaAsync("v1-mid-way");

        // The compensations were sent and never answered: their timeouts, recorded as pending, bring them round again
        // after the retry backoff.
        ShopSaga.Advance(host, time, OrderSteps.StepTimeout + TimeSpan.FromSeconds(1));
        await ShopSaga.WaitForLogAsync(host, "v1-compensating", e => e.Kind == SagaLogKinds.TimeoutFired, "the v1-compensating timeout");
        await ShopSaga.WaitForLogAsync(host, "v1-compensating-two-steps", e => e.Kind == SagaLogKinds.TimeoutFired, "the v1-compensating-two-steps timeout");
        ShopSaga.Advance(host, time, TimeSpan.FromSeconds(1));
        var compensating = await host.WaitForSagaAsync("v1-compensating");
        var compensatingTwo = await host.WaitForSagaAsync("v1-compensating-two-steps");

        Assert.Equal((1, SagaState.Completed), (started.Version, started.State));
        Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("rec-1"));
        Assert.Equal((1, SagaState.Completed), (midway.Version, midway.State));
        Assert.Equal(["charge", "ship", "notify"], participants.EffectsOf("rec-2"));
        Assert.Equal("pay-rec-2", host.Sagas.ReadData<OrderData>(midway).PaymentId);
        Assert.Equal((1, SagaState.Compensated, "charge: charge refused"), (compensating.Version, compensating.State, compensating.Failure));
        Assert.Equal(["release"], participants.EffectsOf("rec-3"));
        Assert.Equal((1, SagaState.Compensated, "ship: ship refused"), (compensatingTwo.Version, compensatingTwo.State, compensatingTwo.Failure));
        Assert.Equal(["refund", "release"], participants.EffectsOf("rec-4"));

        foreach (var recorded in recording.Instances)
        {
            var log = await ShopSaga.LogAsync(host, recorded.TransactionId);
            Assert.Equal(
                recorded.Log.Select(e => (e.Kind, e.Step, e.MessageId, e.Detail)),
                log.Take(recorded.Log.Count).Select(e => (e.Kind, e.Step, e.MessageId, e.Detail)));
            Assert.True(log.Count > recorded.Log.Count);
            Assert.Single(await ShopSaga.OutcomesAsync(host, recorded.TransactionId));
        }

        Assert.Equal(0, (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).DeadLetters);
    }

    /// <summary>
    /// Records the fixture from a v1 run. Run once, on purpose, and commit the file:
    /// <c>CONVERGE_RECORD_SAGA_FIXTURES=1 dotnet test tests/Converge.Tests --filter Record_the_v1_fixture</c>.
    /// </summary>
    [RecordingFact]
    public async Task Record_the_v1_fixture()
    {
        var recording = new RecordedSagas
        {
            Description = "Order saga version 1 (reserve -> charge -> ship -> notify), recorded at several points on a manual clock that starts at 2030-01-01T00:00:00Z and never moves; with each instance's saga log and the messages still pending for it.",
        };

        // After start: nothing has run yet; the reserve command and its timeout are pending.
        await using (var host = await RecordingHostAsync(new Participants(), o => o.RunConsumers = false))
        {
            await host.Sagas.StartAsync("order", "v1-after-start", new OrderData { Order = "rec-1", Amount = 11 });
            recording.Instances.Add(await RecordedSagas.RecordAsync(host, "v1-after-start", "after-start"));
        }

        // Mid-way: reserved; the payments service is down, so the charge command waits on its queue.
        await using (var host = await RecordingHostAsync(new Participants(), without: ["payments"]))
        {
            await host.Sagas.StartAsync("order", "v1-mid-way", new OrderData { Order = "rec-2", Amount = 12 });
            await host.WaitForSagaAsync("v1-mid-way", i => i.StepIndex == 1);
            recording.Instances.Add(await RecordedSagas.RecordAsync(host, "v1-mid-way", "mid-way"));
        }

        // Compensating: the charge was refused; the release was handled but its reply never came.
        await using (var host = await RecordingHostAsync(new Participants().Refuse("rec-3", "charge").Silence("rec-3", "release")))
        {
            await host.Sagas.StartAsync("order", "v1-compensating", new OrderData { Order = "rec-3", Amount = 13 });
            await WaitForHandledAsync(host, "v1-compensating", "reserve");
            recording.Instances.Add(await RecordedSagas.RecordAsync(host, "v1-compensating", "compensating"));
        }

        // Compensating two steps: the pivot was refused; the refund was handled but its reply never came.
        await using (var host = await RecordingHostAsync(new Participants().Refuse("rec-4", "ship").Silence("rec-4", "refund")))
        {
            await host.Sagas.StartAsync("order", "v1-compensating-two-steps", new OrderData { Order = "rec-4", Amount = 14 });
            await WaitForHandledAsync(host, "v1-compensating-two-steps", "charge");
            recording.Instances.Add(await RecordedSagas.RecordAsync(host, "v1-compensating-two-steps", "compensating-two-steps"));
        }

        recording.Save(Path.Combine(SourceFolder(), "Fixtures", FixtureName));
    }

    static async Task WaitForHandledAsync(ConvergeTestHost host, string tx, string compensatedStep)
    {
        await ShopSaga.WaitForLogAsync(host, tx, e => e.Kind == SagaLogKinds.CompensationSent && e.Step == compensatedStep, "the compensation");
        await ShopSaga.WaitForFlowHandledAsync(host, tx, await ShopSaga.CommandIdAsync(host, tx, compensatedStep, kind: SagaLogKinds.CompensationSent));
    }

    static Task<ConvergeTestHost> RecordingHostAsync(Participants participants, Action<ConvergeOptions>? configure = null, string[]? without = null) =>
        ShopSaga.StartAsync(
            participants,
            o =>
            {
                o.TimeProvider = new FakeTimeProvider(RecordedAt);
                configure?.Invoke(o);
            },
            sagas: o => o.AddSaga<OrderSaga>(),
            without: without);

    static string SourceFolder([CallerFilePath] string path = "") => Path.GetDirectoryName(path)!;
}

/// <summary>A fact that runs only when CONVERGE_RECORD_SAGA_FIXTURES=1: it rewrites a committed fixture.</summary>
public sealed class RecordingFactAttribute : FactAttribute
{
    public RecordingFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("CONVERGE_RECORD_SAGA_FIXTURES") != "1")
        {
            Skip = "Records a committed fixture; set CONVERGE_RECORD_SAGA_FIXTURES=1 to record it again.";
        }
    }
}
