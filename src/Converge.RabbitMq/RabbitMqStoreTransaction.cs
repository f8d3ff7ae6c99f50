using System.Data.Common;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Sagas;
using Converge.Storage;

namespace Converge.RabbitMq;

/// <summary>
/// A transaction of the wrapped store that also settles broker deliveries: the outcome recorded for a delivery (done,
/// retry later, dead letter) is acknowledged to the broker only after the transaction commits. Rolled back (or undone
/// to a savepoint) the outcome is forgotten and the delivery stays claimed, as a rolled-back store write leaves the
/// lease in place; the worker then records another outcome or releases it.
/// </summary>
internal sealed class RabbitMqStoreTransaction : IStoreTransaction, IStoreTransactionDecorator, IJobTransaction
{
    readonly RabbitMqTransport _transport;
    readonly IStoreTransaction _inner;
    readonly List<Outcome> _outcomes = [];
    int _savepoint = -1;

    public RabbitMqStoreTransaction(RabbitMqTransport transport, IStoreTransaction inner)
    {
        _transport = transport;
        _inner = inner;
    }

    /// <summary>An acknowledgement waiting for the commit; cancelled when its savepoint is rolled back.</summary>
    sealed class Outcome(Delivery delivery)
    {
        public Delivery Delivery { get; } = delivery;

        public bool Cancelled { get; set; }
    }

    public IStoreTransaction Inner => _inner;

    public async ValueTask EnqueueAsync(OutgoingMessage message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (message.OrderingKey is not null && _transport.Route(message.Queue).Mode != RouteMode.Store)
        {
            // The broker hands a queue's messages to several consumers at once and redelivers a failed one behind the
            // rest: nothing there can keep one key's messages in order, or hold them behind a dead letter.
            throw new NotSupportedException(
                $"Queue '{message.Queue}' goes through RabbitMQ, which cannot keep the order of an ordering key (it delivers a queue's messages to several consumers at once and redelivers a failed one behind the rest). "
                + $"Send without SendOptions.OrderingKey, or keep the queue in the store (list it in RabbitMqTransportOptions.StoreQueues), where ordering keys are kept.");
        }

        await _inner.EnqueueAsync(message, cancellationToken);
        Sent(message.Queue);
    }

    /// <inheritdoc />
    /// <remarks>A scheduled message waits in the store's outbox until due, so the store can delete it until then.</remarks>
    public ValueTask<bool> CancelScheduledAsync(string queue, Guid messageId, DateTimeOffset dueAt, CancellationToken cancellationToken) =>
        _inner.CancelScheduledAsync(queue, messageId, dueAt, cancellationToken);

    /// <summary>The relay learns of the queue now and is woken when the message is committed.</summary>
    void Sent(string queue)
    {
        _transport.Sent(queue);
        var relay = _transport.Relay;
        _inner.OnCommitted(relay.Wake);
    }

    public ValueTask<bool> CompleteAsync(QueuedMessage message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!RabbitMqTransport.IsDelivered(message))
        {
            return _inner.CompleteAsync(message, cancellationToken);
        }

        if (_transport.Held(message) is not { } delivery)
        {
            return ValueTask.FromResult(false);
        }

