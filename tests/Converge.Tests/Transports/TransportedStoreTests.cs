using System.Collections.Concurrent;
using Converge.Contracts;
using Converge.Storage;
using Converge.Testing.InMemory;
using Converge.Transports;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests.Transports;

/// <summary>
/// How the runtime routes between a store and a transport, on the in-memory store and a broker kept in a list: an
/// outcome of a delivery is recorded in the store and acknowledged only after the commit (never after a rollback, or a
/// rollback to its savepoint), a retry goes back to the outbox with its attempts and history, a dead letter to the
/// store's dead letters, a send reaches the transport only once committed, and job queues stay in the store.
/// </summary>
public sealed class TransportedStoreTests : IAsyncDisposable
{
    const string Orders = "orders";
    const string Reports = "reports";
    static readonly TimeSpan Lease = TimeSpan.FromSeconds(30);

    readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
    readonly ListBroker _broker = new();
    readonly TransportedStore _store;

    public TransportedStoreTests()
    {
        _store = new TransportedStore(new InMemoryMessageStore(_time), _broker, [Reports]);
    }

    public ValueTask DisposeAsync() => _store.DisposeAsync();

    [Fact]
    public async Task A_completed_delivery_is_acknowledged_only_once_its_transaction_commits()
    {
        await _store.MigrateAsync(CancellationToken.None);
        var delivery = await DeliverAndClaimAsync();

        await using (var rolledBack = await _store.BeginAsync(CancellationToken.None))
        {
            Assert.True(await rolledBack.CompleteAsync(delivery, CancellationToken.None));
        }

        Assert.Empty(_broker.Acknowledged);
        Assert.True(_broker.Holds(delivery));

        await using var transaction = await _store.BeginAsync(CancellationToken.None);
        Assert.True(await transaction.CompleteAsync(delivery, CancellationToken.None));
        Assert.Empty(_broker.Acknowledged);
        await transaction.CommitAsync(CancellationToken.None);

        Assert.Equal([delivery.Id], _broker.Acknowledged);
    }

    [Fact]
    public async Task An_outcome_rolled_back_to_its_savepoint_is_not_acknowledged_and_the_next_one_is()
    {
        await _store.MigrateAsync(CancellationToken.None);
        var first = await DeliverAndClaimAsync();
        var second = await DeliverAndClaimAsync();

        await using var transaction = await _store.BeginAsync(CancellationToken.None);
        Assert.True(await transaction.CompleteAsync(first, CancellationToken.None));
        await transaction.SavepointAsync(CancellationToken.None);
        Assert.True(await transaction.CompleteAsync(second, CancellationToken.None));
        await transaction.RollbackToSavepointAsync(CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);

        Assert.Equal([first.Id], _broker.Acknowledged);
        Assert.True(_broker.Holds(second));
    }

    [Fact]
    public async Task A_retry_goes_back_to_the_outbox_with_its_attempts_and_history_and_the_delivery_is_acknowledged()
    {
        await _store.MigrateAsync(CancellationToken.None);
        var delivery = await DeliverAndClaimAsync(attempt: 2);
        var failure = new AttemptRecord(2, _time.GetUtcNow(), "System.TimeoutException: no answer");

        await using (var transaction = await _store.BeginAsync(CancellationToken.None))
        {
            Assert.True(await transaction.RetryLaterAsync(delivery, _time.GetUtcNow().AddMinutes(1), failure, CancellationToken.None));
            await transaction.CommitAsync(CancellationToken.None);
        }

        Assert.Equal([delivery.Id], _broker.Acknowledged);
        Assert.Equal([Orders], _broker.Sent);
        Assert.Empty(await _store.Store.ClaimAsync(Orders, 10, Lease, CancellationToken.None));
        _time.Advance(TimeSpan.FromMinutes(1));
        var again = Assert.Single(await _store.Store.ClaimAsync(Orders, 10, Lease, CancellationToken.None));
        Assert.Equal((delivery.Envelope.MessageId, 3), (again.Envelope.MessageId, again.Attempt));
        Assert.Equal([failure], again.History);
    }

    [Fact]
    public async Task A_dead_lettered_delivery_is_recorded_in_the_store_and_acknowledged()
    {
        await _store.MigrateAsync(CancellationToken.None);
        var delivery = await DeliverAndClaimAsync(attempt: 4);

        await using (var transaction = await _store.BeginAsync(CancellationToken.None))
        {
            Assert.True(await transaction.DeadLetterAsync(delivery, DeadLetterReasons.PermanentFailure, "System.InvalidOperationException: no such customer", null, CancellationToken.None));
            await transaction.CommitAsync(CancellationToken.None);
        }

        var letter = Assert.Single(await _store.ListDeadLettersAsync(Orders, 10, CancellationToken.None));
        Assert.Equal((delivery.Envelope.MessageId, DeadLetterReasons.PermanentFailure, 4), (letter.Envelope.MessageId, letter.Reason, letter.Attempts));
        Assert.Equal([delivery.Id], _broker.Acknowledged);
    }

