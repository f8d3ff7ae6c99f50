using System.Data.Common;
using Converge.Contracts;

namespace Converge.Storage;

/// <summary>
/// A durable store: the queue, the log, the inbox and the dead letters on one database. Every implementation
/// passes the conformance suite in Converge.Testing. Implementations are thread-safe.
/// </summary>
public interface IMessageStore : IAsyncDisposable
{
    /// <summary>A short name for diagnostics, such as <c>sqlite</c>.</summary>
    string Name { get; }

    /// <summary>Signals rung after this process commits queue or log writes.</summary>
    CommitSignals Signals { get; }

    /// <summary>
    /// How many write transactions of one worker are worth running at once. A store with one writer at a time
    /// (SQLite) says 1, the default; a server whose commits overlap (PostgreSQL) says more, and a job queue then
    /// commits that many groups of finished jobs in parallel.
    /// </summary>
    int ParallelWriters => 1;

    /// <summary>Applies pending schema migrations. Safe when several processes start at once.</summary>
    ValueTask MigrateAsync(CancellationToken cancellationToken);

    /// <summary>Begins a write transaction owned by Converge. Dispose without commit rolls back.</summary>
    ValueTask<IStoreTransaction> BeginAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Wraps the caller's own open transaction on the same database (the outbox). A transaction begun by
    /// <see cref="BeginAsync"/> is recognised and returned as is. The caller commits or rolls
    /// back; Converge's writes share its fate. Throws when the transaction belongs to another kind of database.
    /// </summary>
    IStoreTransaction Enlist(DbTransaction transaction);

