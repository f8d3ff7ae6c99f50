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
public sealed class RacingStore(IMessageStore inner, Func<SagaInstance, bool> loseRace) : IMessageStore, IDatabaseStore, IStoreQueries, ISagaQueries, IJobStore, IJobQueries
{
    readonly ConcurrentQueue<(string TransactionId, long Expected)> _lost = new();

    /// <summary>The saves that lost, in order.</summary>
    public IReadOnlyCollection<(string TransactionId, long Expected)> Lost => _lost;

    public IMessageStore Inner => inner;

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
    public ValueTask<IReadOnlyList<DeadLetter>> ListDeadLettersAsync(string? source, int max, CancellationToken cancellationToken) => inner.Queries().ListDeadLettersAsync(source, max, cancellationToken);
    public ValueTask<bool> RetryDeadLetterAsync(long id, CancellationToken cancellationToken) => inner.RetryDeadLetterAsync(id, cancellationToken);
    public ValueTask<bool> DiscardDeadLetterAsync(long id, CancellationToken cancellationToken) => inner.DiscardDeadLetterAsync(id, cancellationToken);
    public ValueTask<int> PurgeInboxAsync(DateTimeOffset handledBefore, CancellationToken cancellationToken) => inner.PurgeInboxAsync(handledBefore, cancellationToken);
    public ValueTask<StoreStatus> GetStatusAsync(CancellationToken cancellationToken) => inner.Queries().GetStatusAsync(cancellationToken);
    public ValueTask<SagaInstance?> GetSagaAsync(string transactionId, CancellationToken cancellationToken) => inner.SagaQueries().GetSagaAsync(transactionId, cancellationToken);
    public ValueTask<IReadOnlyList<SagaInstance>> QuerySagasAsync(SagaQuery query, CancellationToken cancellationToken) => inner.SagaQueries().QuerySagasAsync(query, cancellationToken);
    public ValueTask<IReadOnlyList<SagaCount>> CountSagasAsync(CancellationToken cancellationToken) => inner.SagaQueries().CountSagasAsync(cancellationToken);
    public ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken) => inner.SagaQueries().ReadSagaLogAsync(transactionId, cancellationToken);
    public ValueTask<IReadOnlyList<FlowItem>> ReadFlowAsync(string correlationId, CancellationToken cancellationToken) => inner.Queries().ReadFlowAsync(correlationId, cancellationToken);
    public ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken) => inner.ClaimAsync(queue, max, lease, policy, cancellationToken);
    public ValueTask<DbConnection> OpenReadConnectionAsync(CancellationToken cancellationToken) => inner.Database().OpenReadConnectionAsync(cancellationToken);
    public ValueTask<JobInfo?> GetJobAsync(Guid id, CancellationToken cancellationToken) => inner.JobQueries().GetJobAsync(id, cancellationToken);
    public ValueTask<IReadOnlyList<JobInfo>> ListJobsAsync(JobQuery query, CancellationToken cancellationToken) => inner.JobQueries().ListJobsAsync(query, cancellationToken);
    public ValueTask<JobCancelOutcome> CancelJobAsync(Guid id, CancellationToken cancellationToken) => inner.Jobs().CancelJobAsync(id, cancellationToken);
    public ValueTask<IReadOnlyList<Guid>> ReadCancellationsAsync(IReadOnlyList<Guid> ids, CancellationToken cancellationToken) => inner.Jobs().ReadCancellationsAsync(ids, cancellationToken);
    public ValueTask SaveJobProgressAsync(Guid id, int percent, string? note, CancellationToken cancellationToken) => inner.Jobs().SaveJobProgressAsync(id, percent, note, cancellationToken);
    public ValueTask<JobBatchRecord?> GetBatchAsync(string id, CancellationToken cancellationToken) => inner.JobQueries().GetBatchAsync(id, cancellationToken);
    public ValueTask<IReadOnlyList<RecurringJobRecord>> ListRecurringJobsAsync(CancellationToken cancellationToken) => inner.JobQueries().ListRecurringJobsAsync(cancellationToken);
    public ValueTask DisposeAsync() => inner.DisposeAsync();

    sealed class RacingTransaction(RacingStore store, IStoreTransaction inner) : IStoreTransaction, IDatabaseTransaction, ISagaTransaction, IJobTransaction
    {
        public DbTransaction Transaction => inner.Transaction;

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
        public ValueTask RegisterJobQueueAsync(string queue, CancellationToken cancellationToken) => inner.Jobs().RegisterJobQueueAsync(queue, cancellationToken);
        public ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken) => inner.ClaimAsync(queue, max, lease, policy, cancellationToken);
        public ValueTask<IReadOnlyList<LogEvent>> AppendAsync(string stream, long? expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken) => inner.AppendAsync(stream, expectedVersion, events, cancellationToken);
        public ValueTask<bool> TryRecordInboxAsync(string consumer, Envelope envelope, CancellationToken cancellationToken) => inner.TryRecordInboxAsync(consumer, envelope, cancellationToken);
        public ValueTask<bool> CompleteAsync(QueuedMessage message, CancellationToken cancellationToken) => inner.CompleteAsync(message, cancellationToken);
        public ValueTask<bool> RetryLaterAsync(QueuedMessage message, DateTimeOffset dueAt, AttemptRecord failure, CancellationToken cancellationToken) => inner.RetryLaterAsync(message, dueAt, failure, cancellationToken);
        public ValueTask<bool> DeadLetterAsync(QueuedMessage message, string reason, string? exception, AttemptRecord? failure, CancellationToken cancellationToken) => inner.DeadLetterAsync(message, reason, exception, failure, cancellationToken);
        public ValueTask RecordDeadLetterAsync(DeadLetterRecord letter, CancellationToken cancellationToken) => inner.RecordDeadLetterAsync(letter, cancellationToken);
        public ValueTask<bool> SaveConsumerGroupAsync(string group, long expectedPosition, long position, int failedAttempts, string? lastError, CancellationToken cancellationToken) => inner.SaveConsumerGroupAsync(group, expectedPosition, position, failedAttempts, lastError, cancellationToken);
        public ValueTask<int> ExecuteAsync(string sql, IReadOnlyList<KeyValuePair<string, object?>> parameters, CancellationToken cancellationToken) => inner.Database().ExecuteAsync(sql, parameters, cancellationToken);
        public ValueTask<SagaInstance?> LoadSagaAsync(string transactionId, CancellationToken cancellationToken) => inner.Sagas().LoadSagaAsync(transactionId, cancellationToken);
        public ValueTask<bool> InsertSagaAsync(SagaInstance instance, CancellationToken cancellationToken) => inner.Sagas().InsertSagaAsync(instance, cancellationToken);
        public ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken) => inner.Sagas().ReadSagaLogAsync(transactionId, cancellationToken);
        public ValueTask AppendSagaLogAsync(IReadOnlyList<SagaLogEntry> entries, CancellationToken cancellationToken) => inner.Sagas().AppendSagaLogAsync(entries, cancellationToken);
        public ValueTask SavepointAsync(CancellationToken cancellationToken) => inner.SavepointAsync(cancellationToken);
        public ValueTask RollbackToSavepointAsync(CancellationToken cancellationToken) => inner.RollbackToSavepointAsync(cancellationToken);
        public ValueTask ReleaseSavepointAsync(CancellationToken cancellationToken) => inner.ReleaseSavepointAsync(cancellationToken);
        public void OnCommitted(Action callback) => inner.OnCommitted(callback);
        public ValueTask<Guid?> TryReserveUniqueKeyAsync(string key, Guid jobId, DateTimeOffset expiresAt, CancellationToken cancellationToken) => inner.Jobs().TryReserveUniqueKeyAsync(key, jobId, expiresAt, cancellationToken);
        public ValueTask<bool> CreateBatchAsync(JobBatchRecord batch, CancellationToken cancellationToken) => inner.Jobs().CreateBatchAsync(batch, cancellationToken);
        public ValueTask AddToBatchAsync(string batchId, int count, CancellationToken cancellationToken) => inner.Jobs().AddToBatchAsync(batchId, count, cancellationToken);
        public ValueTask<JobBatchRecord?> RecordBatchOutcomesAsync(string batchId, int succeeded, int failed, CancellationToken cancellationToken) => inner.Jobs().RecordBatchOutcomesAsync(batchId, succeeded, failed, cancellationToken);
        public ValueTask<JobBatchRecord?> SealBatchAsync(string batchId, CancellationToken cancellationToken) => inner.Jobs().SealBatchAsync(batchId, cancellationToken);
        public ValueTask UpsertRecurringJobAsync(RecurringJobRecord schedule, CancellationToken cancellationToken) => inner.Jobs().UpsertRecurringJobAsync(schedule, cancellationToken);
        public ValueTask<IReadOnlyList<RecurringJobRecord>> LoadDueRecurringJobsAsync(DateTimeOffset now, CancellationToken cancellationToken) => inner.Jobs().LoadDueRecurringJobsAsync(now, cancellationToken);
        public ValueTask<bool> AdvanceRecurringJobAsync(string name, DateTimeOffset expectedNextAt, DateTimeOffset nextAt, DateTimeOffset? lastAt, CancellationToken cancellationToken) => inner.Jobs().AdvanceRecurringJobAsync(name, expectedNextAt, nextAt, lastAt, cancellationToken);
        public ValueTask<bool> RemoveRecurringJobAsync(string name, CancellationToken cancellationToken) => inner.Jobs().RemoveRecurringJobAsync(name, cancellationToken);
        public ValueTask ForgetJobStateAsync(IReadOnlyList<Guid> jobIds, CancellationToken cancellationToken) => inner.Jobs().ForgetJobStateAsync(jobIds, cancellationToken);
        public ValueTask CommitAsync(CancellationToken cancellationToken = default) => inner.CommitAsync(cancellationToken);
        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
