using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;
using Converge.Testing.Conformance;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;

namespace Converge.RabbitMq.Tests;

/// <summary>
/// The transport's waits and timeouts run on the clock in <see cref="ConvergeOptions.TimeProvider"/>: on a fake clock
/// nothing time-dependent happens until the test advances it, and advancing it is enough.
/// </summary>
public sealed class InjectedClockTests(ITestOutputHelper output) : BrokerTestBase(output)
{
    [Fact]
    public async Task A_delayed_message_is_relayed_when_the_injected_clock_reaches_its_due_time()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(
            configure: o =>
            {
                o.RunConsumers = false;
                o.TimeProvider = time;
            },
            transport: t =>
            {
                t.RelayPollInterval = TimeSpan.FromHours(1);

                // Pausing an idle consumer wakes the relay: not during this test.
                t.IdleConsumerTimeout = TimeSpan.FromHours(1);
            });
        await ClaimAndCompleteAsync(host, await host.Bus.SendAsync(new ConformanceCommand("opens-the-route")));

        // Once the due one has left the outbox, the relay has seen the delayed one and sleeps until it is due, by the
        // clock it was given.
        await host.Bus.SendAsync(new ConformanceCommand("later"), new SendOptions { Delay = TimeSpan.FromMinutes(10) });
        await host.Bus.SendAsync(new ConformanceCommand("now"));

        // The clock moves 10 ms a check (at most a few minutes in all, short of the delayed message's due time): a
        // publish the broker refused (a quorum queue just declared may nack one) puts the relay into a backoff on this
        // clock, which a clock that never moved would never end.
        await Eventually.UntilAsync(
            async () =>
            {
                time.Advance(TimeSpan.FromMilliseconds(10));
                return await OutboxCountAsync(host) == 1;
            },
            "the due message relayed, the delayed one kept");

        time.Advance(TimeSpan.FromMinutes(10));

        await Eventually.UntilAsync(
            async () =>
            {
                time.Advance(TimeSpan.FromMilliseconds(10));
                return await OutboxCountAsync(host) == 0;
            },
            "the delayed message relayed once the clock reached its due time",
            TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task An_idle_consumer_stops_after_the_idle_timeout_on_the_injected_clock()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(
            configure: o =>
            {
                o.RunConsumers = false;
                o.TimeProvider = time;
            },
            transport: t => t.IdleConsumerTimeout = TimeSpan.FromMinutes(5));
        await ClaimAndCompleteAsync(host, await host.Bus.SendAsync(new ConformanceCommand("starts-the-consumer")));
        var consumer = Transport(host).Route(Queue).Consumer!;
        Assert.True(consumer.IsConsuming);

        time.Advance(TimeSpan.FromMinutes(5) + TimeSpan.FromSeconds(2));

        await Eventually.UntilAsync(() => Task.FromResult(!consumer.IsConsuming && consumer.Paused), "the idle consumer stopped", TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_claim_right_after_the_supervisor_returned_an_expired_lease_waits_for_its_redelivery()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(
            configure: o =>
            {
                o.RunConsumers = false;
                o.TimeProvider = time;
            },
            transport: t => t.ClaimWait = TimeSpan.FromMilliseconds(1));
        var id = await host.Bus.SendAsync(new ConformanceCommand("leased"));
        QueuedMessage? first = null;
        await Eventually.UntilAsync(async () => (first = (await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(30), CancellationToken.None)).SingleOrDefault()) is not null, "the first delivery");

        // Advancing the clock runs the lease supervisor's tick, which hands the delivery back to the broker before the
        // claim below looks: the claim must still wait for the redelivery (not just ClaimWait, 1 ms here).
        var consumer = Transport(host).Route(Queue).Consumer!;
        time.Advance(TimeSpan.FromSeconds(31));
        await Eventually.UntilAsync(() => Task.FromResult(consumer.ClaimedCount == 0), "the supervisor handed the delivery back", TimeSpan.FromSeconds(10));
        var again = Assert.Single(await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(30), CancellationToken.None));

        Assert.Equal((id, 1, 2), (again.Envelope.MessageId, first!.Attempt, again.Attempt));
    }

    static async Task ClaimAndCompleteAsync(ConvergeTestHost host, Guid id)
    {
        QueuedMessage? claimed = null;
        await Eventually.UntilAsync(async () => (claimed = (await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None)).SingleOrDefault()) is not null, "a delivery");
        Assert.Equal(id, claimed!.Envelope.MessageId);
        await using var transaction = await host.Store.BeginAsync(CancellationToken.None);
        Assert.True(await transaction.CompleteAsync(claimed, CancellationToken.None));
        await transaction.CommitAsync(CancellationToken.None);
    }
}