    /// <summary>Claims up to <paramref name="max"/> visible messages of <paramref name="queue"/> under a lease.</summary>
    ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken);

    /// <summary>
    /// Claims like <see cref="ClaimAsync(string, int, TimeSpan, CancellationToken)"/>, within the limits of
    /// <paramref name="policy"/>: its concurrency limit and rate limit hold across every process on the store.
    /// </summary>
    ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken);

    /// <summary>When the next message of <paramref name="queue"/> becomes visible; <c>null</c> when the queue is empty.</summary>
    ValueTask<DateTimeOffset?> NextVisibleAtAsync(string queue, CancellationToken cancellationToken);

    /// <summary>Extends the leases still held; returns how many were extended.</summary>
    ValueTask<int> RenewLeasesAsync(IReadOnlyList<QueuedMessage> messages, TimeSpan lease, CancellationToken cancellationToken);

    /// <summary>
    /// Gives leased messages back, visible now. With <paramref name="countAttempt"/> <c>false</c> (a graceful
    /// shutdown) the attempt is not counted; with <c>true</c> (a failed batch) it is.
    /// </summary>
    ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> messages, bool countAttempt, CancellationToken cancellationToken);

    /// <summary>Reads up to <paramref name="max"/> events after <paramref name="afterPosition"/>, in position order.</summary>
    ValueTask<IReadOnlyList<LogEvent>> ReadLogAsync(long afterPosition, int max, CancellationToken cancellationToken);

    /// <summary>Reads events of one stream from <paramref name="fromVersion"/> (1-based), in version order.</summary>
    ValueTask<IReadOnlyList<LogEvent>> ReadStreamAsync(string stream, long fromVersion, int max, CancellationToken cancellationToken);

    /// <summary>The state of a consumer group; <c>null</c> when it has never run.</summary>
    ValueTask<ConsumerGroupState?> GetConsumerGroupAsync(string group, CancellationToken cancellationToken);

    /// <summary>Lists dead letters, newest first, optionally of one source only.</summary>
    ValueTask<IReadOnlyList<DeadLetter>> ListDeadLettersAsync(string? source, int max, CancellationToken cancellationToken);

    /// <summary>Moves a dead letter back onto its queue with a fresh attempt count; <c>false</c> when it does not exist or came from the log.</summary>
    ValueTask<bool> RetryDeadLetterAsync(long id, CancellationToken cancellationToken);

    /// <summary>Deletes a dead letter; <c>false</c> when it does not exist.</summary>
    ValueTask<bool> DiscardDeadLetterAsync(long id, CancellationToken cancellationToken);

    /// <summary>
    /// Deletes inbox records handled before <paramref name="handledBefore"/>, and unique job keys that have expired;
    /// returns how many inbox records.
    /// </summary>
    ValueTask<int> PurgeInboxAsync(DateTimeOffset handledBefore, CancellationToken cancellationToken);

    /// <summary>Queue depths, dead letters, log head and consumer-group lag.</summary>
    ValueTask<StoreStatus> GetStatusAsync(CancellationToken cancellationToken);

    /// <summary>The saga instance of <paramref name="transactionId"/>; <c>null</c> when there is none.</summary>
    ValueTask<SagaInstance?> GetSagaAsync(string transactionId, CancellationToken cancellationToken);

    /// <summary>Saga instances matching <paramref name="query"/>, most recently started first.</summary>
    ValueTask<IReadOnlyList<SagaInstance>> QuerySagasAsync(SagaQuery query, CancellationToken cancellationToken);

    /// <summary>Instances counted per definition, version and state.</summary>
    ValueTask<IReadOnlyList<SagaCount>> CountSagasAsync(CancellationToken cancellationToken);

    /// <summary>Everything that happened to the saga instance of <paramref name="transactionId"/>, oldest first.</summary>
    ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken);

    /// <summary>
    /// Every message and event that carries <paramref name="correlationId"/>: handled (from the inbox), still queued,
    /// dead-lettered, or appended to the log. Unordered; the flow view orders them by causation.
    /// </summary>
    ValueTask<IReadOnlyList<FlowItem>> ReadFlowAsync(string correlationId, CancellationToken cancellationToken);

    /// <summary>
    /// Opens a read-only connection to the store's database for a job that re-reads the world before it acts,
    /// outside any write transaction. The caller disposes it.
    /// </summary>
    ValueTask<DbConnection> OpenReadConnectionAsync(CancellationToken cancellationToken);

    /// <summary>The job <paramref name="id"/> wherever it is (queue, inbox, dead letters); <c>null</c> when unknown.</summary>
    ValueTask<JobInfo?> GetJobAsync(Guid id, CancellationToken cancellationToken);

    /// <summary>Jobs matching <paramref name="query"/>, newest first, from the queues registered as job queues.</summary>
    ValueTask<IReadOnlyList<JobInfo>> ListJobsAsync(JobQuery query, CancellationToken cancellationToken);

    /// <summary>
    /// Cancels job <paramref name="id"/>: a waiting job moves to the dead letters with reason
    /// <see cref="DeadLetterReasons.Cancelled"/> (counted as failed in its batch); a running one is flagged for its
    /// worker, which <see cref="ReadCancellationsAsync"/> tells.
    /// </summary>
    ValueTask<JobCancelOutcome> CancelJobAsync(Guid id, CancellationToken cancellationToken);

    /// <summary>Which of <paramref name="ids"/> have a pending cancellation request.</summary>
    ValueTask<IReadOnlyList<Guid>> ReadCancellationsAsync(IReadOnlyList<Guid> ids, CancellationToken cancellationToken);

    /// <summary>Stores the progress of a running job (0 to 100, with an optional note) in its own short transaction.</summary>
    ValueTask SaveJobProgressAsync(Guid id, int percent, string? note, CancellationToken cancellationToken);

    /// <summary>The batch <paramref name="id"/>; <c>null</c> when unknown.</summary>
    ValueTask<JobBatchRecord?> GetBatchAsync(string id, CancellationToken cancellationToken);

    /// <summary>Every recurring schedule, by name.</summary>
    ValueTask<IReadOnlyList<RecurringJobRecord>> ListRecurringJobsAsync(CancellationToken cancellationToken);
}

/// <summary>
/// One write transaction: either Converge's own (from <see cref="IMessageStore.BeginAsync"/>) or the caller's
/// (from <see cref="IMessageStore.Enlist"/>). Everything written through it commits or rolls back together
/// with the caller's own writes on <see cref="Transaction"/>.
/// </summary>
public interface IStoreTransaction : IAsyncDisposable
{
    /// <summary>
    /// The underlying transaction; use its connection for the caller's own writes (an EF Core <c>DbContext</c> can join
    /// it). A transaction Converge owns must be committed with <see cref="CommitAsync"/>, never through this object:
    /// a store may hold the transaction's sends until that commit writes them in one statement.
    /// </summary>
    DbTransaction Transaction { get; }

