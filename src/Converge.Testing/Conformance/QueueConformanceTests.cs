using System.Text;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// The queue (<see cref="IQueueStore"/>, <see cref="IQueueTransaction"/>), part of the core every store must pass:
/// handling through the runtime, leases that expire and renew, release, claims inside a transaction, continued
/// deliveries and claim policies (limits in flight, a shared rate limit, oldest first). A store's test project derives
/// one class with its <see cref="ConformanceStore"/>; xunit runs every inherited fact against it.
/// </summary>
public abstract partial class QueueConformanceTests : StoreConformanceBase
{
    /// <summary>Runs the suite on <paramref name="store"/>.</summary>
    /// <param name="store">The store under test; the suite disposes it.</param>
    protected QueueConformanceTests(ConformanceStore store)
        : base(store)
    {
    }

    /// <summary>A lease that expires makes the message visible again, with the attempt counted.</summary>
    [Fact]
    public async Task Expired_lease_is_redelivered()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(configure: o => { o.RunConsumers = false; o.TimeProvider = time; });
        await host.Bus.SendAsync(new ConformanceCommand("leased"));

        var first = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(30), CancellationToken.None);
        var whileLeased = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(30), CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(31));
        var afterExpiry = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(30), CancellationToken.None);

        Assert.Equal(1, Assert.Single(first).Attempt);
        Assert.Empty(whileLeased);
        var redelivered = Assert.Single(afterExpiry);
        Assert.Equal(first[0].Envelope.MessageId, redelivered.Envelope.MessageId);
        Assert.Equal(2, redelivered.Attempt);
    }

    /// <summary>Renewing a lease keeps the message from other consumers for another full lease.</summary>
    [Fact]
    public async Task Renewed_lease_keeps_the_message_invisible()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(configure: o => { o.RunConsumers = false; o.TimeProvider = time; });
        await host.Bus.SendAsync(new ConformanceCommand("long-running"));
        var claimed = await host.Store.ClaimAsync(Queue, 1, TimeSpan.FromSeconds(10), CancellationToken.None);

        time.Advance(TimeSpan.FromSeconds(8));
        var renewed = await host.Store.RenewLeasesAsync(claimed, TimeSpan.FromSeconds(10), CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(8));
        var stillLeased = await host.Store.ClaimAsync(Queue, 1, TimeSpan.FromSeconds(10), CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(3));
        var expired = await host.Store.ClaimAsync(Queue, 1, TimeSpan.FromSeconds(10), CancellationToken.None);

        Assert.Equal(1, renewed);
        Assert.Empty(stillLeased);
        Assert.Single(expired);
        Assert.Equal(0, await host.Store.RenewLeasesAsync(claimed, TimeSpan.FromSeconds(10), CancellationToken.None));
    }

    /// <summary>A message that fails twice and then succeeds has exactly one effect.</summary>
    [Fact]
    public async Task Retried_message_that_finally_succeeds_has_one_effect()
    {
        await using var host = await StartAsync();

        var history = await host.SendAndWaitAsync(new ConformanceCommand("third-time", "fail-2"));

        Assert.Equal(["sent", "retry-scheduled", "retry-scheduled", "completed"], history.Select(h => h.What));
        Assert.Equal(1, await CountEffectsAsync(host, "third-time"));
    }

    /// <summary>Higher priorities are claimed first; equal priorities in send order.</summary>
    [Fact]
    public async Task Higher_priority_is_claimed_first()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await host.Bus.SendAsync(new ConformanceCommand("low-1"));
        await host.Bus.SendAsync(new ConformanceCommand("high"), new SendOptions { Priority = 5 });
        await host.Bus.SendAsync(new ConformanceCommand("low-2"));

        var claimed = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(30), CancellationToken.None);

        Assert.Equal(["high", "low-1", "low-2"], claimed.Select(c => System.Text.Json.JsonDocument.Parse(c.Envelope.Body).RootElement.GetProperty("key").GetString()));
    }

    /// <summary>A graceful release hands a message back without counting the attempt.</summary>
    [Fact]
    public async Task Released_message_is_visible_again_with_its_attempt_uncounted()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await host.Bus.SendAsync(new ConformanceCommand("released"));
        var claimed = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None);

        await host.Store.ReleaseAsync(claimed, countAttempt: false, CancellationToken.None);
        var again = Assert.Single(await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None));

        Assert.Equal(1, again.Attempt);
    }

    /// <summary>Messages and events sent from a handler carry its correlation id and name it as their cause.</summary>
    [Fact]
    public async Task Messages_sent_by_a_handler_carry_correlation_and_causation()
    {
        await using var host = await StartAsync(configure: o =>
        {
            o.Messages.Register<Relay>("conformance.relay");
            o.Handle<Relay, RelayHandler>("relay");
        });

        var history = await host.SendAndWaitAsync(new Relay("r"), new SendOptions { CorrelationId = "order-42" });

        var root = history.First(h => h.Envelope.MessageType == "conformance.relay@1").Envelope;
        var command = history.First(h => h.What == "completed" && h.Where == Queue).Envelope;
        var appended = history.First(h => h.What == "appended").Envelope;
        Assert.Equal("order-42", command.CorrelationId);
        Assert.Equal(root.MessageId, command.CausationId);
        Assert.Equal("order-42", appended.CorrelationId);
        Assert.Contains(history, h => h.Where == "log:" + Group && h.What == "completed");
    }

    /// <summary>A claim inside a transaction takes hold when it commits and leaves nothing behind when it rolls back.</summary>
    [Fact]
    public async Task Claim_in_a_transaction_shares_its_fate()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        for (var i = 0; i < 5; i++)
        {
            await host.Bus.SendAsync(new ConformanceCommand("in-tx-" + i));
        }

        await using (var rolledBack = await host.Store.BeginAsync(CancellationToken.None))
        {
            Assert.Equal(2, (await rolledBack.ClaimAsync(Queue, 2, TimeSpan.FromMinutes(5), new ClaimPolicy { MaxInFlight = 4 }, CancellationToken.None)).Count);
        }

        IReadOnlyList<QueuedMessage> committed;
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            committed = await transaction.ClaimAsync(Queue, 3, TimeSpan.FromMinutes(5), ClaimPolicy.Default, CancellationToken.None);
            await transaction.CommitAsync();
        }

        var rest = await ClaimAsync(host.Store, 10, ClaimPolicy.Default);
        Assert.Equal(3, committed.Count);
        Assert.Equal(2, rest.Count);
        Assert.Empty(committed.Select(m => m.Envelope.MessageId).Intersect(rest.Select(m => m.Envelope.MessageId)));
        Assert.True(await InTransactionAsync(host.Store, t => t.CompleteAsync(committed[0], CancellationToken.None)));
    }

    /// <summary>
    /// A requeued message continues where its earlier deliveries left off: its next claim counts the attempts already
    /// made and carries their failures; it stays invisible until it is due.
    /// </summary>
    [Fact]
    public async Task Requeued_message_keeps_its_attempts_and_history_and_waits_until_due()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var envelope = RawEnvelope("conformance.command@1", "{\"key\":\"continued\"}"u8.ToArray());
        AttemptRecord[] history = [new(1, time.GetUtcNow().AddMinutes(-2), "TimeoutException: first"), new(2, time.GetUtcNow().AddMinutes(-1), "TimeoutException: second")];

        await InTransactionAsync(store, t => t.EnqueueAsync(new OutgoingMessage(Queue, envelope, time.GetUtcNow().AddMinutes(1), Priority: 2) { Attempts = 2, History = history }, CancellationToken.None));
        var early = await store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        var due = Assert.Single(await store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None));

        Assert.Empty(early);
        Assert.Equal((envelope.MessageId, 3, 2), (due.Envelope.MessageId, due.Attempt, due.Priority));
        Assert.Equal(history, due.History);
        Assert.Equal("{\"key\":\"continued\"}", Encoding.UTF8.GetString(due.Envelope.Body.Span));
    }

    /// <summary>A concurrency limit counts the live leases of the queue: claims stop at the limit and resume as leases end.</summary>
    [Fact]
    public async Task Claim_policy_keeps_leases_in_flight_within_the_limit()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        for (var i = 0; i < 10; i++)
        {
            await host.Bus.SendAsync(new ConformanceCommand("limited-" + i));
        }

        var policy = new ClaimPolicy { MaxInFlight = 3 };
        var first = await ClaimAsync(host.Store, 10, policy);
        var atLimit = await ClaimAsync(host.Store, 10, policy);
        await InTransactionAsync(host.Store, t => t.CompleteAsync(first[0], CancellationToken.None));
        var afterCompletion = await ClaimAsync(host.Store, 10, policy);
        time.Advance(TimeSpan.FromMinutes(6));
        var afterExpiry = await ClaimAsync(host.Store, 10, policy);
        var unlimited = await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None);

        Assert.Equal(3, first.Count);
        Assert.Empty(atLimit);
        Assert.Single(afterCompletion);
        Assert.Equal(3, afterExpiry.Count);
        Assert.Equal(6, unlimited.Count);
    }

    /// <summary>
    /// A rate limit is a token bucket kept in the store: a full bucket allows a burst, then permits come back at the
    /// rate, never more than the burst; two processes on one store draw on the same bucket.
    /// </summary>
    [Fact]
    public async Task Claim_policy_rate_limit_is_a_token_bucket_shared_by_every_process()
    {
        var time = new FakeTimeProvider();
        await using var first = await StartIdleAsync(time, "shared");
        await using var second = await StartIdleAsync(time, "shared");
        for (var i = 0; i < 30; i++)
        {
            await first.Bus.SendAsync(new ConformanceCommand("rated-" + i));
        }

        var policy = new ClaimPolicy { RateLimit = new RateLimit(PermitsPerSecond: 10, Burst: 5) };
        var burst = await ClaimAsync(first.Store, 20, policy);
        var emptyBucket = await ClaimAsync(second.Store, 20, policy);
        time.Advance(TimeSpan.FromMilliseconds(300));
        var refilled = await ClaimAsync(second.Store, 20, policy);
        var drained = await ClaimAsync(first.Store, 20, policy);
        time.Advance(TimeSpan.FromSeconds(10));
        var capped = await ClaimAsync(first.Store, 20, policy);

        Assert.Equal(5, burst.Count);
        Assert.Empty(emptyBucket);
        Assert.Equal(3, refilled.Count);
        Assert.Empty(drained);
        Assert.Equal(5, capped.Count);
    }

    /// <summary>Claiming oldest first takes the longest-waiting message even when a newer one has a higher priority.</summary>
    [Fact]
    public async Task Claim_policy_oldest_first_ignores_priority()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        await host.Bus.SendAsync(new ConformanceCommand("old-low"));
        time.Advance(TimeSpan.FromSeconds(1));
        await host.Bus.SendAsync(new ConformanceCommand("new-high"), new SendOptions { Priority = 9 });
        await host.Bus.SendAsync(new ConformanceCommand("not-yet"), new SendOptions { Delay = TimeSpan.FromMinutes(1) });
        time.Advance(TimeSpan.FromSeconds(1));

        var oldest = await ClaimAsync(host.Store, 1, new ClaimPolicy { OldestFirst = true });
        var next = await ClaimAsync(host.Store, 5, new ClaimPolicy { OldestFirst = true });

        Assert.Equal("old-low", KeyOf(Assert.Single(oldest)));
        Assert.Equal("new-high", KeyOf(Assert.Single(next)));
    }

    static Task<IReadOnlyList<QueuedMessage>> ClaimAsync(IMessageStore store, int max, ClaimPolicy policy, string queue = Queue) =>
        store.ClaimAsync(queue, max, TimeSpan.FromMinutes(5), policy, CancellationToken.None).AsTask();
}