    [Fact]
    public async Task An_outcome_for_a_delivery_no_longer_held_is_refused_and_writes_nothing()
    {
        await _store.MigrateAsync(CancellationToken.None);
        var delivery = await DeliverAndClaimAsync();
        await _store.ReleaseAsync([delivery], countAttempt: true, CancellationToken.None);

        await using (var transaction = await _store.BeginAsync(CancellationToken.None))
        {
            Assert.False(await transaction.CompleteAsync(delivery, CancellationToken.None));
            Assert.False(await transaction.RetryLaterAsync(delivery, _time.GetUtcNow(), new AttemptRecord(1, _time.GetUtcNow(), "x"), CancellationToken.None));
            Assert.False(await transaction.DeadLetterAsync(delivery, DeadLetterReasons.PermanentFailure, null, null, CancellationToken.None));
            await transaction.CommitAsync(CancellationToken.None);
        }

        Assert.Empty(_broker.Acknowledged);
        Assert.Equal([delivery.Id], _broker.Released);
        Assert.Empty(await _store.Store.ClaimAsync(Orders, 10, Lease, CancellationToken.None));
        Assert.Empty(await _store.ListDeadLettersAsync(null, 10, CancellationToken.None));
    }

    [Fact]
    public async Task A_send_reaches_the_transport_once_committed_and_a_keyed_send_to_a_carried_queue_is_refused()
    {
        await _store.MigrateAsync(CancellationToken.None);
        await using (var rolledBack = await _store.BeginAsync(CancellationToken.None))
        {
            await rolledBack.EnqueueAsync(new OutgoingMessage(Orders, NewEnvelope()), CancellationToken.None);
        }

        Assert.Empty(_broker.Sent);
        await using (var transaction = await _store.BeginAsync(CancellationToken.None))
        {
            await transaction.EnqueueAsync(new OutgoingMessage(Orders, NewEnvelope()), CancellationToken.None);
            Assert.Empty(_broker.Sent);
            var refused = await Assert.ThrowsAsync<NotSupportedException>(async () =>
                await transaction.EnqueueAsync(new OutgoingMessage(Orders, NewEnvelope()) { OrderingKey = "customer-7" }, CancellationToken.None));
            Assert.Contains("StoreQueues", refused.Message, StringComparison.Ordinal);
            await transaction.EnqueueAsync(new OutgoingMessage(Reports, NewEnvelope()) { OrderingKey = "customer-7" }, CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        Assert.Equal([Orders, Reports], _broker.Sent);
        Assert.Single(await _store.Store.ClaimAsync(Orders, 10, Lease, CancellationToken.None));
    }

    [Fact]
    public async Task Job_queues_and_queues_claimed_with_a_policy_stay_in_the_store()
    {
        await _store.MigrateAsync(CancellationToken.None);
        await using (var transaction = await _store.BeginAsync(CancellationToken.None))
        {
            await transaction.EnqueueAsync(new OutgoingMessage(Reports, NewEnvelope()), CancellationToken.None);
            await transaction.EnqueueAsync(new OutgoingMessage("invoices", NewEnvelope()), CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        Assert.False(_broker.Carries(Reports));
        Assert.NotNull(await _store.NextVisibleAtAsync(Reports, CancellationToken.None));
        Assert.Null(await _store.NextVisibleAtAsync("invoices", CancellationToken.None));
        var report = Assert.Single(await _store.ClaimAsync(Reports, 10, Lease, CancellationToken.None));
        Assert.True(report.Id > 0);

        var invoice = Assert.Single(await _store.ClaimAsync("invoices", 10, Lease, Storage.ClaimPolicy.Default, CancellationToken.None));

        Assert.False(_broker.Carries("invoices"));
        Assert.True(invoice.Id > 0);
        Assert.Empty(_broker.Received);
    }

    [Fact]
    public async Task Status_is_the_stores_with_the_transports_part_added()
    {
        await _store.MigrateAsync(CancellationToken.None);
        _broker.Deliver(Orders, NewEnvelope());
        _broker.Deliver(Orders, NewEnvelope());
        await DeliverAndClaimAsync();
        await using (var transaction = await _store.BeginAsync(CancellationToken.None))
        {
            await transaction.EnqueueAsync(new OutgoingMessage(Reports, NewEnvelope()), CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        var status = await _store.GetStatusAsync(CancellationToken.None);

        // The broker's messages have no age in the store; the store's own queue keeps its oldest ready message's time.
        Assert.Equal([new QueueStatus(Orders, 2, 0, 1, 0), new QueueStatus(Reports, 1, 0, 0, 0) { OldestReadyAt = _time.GetUtcNow() }], status.Queues);
        Assert.Equal(1, _broker.SettledReads);
        Assert.Equal("in-memory+list", _store.Name);
    }

    async Task<QueuedMessage> DeliverAndClaimAsync(int attempt = 1)
    {
        _broker.Deliver(Orders, NewEnvelope(), attempt);
        return Assert.Single(await _store.ClaimAsync(Orders, 1, Lease, CancellationToken.None));
    }

    Envelope NewEnvelope() => new()
    {
        MessageId = Guid.NewGuid(),
        MessageType = "shop.place-order@1",
        SentAt = _time.GetUtcNow(),
        Body = "{}"u8.ToArray(),
    };

    /// <summary>A broker kept in lists: what was delivered, received, acknowledged, released and sent, in order.</summary>
    sealed class ListBroker : IMessageTransport
    {
        readonly ConcurrentDictionary<string, byte> _storeQueues = new(StringComparer.Ordinal);
        readonly List<QueuedMessage> _ready = [];
        readonly Dictionary<long, QueuedMessage> _held = [];
        long _lastId;

        public string Name => "list";

        public CommitSignals Signals { get; } = new();

        public List<long> Received { get; } = [];

        public List<long> Acknowledged { get; } = [];

        public List<long> Released { get; } = [];

        public List<string> Sent { get; } = [];

        public int SettledReads { get; private set; }

        public void Deliver(string queue, Envelope envelope, int attempt = 1) =>
            _ready.Add(new QueuedMessage { Id = --_lastId, Queue = queue, Envelope = envelope, Attempt = attempt, LeaseToken = Guid.NewGuid() });

        public ValueTask StartAsync(IMessageStore store, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public bool Carries(string queue) => !_storeQueues.ContainsKey(queue);

        public void KeepInStore(string queue) => _storeQueues.TryAdd(queue, 0);

        public ValueTask<IReadOnlyList<QueuedMessage>> ReceiveAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken)
        {
            var taken = _ready.Where(m => m.Queue == queue).Take(max).ToList();
            foreach (var message in taken)
            {
                _ready.Remove(message);
                _held[message.Id] = message;
                Received.Add(message.Id);
            }

            return ValueTask.FromResult<IReadOnlyList<QueuedMessage>>(taken);
        }

        public bool Holds(QueuedMessage delivery) => _held.TryGetValue(delivery.Id, out var held) && held.LeaseToken == delivery.LeaseToken;

        public ValueTask<int> RenewAsync(IReadOnlyList<QueuedMessage> deliveries, TimeSpan lease, CancellationToken cancellationToken) =>
            ValueTask.FromResult(deliveries.Count(Holds));

        public ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> deliveries, bool countAttempt, CancellationToken cancellationToken)
        {
            foreach (var delivery in deliveries.Where(Holds))
            {
                _held.Remove(delivery.Id);
                Released.Add(delivery.Id);
            }

            return ValueTask.CompletedTask;
        }

        public void Acknowledge(QueuedMessage delivery)
        {
            if (_held.Remove(delivery.Id))
            {
                Acknowledged.Add(delivery.Id);
            }
        }

        void IMessageTransport.Sent(string queue) => Sent.Add(queue);

        public async ValueTask<T> ReadSettledAsync<T>(Func<ValueTask<T>> read, CancellationToken cancellationToken)
        {
            SettledReads++;
            return await read();
        }

        public ValueTask<StoreStatus> AddStatusAsync(StoreStatus stored, CancellationToken cancellationToken)
        {
            var queues = stored.Queues.ToDictionary(q => q.Queue, StringComparer.Ordinal);
            foreach (var queue in _ready.Select(m => m.Queue).Concat(_held.Values.Select(m => m.Queue)).Distinct())
            {
                var (ready, inFlight) = (_ready.Count(m => m.Queue == queue), _held.Values.Count(m => m.Queue == queue));
                queues[queue] = queues.TryGetValue(queue, out var inStore)
                    ? inStore with { Ready = inStore.Ready + ready, InFlight = inStore.InFlight + inFlight }
                    : new QueueStatus(queue, ready, 0, inFlight, 0);
            }

            return ValueTask.FromResult(stored with { Queues = [.. queues.Values.OrderBy(q => q.Queue, StringComparer.Ordinal)] });
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