    /// <summary>Puts a message on a queue.</summary>
    ValueTask EnqueueAsync(OutgoingMessage message, CancellationToken cancellationToken);

    /// <summary>
    /// Puts a message on a queue as the continuation of earlier deliveries: it keeps the <paramref name="attempts"/>
    /// already made (its next claim is attempt <paramref name="attempts"/> + 1) and their failures,
    /// <paramref name="history"/>, oldest first. A transport that delivers messages from a broker hands one back to
    /// the store this way (a retry with backoff, a graceful release) without resetting its count. Visible at
    /// <see cref="OutgoingMessage.DueAt"/> (now when <c>null</c>); consumers are woken as for <see cref="EnqueueAsync"/>.
    /// </summary>
    ValueTask RequeueAsync(OutgoingMessage message, int attempts, IReadOnlyList<AttemptRecord> history, CancellationToken cancellationToken);

    /// <summary>
    /// Appends events to a stream; <paramref name="expectedVersion"/> <c>null</c> appends at any version, 0 requires a
    /// new stream. Returns the stored events with their positions.
    /// </summary>
    /// <exception cref="StreamVersionConflictException">The stream is not at <paramref name="expectedVersion"/>.</exception>
    ValueTask<IReadOnlyList<LogEvent>> AppendAsync(string stream, long? expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken);

    /// <summary>
    /// Records that <paramref name="consumer"/> handled <paramref name="envelope"/> (its id, type, correlation and
    /// causation, which the flow view reads back); <c>false</c> when it already had.
    /// </summary>
    ValueTask<bool> TryRecordInboxAsync(string consumer, Envelope envelope, CancellationToken cancellationToken);

    /// <summary>
    /// Records several handled messages at once; element <c>i</c> tells whether <paramref name="envelopes"/>[i] was
    /// new (a message id repeated in the list is new only the first time). Stores that pay a round trip per statement
    /// override this with one statement; the default records one by one.
    /// </summary>
    async ValueTask<IReadOnlyList<bool>> TryRecordInboxAsync(string consumer, IReadOnlyList<Envelope> envelopes, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(envelopes);
        var recorded = new bool[envelopes.Count];
        for (var i = 0; i < envelopes.Count; i++)
        {
            recorded[i] = await TryRecordInboxAsync(consumer, envelopes[i], cancellationToken);
        }

        return recorded;
    }

