using System.Collections.Concurrent;
using System.Data.Common;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Sagas;
using Converge.Storage;

namespace Converge.Tests.Sagas;

/// <summary>
/// A store that loses the race for chosen saga saves: just before the save, "another writer" saves the instance
/// (its concurrency version moves on), so the store refuses the save as a concurrent writer's would. On SQLite
/// writers are serialized and this never happens by itself; a store with concurrent writers meets it routinely.
/// </summary>
public sealed class RacingStore(IMessageStore inner, Func<SagaInstance, bool> loseRace) : IMessageStore, IStoreDecorator, IDatabaseStore
{
    readonly ConcurrentQueue<(string TransactionId, long Expected)> _lost = new();

    /// <summary>The saves that lost, in order.</summary>
    public IReadOnlyCollection<(string TransactionId, long Expected)> Lost => _lost;

    public IMessageStore Inner => inner;

    IStore IStoreDecorator.Inner => inner;

    bool LosesRace(SagaInstance instance) => loseRace(instance);

    public string Name => inner.Name;
    public CommitSignals Signals => inner.Signals;
    public ValueTask MigrateAsync(CancellationToken cancellationToken) => inner.MigrateAsync(cancellationToken);
    public async ValueTask<IStoreTransaction> BeginAsync(CancellationToken cancellationToken) => new RacingTransaction(this, await inner.BeginAsync(cancellationToken));
    public IStoreTransaction Enlist(DbTransaction transaction) => new RacingTransaction(this, inner.Database().Enlist(transaction));
    public ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken) => inner.ClaimAsync(queue, max, lease, cancellationToken);
    public ValueTask<DateTimeOffset?> NextVisibleAtAsync(string queue, CancellationToken cancellationToken) => inner.NextVisibleAtAsync(queue, cancellationToken);
    public ValueTask<int> RenewLeasesAsync(IReadOnlyList<QueuedMessage> messages, TimeSpan lease, CancellationToken cancellationToken) => inner.RenewLeasesAsync(messages, lease, cancellationToken);
    public ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> messages, bool countAttempt, CancellationToken cancellationToken) => inner.ReleaseAsync(messages, countAttempt, cancellationToken);
    public ValueTask<IReadOnlyList<LogEvent>> ReadLogAsync(long afterPosition, int max, CancellationToken cancellationToken) => inner.ReadLogAsync(afterPosition, max, cancellationToken);
    public ValueTask<IReadOnlyList<LogEvent>> ReadStreamAsync(string stream, long fromVersion, int max, CancellationToken cancellationToken) => inner.ReadStreamAsync(stream, fromVersion, max, cancellationToken);
    public ValueTask<ConsumerGroupState?> GetConsumerGroupAsync(string group, CancellationToken cancellationToken) => inner.GetConsumerGroupAsync(group, cancellationToken);

    public ValueTask<long> GetLogHeadAsync(CancellationToken cancellationToken) => inner.GetLogHeadAsync(cancellationToken);
    public ValueTask<bool> RetryDeadLetterAsync(long id, CancellationToken cancellationToken) => inner.RetryDeadLetterAsync(id, cancellationToken);
    public ValueTask<bool> DiscardDeadLetterAsync(long id, CancellationToken cancellationToken) => inner.DiscardDeadLetterAsync(id, cancellationToken);
    public ValueTask<int> PurgeInboxAsync(DateTimeOffset handledBefore, CancellationToken cancellationToken) => inner.PurgeInboxAsync(handledBefore, cancellationToken);
    public ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken) => inner.ClaimAsync(queue, max, lease, policy, cancellationToken);
    public ValueTask<DbConnection> OpenReadConnectionAsync(CancellationToken cancellationToken) => inner.Database().OpenReadConnectionAsync(cancellationToken);

    public SqlDialect Dialect => inner.Database().Dialect;

    public string TableName(string name) => inner.Database().TableName(name);
    public ValueTask DisposeAsync() => inner.DisposeAsync();

    sealed class RacingTransaction(RacingStore store, IStoreTransaction inner) : IStoreTransaction, IStoreTransactionDecorator, ISagaTransaction
    {
        IStoreTransaction IStoreTransactionDecorator.Inner => inner;

        public async ValueTask<bool> UpdateSagaAsync(SagaInstance instance, long expectedVersion, CancellationToken cancellationToken)
        {
            if (store.LosesRace(instance))
            {
                await inner.Database().ExecuteAsync(
                    "UPDATE converge_sagas SET concurrency_version = concurrency_version + 1 WHERE transaction_id = @tx",
                    [new("@tx", instance.TransactionId)],
                    cancellationToken);
                store._lost.Enqueue((instance.TransactionId, expectedVersion));
            }

            return await inner.Sagas().UpdateSagaAsync(instance, expectedVersion, cancellationToken);
        }

        public ValueTask EnqueueAsync(OutgoingMessage message, CancellationToken cancellationToken) => inner.EnqueueAsync(message, cancellationToken);
        public ValueTask<bool> CancelScheduledAsync(string queue, Guid messageId, DateTimeOffset dueAt, CancellationToken cancellationToken) => inner.CancelScheduledAsync(queue, messageId, dueAt, cancellationToken);
        public ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken) => inner.ClaimAsync(queue, max, lease, policy, cancellationToken);
        public ValueTask<IReadOnlyList<LogEvent>> AppendAsync(string stream, long? expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken) => inner.AppendAsync(stream, expectedVersion, events, cancellationToken);
        public ValueTask<bool> TryRecordInboxAsync(string consumer, Envelope envelope, CancellationToken cancellationToken) => inner.TryRecordInboxAsync(consumer, envelope, cancellationToken);
        public ValueTask<bool> CompleteAsync(QueuedMessage message, CancellationToken cancellationToken) => inner.CompleteAsync(message, cancellationToken);
        public ValueTask<bool> RetryLaterAsync(QueuedMessage message, DateTimeOffset dueAt, AttemptRecord failure, CancellationToken cancellationToken) => inner.RetryLaterAsync(message, dueAt, failure, cancellationToken);
        public ValueTask<bool> DeadLetterAsync(QueuedMessage message, string reason, string? exception, AttemptRecord? failure, CancellationToken cancellationToken) => inner.DeadLetterAsync(message, reason, exception, failure, cancellationToken);
        public ValueTask RecordDeadLetterAsync(DeadLetterRecord letter, CancellationToken cancellationToken) => inner.RecordDeadLetterAsync(letter, cancellationToken);
        public ValueTask<bool> SaveConsumerGroupAsync(string group, long expectedPosition, long position, int failedAttempts, string? lastError, CancellationToken cancellationToken) => inner.SaveConsumerGroupAsync(group, expectedPosition, position, failedAttempts, lastError, cancellationToken);

        public ValueTask<SagaInstance?> LoadSagaAsync(string transactionId, CancellationToken cancellationToken) => inner.Sagas().LoadSagaAsync(transactionId, cancellationToken);
        public ValueTask<bool> InsertSagaAsync(SagaInstance instance, CancellationToken cancellationToken) => inner.Sagas().InsertSagaAsync(instance, cancellationToken);
        public ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken) => inner.Sagas().ReadSagaLogAsync(transactionId, cancellationToken);
        public ValueTask AppendSagaLogAsync(IReadOnlyList<SagaLogEntry> entries, CancellationToken cancellationToken) => inner.Sagas().AppendSagaLogAsync(entries, cancellationToken);
        public ValueTask SavepointAsync(CancellationToken cancellationToken) => inner.SavepointAsync(cancellationToken);
        public ValueTask SavepointBeforeNextAsync(CancellationToken cancellationToken) => inner.SavepointBeforeNextAsync(cancellationToken);
        public ValueTask FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
        public ValueTask RollbackToSavepointAsync(CancellationToken cancellationToken) => inner.RollbackToSavepointAsync(cancellationToken);
        public ValueTask ReleaseSavepointAsync(CancellationToken cancellationToken) => inner.ReleaseSavepointAsync(cancellationToken);
        public void OnCommitted(Action callback) => inner.OnCommitted(callback);
        public ValueTask CommitAsync(CancellationToken cancellationToken = default) => inner.CommitAsync(cancellationToken);
        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