        AcknowledgeOnCommit(delivery);
        return ValueTask.FromResult(true);
    }

    public async ValueTask<bool> RetryLaterAsync(QueuedMessage message, DateTimeOffset dueAt, AttemptRecord failure, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!RabbitMqTransport.IsDelivered(message))
        {
            return await _inner.RetryLaterAsync(message, dueAt, failure, cancellationToken);
        }

        if (_transport.Held(message) is not { } delivery)
        {
            return false;
        }

        // The retry waits in the outbox until due (the broker has no delayed delivery), carrying its attempts and
        // history; the relay publishes it again then.
        await EnqueueAsync(new OutgoingMessage(message.Queue, message.Envelope, dueAt, message.Priority) { Attempts = message.Attempt, History = [.. message.History, failure] }, cancellationToken);
        AcknowledgeOnCommit(delivery);
        return true;
    }

    public async ValueTask<bool> DeadLetterAsync(QueuedMessage message, string reason, string? exception, AttemptRecord? failure, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!RabbitMqTransport.IsDelivered(message))
        {
            return await _inner.DeadLetterAsync(message, reason, exception, failure, cancellationToken);
        }

        if (_transport.Held(message) is not { } delivery)
        {
            return false;
        }

        IReadOnlyList<AttemptRecord> history = failure is null ? message.History : [.. message.History, failure];
        await _inner.RecordDeadLetterAsync(new DeadLetterRecord(message.Queue, message.Envelope, reason) { Exception = exception, Attempts = message.Attempt, History = history, Priority = message.Priority }, cancellationToken);
        AcknowledgeOnCommit(delivery);
        return true;
    }

    void AcknowledgeOnCommit(Delivery delivery)
    {
        var outcome = new Outcome(delivery);
        _outcomes.Add(outcome);
        _inner.OnCommitted(() =>
        {
            if (!outcome.Cancelled)
            {
                _ = outcome.Delivery.Owner.SettleAsync(outcome.Delivery, acknowledge: true);
            }
        });
    }

    /// <inheritdoc />
    /// <remarks>A claim in a transaction is a job worker's (it claims the next jobs in the commit of the finished ones): job queues stay in the store.</remarks>
    public ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken)
    {
        _transport.KeepInStore(queue);
        return _inner.ClaimAsync(queue, max, lease, policy, cancellationToken);
    }

    public ValueTask RegisterJobQueueAsync(string queue, CancellationToken cancellationToken)
    {
        _transport.KeepInStore(queue);
        return _inner.Jobs().RegisterJobQueueAsync(queue, cancellationToken);
    }

    public async ValueTask SavepointAsync(CancellationToken cancellationToken)
    {
        await _inner.SavepointAsync(cancellationToken);
        _savepoint = _outcomes.Count;
    }

    public async ValueTask RollbackToSavepointAsync(CancellationToken cancellationToken)
    {
        await _inner.RollbackToSavepointAsync(cancellationToken);
        if (_savepoint >= 0)
        {
            for (var i = _savepoint; i < _outcomes.Count; i++)
            {
                _outcomes[i].Cancelled = true;
            }

            _outcomes.RemoveRange(_savepoint, _outcomes.Count - _savepoint);
            _savepoint = -1;
        }
    }

    public async ValueTask ReleaseSavepointAsync(CancellationToken cancellationToken)
    {
        await _inner.ReleaseSavepointAsync(cancellationToken);
        _savepoint = -1;
    }

    public ValueTask CommitAsync(CancellationToken cancellationToken = default) => _inner.CommitAsync(cancellationToken);

    public ValueTask DisposeAsync() => _inner.DisposeAsync();

    public void OnCommitted(Action callback) => _inner.OnCommitted(callback);

    public ValueTask<IReadOnlyList<LogEvent>> AppendAsync(string stream, long? expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken) =>
        _inner.AppendAsync(stream, expectedVersion, events, cancellationToken);

    public ValueTask<bool> TryRecordInboxAsync(string consumer, Envelope envelope, CancellationToken cancellationToken) =>
        _inner.TryRecordInboxAsync(consumer, envelope, cancellationToken);

    public ValueTask RecordDeadLetterAsync(DeadLetterRecord letter, CancellationToken cancellationToken) => _inner.RecordDeadLetterAsync(letter, cancellationToken);

    public ValueTask<bool> SaveConsumerGroupAsync(string group, long expectedPosition, long position, int failedAttempts, string? lastError, CancellationToken cancellationToken) =>
        _inner.SaveConsumerGroupAsync(group, expectedPosition, position, failedAttempts, lastError, cancellationToken);

    public ValueTask<Guid?> TryReserveUniqueKeyAsync(string key, Guid jobId, DateTimeOffset expiresAt, CancellationToken cancellationToken) =>
        _inner.Jobs().TryReserveUniqueKeyAsync(key, jobId, expiresAt, cancellationToken);

    public ValueTask<bool> CreateBatchAsync(JobBatchRecord batch, CancellationToken cancellationToken) => _inner.Jobs().CreateBatchAsync(batch, cancellationToken);

    public ValueTask AddToBatchAsync(string batchId, int count, CancellationToken cancellationToken) => _inner.Jobs().AddToBatchAsync(batchId, count, cancellationToken);

    public ValueTask<JobBatchRecord?> RecordBatchOutcomesAsync(string batchId, int succeeded, int failed, CancellationToken cancellationToken) =>
        _inner.Jobs().RecordBatchOutcomesAsync(batchId, succeeded, failed, cancellationToken);

    public ValueTask<JobBatchRecord?> SealBatchAsync(string batchId, CancellationToken cancellationToken) => _inner.Jobs().SealBatchAsync(batchId, cancellationToken);

    public ValueTask UpsertRecurringJobAsync(RecurringJobRecord schedule, CancellationToken cancellationToken) => _inner.Jobs().UpsertRecurringJobAsync(schedule, cancellationToken);

    public ValueTask<IReadOnlyList<RecurringJobRecord>> LoadDueRecurringJobsAsync(DateTimeOffset now, CancellationToken cancellationToken) =>
        _inner.Jobs().LoadDueRecurringJobsAsync(now, cancellationToken);

    public ValueTask<bool> AdvanceRecurringJobAsync(string name, DateTimeOffset expectedNextAt, DateTimeOffset nextAt, DateTimeOffset? lastAt, CancellationToken cancellationToken) =>
        _inner.Jobs().AdvanceRecurringJobAsync(name, expectedNextAt, nextAt, lastAt, cancellationToken);

    public ValueTask<bool> RemoveRecurringJobAsync(string name, CancellationToken cancellationToken) => _inner.Jobs().RemoveRecurringJobAsync(name, cancellationToken);

    public ValueTask ForgetJobStateAsync(IReadOnlyList<Guid> jobIds, CancellationToken cancellationToken) => _inner.Jobs().ForgetJobStateAsync(jobIds, cancellationToken);
}