    /// <summary>
    /// Claims like <see cref="IMessageStore.ClaimAsync(string, int, TimeSpan, ClaimPolicy, CancellationToken)"/>, inside
    /// this transaction: the leases take hold when it commits and vanish if it rolls back. A worker that commits the
    /// outcomes of finished messages claims the next ones in the same commit.
    /// </summary>
    ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken);

    /// <summary>Removes a handled message; <c>false</c> when the lease was lost to another consumer.</summary>
    ValueTask<bool> CompleteAsync(QueuedMessage message, CancellationToken cancellationToken);

    /// <summary>
    /// Removes several handled messages; returns how many were still leased to their claimer (the rest were lost to
    /// another consumer). Stores that pay a round trip per statement override this with one statement.
    /// </summary>
    async ValueTask<int> CompleteAsync(IReadOnlyList<QueuedMessage> messages, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var completed = 0;
        foreach (var message in messages)
        {
            completed += await CompleteAsync(message, cancellationToken) ? 1 : 0;
        }

        return completed;
    }

    /// <summary>Makes a failed message visible again at <paramref name="dueAt"/>, recording the attempt.</summary>
    ValueTask<bool> RetryLaterAsync(QueuedMessage message, DateTimeOffset dueAt, AttemptRecord failure, CancellationToken cancellationToken);

    /// <summary>Moves a message to the dead letters with its reason; <c>false</c> when the lease was lost.</summary>
    ValueTask<bool> DeadLetterAsync(QueuedMessage message, string reason, string? exception, AttemptRecord? failure, CancellationToken cancellationToken);

    /// <summary>
    /// Records a dead letter for a message that is not a row of this store's queue: one a transport received from a
    /// broker, or one the broker dead-lettered itself. <paramref name="queue"/> is the queue it came from (the dead
    /// letter's source, where <see cref="IMessageStore.RetryDeadLetterAsync"/> puts it back), <paramref name="attempts"/>
    /// the delivery attempts made and <paramref name="history"/> their failures, oldest first.
    /// </summary>
    ValueTask RecordDeadLetterAsync(string queue, Envelope envelope, int priority, string reason, string? exception, int attempts, IReadOnlyList<AttemptRecord> history, CancellationToken cancellationToken);

    /// <summary>Parks a log event a consumer group could not handle.</summary>
    ValueTask ParkEventAsync(string group, LogEvent logEvent, string reason, string? exception, int attempts, CancellationToken cancellationToken);

    /// <summary>
    /// Stores a consumer group's checkpoint and failure count if the stored position is still
    /// <paramref name="expectedPosition"/>; <c>false</c> when another process moved it first (then roll back).
    /// </summary>
    ValueTask<bool> SaveConsumerGroupAsync(string group, long expectedPosition, long position, int failedAttempts, string? lastError, CancellationToken cancellationToken);

    /// <summary>
    /// Executes <paramref name="sql"/> with <paramref name="parameters"/> in this transaction and returns the number
    /// of rows affected. Stores may prepare the statement once per connection and reuse it, which makes repeated
    /// small writes much cheaper than a new command each time.
    /// </summary>
    ValueTask<int> ExecuteAsync(string sql, IReadOnlyList<KeyValuePair<string, object?>> parameters, CancellationToken cancellationToken);

    /// <summary>
    /// Deletes a message that waits on <paramref name="queue"/>, unclaimed, to become visible at
    /// <paramref name="dueAt"/> (a scheduled message no longer needed, such as a saga step's timeout once the reply
    /// came); <c>false</c> when it is not there (handled, leased, or already handed to a broker). The queue and due
    /// time let the store find the row by its queue index. Stores that cannot delete return <c>false</c>, and the
    /// message is then delivered and must be ignored by its handler.
    /// </summary>
    ValueTask<bool> CancelScheduledAsync(string queue, Guid messageId, DateTimeOffset dueAt, CancellationToken cancellationToken) =>
        ValueTask.FromResult(false);

    /// <summary>Loads the saga instance of <paramref name="transactionId"/> inside this transaction; <c>null</c> when none.</summary>
    ValueTask<SagaInstance?> LoadSagaAsync(string transactionId, CancellationToken cancellationToken);

    /// <summary>Stores a new saga instance; <c>false</c> when one with its transaction id already exists.</summary>
    ValueTask<bool> InsertSagaAsync(SagaInstance instance, CancellationToken cancellationToken);

    /// <summary>
    /// Saves <paramref name="instance"/> if the stored one is still at <paramref name="expectedVersion"/>, and sets its
    /// <see cref="SagaInstance.ConcurrencyVersion"/> to the next version; <c>false</c> when another writer saved first.
    /// </summary>
    ValueTask<bool> UpdateSagaAsync(SagaInstance instance, long expectedVersion, CancellationToken cancellationToken);

    /// <summary>
    /// The saga log of <paramref name="transactionId"/> as this transaction sees it, oldest first: what is committed
    /// and what this transaction appended so far (a batch handles several replies of one instance in one transaction).
    /// </summary>
    ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken);

    /// <summary>Appends entries to the saga log.</summary>
    ValueTask AppendSagaLogAsync(IReadOnlyList<SagaLogEntry> entries, CancellationToken cancellationToken);

    /// <summary>Marks the point that <see cref="RollbackToSavepointAsync"/> returns to (one level; not nested).</summary>
    ValueTask SavepointAsync(CancellationToken cancellationToken);

    /// <summary>Undoes everything since <see cref="SavepointAsync"/> and ends the savepoint.</summary>
    ValueTask RollbackToSavepointAsync(CancellationToken cancellationToken);

    /// <summary>Keeps everything since <see cref="SavepointAsync"/> and ends the savepoint.</summary>
    ValueTask ReleaseSavepointAsync(CancellationToken cancellationToken);

    /// <summary>Runs <paramref name="callback"/> after the transaction commits (never when it rolls back).</summary>
    void OnCommitted(Action callback);

    /// <summary>
    /// Reserves <paramref name="key"/> for job <paramref name="jobId"/> until <paramref name="expiresAt"/>. Returns
    /// <c>null</c> when reserved, or the id of the job that holds an unexpired reservation (then do not enqueue).
    /// </summary>
    ValueTask<Guid?> TryReserveUniqueKeyAsync(string key, Guid jobId, DateTimeOffset expiresAt, CancellationToken cancellationToken);

    /// <summary>Records that <paramref name="queue"/> is a job queue (idempotent), so that job listings show its jobs.</summary>
    ValueTask RegisterJobQueueAsync(string queue, CancellationToken cancellationToken);

    /// <summary>Creates a batch, open for jobs; <c>false</c> when one with its id exists (then nothing changes).</summary>
    ValueTask<bool> CreateBatchAsync(JobBatchRecord batch, CancellationToken cancellationToken);

    /// <summary>
    /// Counts <paramref name="count"/> more jobs into batch <paramref name="batchId"/> (total and pending); a negative
    /// count takes copies out again (a job id enqueued twice runs once).
    /// </summary>
    /// <exception cref="InvalidOperationException">The batch does not exist or has finished.</exception>
    ValueTask AddToBatchAsync(string batchId, int count, CancellationToken cancellationToken);

    /// <summary>
    /// Records finished jobs of a batch (<paramref name="succeeded"/> and <paramref name="failed"/>; a negative
    /// <paramref name="failed"/> with positive pending re-opens a failure that is being retried). Returns the batch
    /// when this call finished it (sealed and nothing pending); the caller then enqueues its callbacks.
    /// </summary>
    ValueTask<JobBatchRecord?> RecordBatchOutcomesAsync(string batchId, int succeeded, int failed, CancellationToken cancellationToken);

    /// <summary>Seals a batch: it finishes once nothing is pending. Returns the batch when sealing finished it.</summary>
    ValueTask<JobBatchRecord?> SealBatchAsync(string batchId, CancellationToken cancellationToken);

    /// <summary>
    /// Stores a recurring schedule. An existing one keeps where it stands (<see cref="RecurringJobRecord.NextAt"/>)
    /// unless its cron expression or time zone changed; everything else is replaced.
    /// </summary>
    ValueTask UpsertRecurringJobAsync(RecurringJobRecord schedule, CancellationToken cancellationToken);

    /// <summary>Recurring schedules whose next occurrence is at or before <paramref name="now"/>.</summary>
    ValueTask<IReadOnlyList<RecurringJobRecord>> LoadDueRecurringJobsAsync(DateTimeOffset now, CancellationToken cancellationToken);

    /// <summary>
    /// Moves schedule <paramref name="name"/> from <paramref name="expectedNextAt"/> to <paramref name="nextAt"/>;
    /// <c>false</c> when another process moved it first (then roll back: it enqueued those occurrences).
    /// </summary>
    ValueTask<bool> AdvanceRecurringJobAsync(string name, DateTimeOffset expectedNextAt, DateTimeOffset nextAt, DateTimeOffset? lastAt, CancellationToken cancellationToken);

    /// <summary>Removes a recurring schedule; <c>false</c> when there was none.</summary>
    ValueTask<bool> RemoveRecurringJobAsync(string name, CancellationToken cancellationToken);

    /// <summary>Deletes the progress and cancellation records of finished jobs.</summary>
    ValueTask ForgetJobStateAsync(IReadOnlyList<Guid> jobIds, CancellationToken cancellationToken);

    /// <summary>Commits a transaction Converge owns; for an enlisted transaction, throws (the caller commits).</summary>
    ValueTask CommitAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Rolls back a transaction Converge owns whose handler is still running (it ignored cancellation), releasing its
    /// locks; the connection must never serve anyone again, because the handler may still hold it. Later calls
    /// through this object must throw. Default: <see cref="IAsyncDisposable.DisposeAsync"/>.
    /// </summary>
    ValueTask AbandonAsync() => DisposeAsync();
}
