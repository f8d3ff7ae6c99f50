using System.Text;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;
using Converge.Transports;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// The read-only queries (<see cref="IStoreQueries"/>) beyond what the core suites observe through them: a business
/// transaction's flow across the inbox, the queue, the dead letters and the log. A store's test project derives one
/// class with its <see cref="ConformanceStore"/>.
/// </summary>
public abstract class StoreQueriesConformanceTests : StoreConformanceBase
{
    /// <summary>Runs the suite on <paramref name="store"/>.</summary>
    /// <param name="store">The store under test; the suite disposes it.</param>
    protected StoreQueriesConformanceTests(ConformanceStore store)
        : base(store)
    {
    }

    /// <summary>
    /// The flow of a business transaction lists every message and event carrying its id: handled (from the inbox),
    /// still queued, dead-lettered, and appended to the log, with causation; nothing of other transactions.
    /// </summary>
    [Fact]
    public async Task Flow_shows_handled_pending_dead_lettered_and_logged_items_of_one_correlation_id()
    {
        await using var host = await StartAsync(configure: o =>
        {
            o.Messages.Register<Relay>("conformance.relay");
            o.Handle<Relay, RelayHandler>("relay");
        });
        const string Flow = "order-7";
        var handled = Guid.NewGuid();
        var deadLettered = Guid.NewGuid();
        var relay = Guid.NewGuid();

        await host.SendAndWaitAsync(new ConformanceCommand("flow-ok"), new SendOptions { MessageId = handled, CorrelationId = Flow });
        await host.SendAndWaitAsync(new ConformanceCommand("flow-bad", "permanent"), new SendOptions { MessageId = deadLettered, CorrelationId = Flow });
        var relayed = await host.SendAndWaitAsync(new Relay("flow"), new SendOptions { MessageId = relay, CorrelationId = Flow });
        var pending = await host.Bus.SendAsync(new ConformanceCommand("flow-later"), new SendOptions { CorrelationId = Flow, Delay = TimeSpan.FromHours(1) });
        var appended = await host.Bus.PublishAsync("flow-stream", new ConformanceEvent("flow-event"), new PublishOptions { CorrelationId = Flow });
        await host.SendAndWaitAsync(new ConformanceCommand("elsewhere"), new SendOptions { CorrelationId = "order-8" });

        var flow = await host.Store.Queries().ReadFlowAsync(Flow, CancellationToken.None);

        var relayedCommand = relayed.First(h => h.What == "completed" && h.Where == Queue).Envelope.MessageId;
        var relayedEvent = relayed.First(h => h.What == "appended").Envelope.MessageId;
        Assert.Equal(7, flow.Count);
        var byId = flow.ToDictionary(i => i.MessageId);
        Assert.Equal(("queue:" + Queue, "handled", "conformance.command@1"), (byId[handled].Where, byId[handled].Status, byId[handled].MessageType));
        Assert.NotNull(byId[handled].HandledAt);
        Assert.Equal(("dead-letters:" + Queue, "dead-lettered"), (byId[deadLettered].Where, byId[deadLettered].Status));
        Assert.Equal(("queue:relay", "handled"), (byId[relay].Where, byId[relay].Status));
        Assert.Equal(("queue:" + Queue, "handled", (Guid?)relay), (byId[relayedCommand].Where, byId[relayedCommand].Status, byId[relayedCommand].CausationId));
        Assert.Equal(("log:relay-flow", "appended", (Guid?)relay), (byId[relayedEvent].Where, byId[relayedEvent].Status, byId[relayedEvent].CausationId));
        Assert.Equal(("queue:" + Queue, "pending", null as DateTimeOffset?), (byId[pending].Where, byId[pending].Status, byId[pending].HandledAt));
        Assert.Equal(("log:flow-stream", "appended", "conformance.event@1"), (byId[appended.Envelope.MessageId].Where, byId[appended.Envelope.MessageId].Status, byId[appended.Envelope.MessageId].MessageType));
        Assert.Null(byId[handled].CausationId);
        Assert.Empty(await host.Store.Queries().ReadFlowAsync("order-unknown", CancellationToken.None));
    }

    /// <summary>
    /// Each queue's status gives the time its longest-waiting ready message became visible (sent, or come due): the
    /// age of the oldest message. Scheduled messages do not count until they are due; a queue with none ready has none.
    /// </summary>
    [Fact]
    public async Task Status_gives_the_time_the_oldest_ready_message_of_each_queue_became_visible()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 3, 1, 8, 0, 0, TimeSpan.Zero));
        await using var host = await StartIdleAsync(time);
        const string Later = "conformance-later";
        if (host.Store is TransportedStore transported)
        {
            // The rows stay in the store's queue table, where this suite reads them, instead of being relayed.
            transported.Transport.KeepInStore(Queue);
            transported.Transport.KeepInStore(Later);
        }

        var first = time.GetUtcNow();
        await EnqueueRawAsync(host.Store, Queue, null);
        time.Advance(TimeSpan.FromSeconds(5));
        await EnqueueRawAsync(host.Store, Queue, null);
        var due = time.GetUtcNow().AddMinutes(10);
        await EnqueueRawAsync(host.Store, Queue, due);
        await EnqueueRawAsync(host.Store, Later, due);

        var status = await StatusAsync(host);
        var queue = status.Queues.Single(q => q.Queue == Queue);
        Assert.Equal((2L, 1L, (DateTimeOffset?)first), (queue.Ready, queue.Scheduled, queue.OldestReadyAt));
        var later = status.Queues.Single(q => q.Queue == Later);
        Assert.Equal((0L, 1L, (DateTimeOffset?)null), (later.Ready, later.Scheduled, later.OldestReadyAt));

        time.Advance(TimeSpan.FromMinutes(11));
        status = await StatusAsync(host);
        Assert.Equal((3L, (DateTimeOffset?)first), (status.Queues.Single(q => q.Queue == Queue).Ready, status.Queues.Single(q => q.Queue == Queue).OldestReadyAt));
        Assert.Equal((1L, (DateTimeOffset?)due), (status.Queues.Single(q => q.Queue == Later).Ready, status.Queues.Single(q => q.Queue == Later).OldestReadyAt));
    }

    static async Task EnqueueRawAsync(IMessageStore store, string queue, DateTimeOffset? dueAt)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        await transaction.EnqueueAsync(new OutgoingMessage(queue, RawEnvelope("conformance.command@1", "{}"u8.ToArray()), dueAt), CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
    }
}
