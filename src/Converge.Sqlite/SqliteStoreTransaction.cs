using System.Data.Common;
using System.Runtime.CompilerServices;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.Data.Sqlite;

namespace Converge.Sqlite;

/// <summary>A write transaction on the SQLite file: Converge's own (holding the process's write gate) or the caller's.</summary>
internal sealed class SqliteStoreTransaction : IStoreTransaction, IInboxRemovalTransaction, IDatabaseTransaction, ISagaTransaction, IJobTransaction, IConsumerGroupTransaction, IOperatorLogTransaction
{
    readonly SqliteMessageStore _store;
    readonly SqliteSession? _session;
    readonly CommandCache _commands;
    readonly SqliteTransaction _transaction;
    List<Action>? _afterCommit;
    int _callbacksAtSavepoint;
    HashSet<string>? _queuesWritten;
    bool _finished;

    SqliteStoreTransaction(SqliteMessageStore store, SqliteSession? session, CommandCache commands, SqliteTransaction transaction)
    {
        _store = store;
        _session = session;
        _commands = commands;
        _transaction = transaction;
    }

    public DbTransaction Transaction => _transaction;

    SqliteSchema Sql => _store.Schema;

    static readonly ConditionalWeakTable<SqliteTransaction, SqliteStoreTransaction> OwnedTransactions = new();

    public static SqliteStoreTransaction Owned(SqliteMessageStore store, SqliteSession session)
    {
        var owned = new SqliteStoreTransaction(store, session, session.Commands, session.Connection.BeginTransaction(deferred: false));
        OwnedTransactions.Add(owned._transaction, owned);
        return owned;
    }

    /// <summary>The caller's transaction, or Converge's own when the caller passes back one it got from <see cref="Owned"/>.</summary>
    public static SqliteStoreTransaction Enlisted(SqliteMessageStore store, SqliteTransaction transaction) =>
        OwnedTransactions.TryGetValue(transaction, out var owned) && !owned._finished
            ? owned
            : new(store, null, CommandCache.For(transaction.Connection!), transaction);

    SqliteCommand Command(string sql)
    {
        // An abandoned handler that wakes up must not reach the cached commands of a session serving someone else.
        ObjectDisposedException.ThrowIf(_finished, this);
        return _commands.Get(sql, _transaction);
    }

    public ValueTask EnqueueAsync(OutgoingMessage message, CancellationToken cancellationToken)
    {
        if (message.IsContinuation)
        {
            return EnqueueContinuation(message);
        }

        var now = _store.Now;
        if (message.OrderingKey is { } key)
        {
            Command(Sql.EnqueueKeyed)
                .With("$queue", message.Queue)
                .With("$priority", message.Priority)
                .With("$visible_at", (message.DueAt is { } keyedDue && keyedDue > now ? keyedDue : now).UtcTicks)
                .With("$ordering_key", Runtime.SendOptions.ValidateOrderingKey(key))
                .With("$dead_letter", null)
                .WithEnvelope(message.Envelope)
                .ExecuteNonQuery();
            RingOnCommit(message.Queue);
            return ValueTask.CompletedTask;
        }

        Command(Sql.Enqueue)
            .With("$queue", message.Queue)
            .With("$priority", message.Priority)
            .With("$visible_at", (message.DueAt is { } due && due > now ? due : now).UtcTicks)
            .WithEnvelope(message.Envelope)
            .ExecuteNonQuery();
        RingOnCommit(message.Queue);
        return ValueTask.CompletedTask;
    }

    ValueTask EnqueueContinuation(OutgoingMessage message)
    {
        var attempts = message.Attempts;
        var history = message.History;
        ArgumentNullException.ThrowIfNull(history);
        ArgumentOutOfRangeException.ThrowIfNegative(attempts);
        var now = _store.Now;
        Command(Sql.Requeue)
            .With("$queue", message.Queue)
            .With("$priority", message.Priority)
            .With("$visible_at", (message.DueAt is { } due && due > now ? due : now).UtcTicks)
            .With("$attempts", attempts)
            .With("$history", SqliteMapping.WriteHistory(history, null))
            .WithEnvelope(message.Envelope)
            .ExecuteNonQuery();
        RingOnCommit(message.Queue);
        return ValueTask.CompletedTask;
    }

    void RingOnCommit(string queue)
    {
        if (_session is null)
        {
            var signals = _store.Signals;
            OnCommitted(() => signals.RingQueue(queue));
        }
        else
        {
            (_queuesWritten ??= new HashSet<string>(StringComparer.Ordinal)).Add(queue);
        }
    }

    public ValueTask<IReadOnlyList<LogEvent>> AppendAsync(string stream, long? expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken)
    {
        var version = (long)Command(Sql.StreamVersion).With("$stream", stream).ExecuteScalar()!;
        if (expectedVersion is { } expected && expected != version)
        {
            throw new StreamVersionConflictException(stream, expected, version);
        }

        var stored = new List<LogEvent>(events.Count);
        var append = Command(Sql.Append);
        foreach (var envelope in events)
        {
            version++;
            var position = (long)append.With("$stream", stream).With("$stream_version", version).WithEnvelope(envelope).ExecuteScalar()!;
            stored.Add(new LogEvent(position, stream, version, envelope));
        }

        var signals = _store.Signals;
        OnCommitted(signals.Log.Ring);
        return ValueTask.FromResult<IReadOnlyList<LogEvent>>(stored);
    }

    public async ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken)
    {
        ClaimLimits.Validate(policy);
        return await _store.ClaimWithinAsync(this, _commands, _transaction, queue, max, lease, policy, _store.Now, cancellationToken);
    }

    public ValueTask<long> RecordOperatorActionAsync(OperatorAction action, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(action);
        ObjectDisposedException.ThrowIf(_finished, this);
        return ValueTask.FromResult(_store.RecordOperatorAction(_commands, _transaction, action));
    }

    public ValueTask RegisterJobQueueAsync(string queue, CancellationToken cancellationToken)
    {
        Command(Sql.RegisterJobQueue).With("$name", queue).ExecuteNonQuery();
        return ValueTask.CompletedTask;
    }

    public ValueTask<bool> TryRecordInboxAsync(string consumer, Envelope envelope, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Command(Sql.RecordInbox)
            .With("$consumer", consumer)
            .With("$message_id", envelope.MessageId)
            .With("$at", _store.Now.UtcTicks)
            .With("$message_type", envelope.MessageType)
            .With("$correlation_id", envelope.CorrelationId)
            .With("$batch_id", JobRows.BatchOf(envelope))
            .With("$causation_id", envelope.CausationId)
            .With("$sent_at", envelope.SentAt.UtcTicks)
            .ExecuteNonQuery() == 1);

    public ValueTask<bool> ForgetInboxAsync(string consumer, Guid messageId, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Command(Sql.ForgetInbox).With("$consumer", consumer).With("$message_id", messageId).ExecuteNonQuery() == 1);

    public ValueTask<bool> CancelScheduledAsync(string queue, Guid messageId, DateTimeOffset dueAt, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Command(Sql.CancelScheduled)
            .With("$queue", queue)
            .With("$visible_at", dueAt.UtcTicks)
            .With("$message_id", messageId)
            .ExecuteNonQuery() == 1);

    public ValueTask<SagaInstance?> LoadSagaAsync(string transactionId, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Command(Sql.LoadSaga).With("$transaction_id", transactionId).ReadFirst(SagaRows.ReadSaga));

    public ValueTask<bool> InsertSagaAsync(SagaInstance instance, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(instance);
        instance.ConcurrencyVersion = 1;
        instance.UpdatedAt = _store.Now;
        return ValueTask.FromResult(Command(Sql.InsertSaga)
            .WithSaga(instance)
            .With("$definition", instance.Definition)
            .With("$version", instance.Version)
            .With("$steps", SqliteMapping.WriteSteps(instance.Steps))
            .With("$started_at", instance.StartedAt.UtcTicks)
            .ExecuteNonQuery() == 1);
    }

    public ValueTask<bool> UpdateSagaAsync(SagaInstance instance, long expectedVersion, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(instance);
        instance.ConcurrencyVersion = expectedVersion + 1;
        instance.UpdatedAt = _store.Now;
        var saved = Command(Sql.UpdateSaga).WithSaga(instance).With("$expected", expectedVersion).ExecuteNonQuery() == 1;
        if (!saved)
        {
            instance.ConcurrencyVersion = expectedVersion;
        }

        return ValueTask.FromResult(saved);
    }

    public ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<SagaLogEntry>>(Command(Sql.ReadSagaLog).With("$transaction_id", transactionId).ReadAll(SagaRows.ReadSagaLogEntry));

    public ValueTask AppendSagaLogAsync(IReadOnlyList<SagaLogEntry> entries, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entries);
        var first = 0;
        while (first < entries.Count)
        {
            // Entries of one instance at one moment (a transition) share a statement; others get their own.
            var rows = 1;
            while (rows < SqliteSchema.SagaLogRowsPerInsert && first + rows < entries.Count
                && entries[first + rows].TransactionId == entries[first].TransactionId && entries[first + rows].At == entries[first].At)
            {
                rows++;
            }

            var command = Command(Sql.AppendSagaLog[rows - 1])
                .With("$transaction_id", entries[first].TransactionId)
                .With("$at", entries[first].At.UtcTicks);
            for (var i = 0; i < rows; i++)
            {
                var entry = entries[first + i];
                command
                    .With(KindNames[i], entry.Kind)
                    .With(StepNames[i], entry.Step)
                    .With(MessageIdNames[i], entry.MessageId)
                    .With(MessageTypeNames[i], entry.MessageType)
                    .With(DetailNames[i], entry.Detail)
                    .With(AnswersNames[i], entry.Answers);
            }

            command.ExecuteNonQuery();
            first += rows;
        }

        return ValueTask.CompletedTask;
    }

    static readonly string[] KindNames = Names("$kind");
    static readonly string[] StepNames = Names("$step");
    static readonly string[] MessageIdNames = Names("$message_id");
    static readonly string[] MessageTypeNames = Names("$message_type");
    static readonly string[] DetailNames = Names("$detail");
    static readonly string[] AnswersNames = Names("$answers");

    static string[] Names(string prefix) => [.. Enumerable.Range(0, SqliteSchema.SagaLogRowsPerInsert).Select(i => prefix + i.ToString(System.Globalization.CultureInfo.InvariantCulture))];

    public ValueTask<bool> CompleteAsync(QueuedMessage message, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Command(Sql.Complete).With("$id", message.Id).With("$token", message.LeaseToken).ExecuteNonQuery() == 1);

    public ValueTask<bool> RetryLaterAsync(QueuedMessage message, DateTimeOffset dueAt, AttemptRecord failure, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Command(Sql.RetryLater)
            .With("$due", dueAt.UtcTicks)
            .With("$history", SqliteMapping.WriteHistory(message.History, failure))
            .With("$id", message.Id)
            .With("$token", message.LeaseToken)
            .ExecuteNonQuery() == 1);

    public ValueTask<bool> DeadLetterAsync(QueuedMessage message, string reason, string? exception, AttemptRecord? failure, CancellationToken cancellationToken)
    {
        if (DeleteForDeadLetter(Command(Sql.CompleteForDeadLetter).With("$id", message.Id).With("$token", message.LeaseToken)) is not { } ordering)
        {
            return ValueTask.FromResult(false);
        }

        InsertDeadLetter(message.Queue, message.Envelope, message.Priority, reason, exception, message.Attempt, SqliteMapping.WriteHistory(message.History, failure), null, ordering.Key, ordering.Seq);
        return ValueTask.FromResult(true);
    }

    /// <summary>
    /// Deletes a queue row on its way to the dead letters and returns its ordering key and place, which the dead letter
    /// keeps (so its key stays held, and a retry puts it back where it was); <c>null</c> when no row was deleted. A key
    /// that does not read as text (never written by Converge) is dropped: the row was not ordered by it either.
    /// </summary>
    static (string? Key, long? Seq)? DeleteForDeadLetter(Microsoft.Data.Sqlite.SqliteCommand delete)
    {
        using var reader = delete.ExecuteReader();
        if (!reader.Read())
        {
            return null;
        }

        var key = reader.GetValue(0) as string;
        var seq = key is not null && reader.GetValue(1) is long place ? place : (long?)null;
        return (key, seq);
    }

    public ValueTask RecordDeadLetterAsync(DeadLetterRecord letter, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(letter);
        ArgumentException.ThrowIfNullOrEmpty(letter.Source);
        ArgumentException.ThrowIfNullOrEmpty(letter.Reason);
        InsertDeadLetter(letter.Source, letter.Envelope, letter.Priority, letter.Reason, letter.Exception, letter.Attempts, SqliteMapping.WriteHistory(letter.History, null), letter.LogPosition);
        return ValueTask.CompletedTask;
    }

    void InsertDeadLetter(string source, Envelope envelope, int priority, string reason, string? exception, int attempts, string? history, long? logPosition, string? orderingKey = null, long? orderingSeq = null) =>
        Command(Sql.InsertDeadLetter)
            .With("$ordering_key", orderingKey)
            .With("$ordering_seq", orderingSeq)
            .With("$source", source)
            .With("$priority", priority)
            .WithEnvelope(envelope)
            .With("$reason", reason)
            .With("$exception", exception)
            .With("$attempts", attempts)
            .With("$history", history)
            .With("$at", _store.Now.UtcTicks)
            .With("$log_position", logPosition)
            .ExecuteNonQuery();

    public ValueTask<bool> SaveConsumerGroupAsync(string group, long expectedPosition, long position, int failedAttempts, string? lastError, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Command(Sql.SaveGroup)
            .With("$name", group)
            .With("$position", position)
            .With("$failed_attempts", failedAttempts)
            .With("$last_error", lastError)
            .With("$at", _store.Now.UtcTicks)
            .With("$expected", expectedPosition)
            .ExecuteNonQuery() == 1);

    public ValueTask<bool> DeleteConsumerGroupAsync(string group, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Command(Sql.DeleteGroup).With("$name", group).ExecuteNonQuery() == 1);

    public ValueTask SetConsumerGroupPausedAsync(string group, bool paused, CancellationToken cancellationToken)
    {
        Command(Sql.PauseGroup)
            .With("$name", group)
            .With("$paused", paused ? 1 : 0)
            .With("$at", _store.Now.UtcTicks)
            .ExecuteNonQuery();
        return ValueTask.CompletedTask;
    }

    public ValueTask<int> ExecuteAsync(string sql, IReadOnlyList<KeyValuePair<string, object?>> parameters, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ObjectDisposedException.ThrowIf(_finished, this);
        var command = _commands.GetApplication(sql, _transaction);
        command.Parameters.Clear();
        foreach (var (name, value) in parameters)
        {
            command.Parameters.AddWithValue(name, value ?? DBNull.Value);
        }

        return ValueTask.FromResult(command.ExecuteNonQuery());
    }

    public ValueTask<Guid?> TryReserveUniqueKeyAsync(string key, Guid jobId, DateTimeOffset expiresAt, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var reserved = Command(Sql.ReserveUniqueKey)
            .With("$key", key)
            .With("$job_id", jobId)
            .With("$expires_at", expiresAt.UtcTicks)
            .With("$now", _store.Now.UtcTicks)
            .ExecuteNonQuery() == 1;
        if (reserved)
        {
            return ValueTask.FromResult<Guid?>(null);
        }

        using var reader = Command(Sql.UniqueKeyHolder).With("$key", key).ExecuteReader();
        return ValueTask.FromResult<Guid?>(reader.Read() ? reader.GetGuid(0) : null);
    }

    public ValueTask<bool> CreateBatchAsync(JobBatchRecord batch, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batch);
        return ValueTask.FromResult(Command(Sql.CreateBatch).WithBatch(batch).ExecuteNonQuery() == 1);
    }

    public ValueTask AddToBatchAsync(string batchId, int count, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batchId);
        if (Command(Sql.AddToBatch).With("$id", batchId).With("$count", count).ExecuteNonQuery() == 0)
        {
            var batch = Command(Sql.GetBatch).With("$id", batchId).ReadFirst(JobRows.ReadBatch);
            throw new InvalidOperationException(batch is null
                ? $"There is no batch '{batchId}'. Start it with IJobClient.StartBatchAsync before adding jobs to it."
                : $"Batch '{batchId}' finished at {batch.FinishedAt:O}; a finished batch takes no more jobs. Start a new batch.");
        }

        return ValueTask.CompletedTask;
    }

    public ValueTask<JobBatchRecord?> RecordBatchOutcomesAsync(string batchId, int succeeded, int failed, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batchId);

        // A finished batch keeps its counts: only a job retried before it finished was re-opened in it.
        var recorded = Command(Sql.RecordBatchOutcomes).With("$id", batchId).With("$succeeded", succeeded).With("$failed", failed).ExecuteNonQuery() == 1;
        return ValueTask.FromResult(recorded ? FinishBatch(batchId) : null);
    }

    public ValueTask<JobBatchRecord?> SealBatchAsync(string batchId, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batchId);
        var sealedNow = Command(Sql.SealBatch).With("$id", batchId).ExecuteNonQuery() == 1;
        return ValueTask.FromResult(sealedNow ? FinishBatch(batchId) : null);
    }

    /// <summary>Marks the batch finished if it is sealed and nothing is pending; the batch when this call finished it.</summary>
    JobBatchRecord? FinishBatch(string batchId) =>
        Command(Sql.FinishBatch).With("$id", batchId).With("$now", _store.Now.UtcTicks).ReadFirst(JobRows.ReadBatch);

    public ValueTask UpsertRecurringJobAsync(RecurringJobRecord schedule, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        Command(Sql.UpsertRecurring).WithRecurring(schedule).ExecuteNonQuery();
        return ValueTask.CompletedTask;
    }

    public ValueTask<IReadOnlyList<RecurringJobRecord>> LoadDueRecurringJobsAsync(DateTimeOffset now, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<RecurringJobRecord>>(Command(Sql.LoadDueRecurring).With("$now", now.UtcTicks).ReadAll(JobRows.ReadRecurring));

    public ValueTask<bool> AdvanceRecurringJobAsync(string name, DateTimeOffset expectedNextAt, DateTimeOffset nextAt, DateTimeOffset? lastAt, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Command(Sql.AdvanceRecurring)
            .With("$name", name)
            .With("$expected", expectedNextAt.UtcTicks)
            .With("$next_at", nextAt.UtcTicks)
            .With("$last_at", lastAt?.UtcTicks)
            .ExecuteNonQuery() == 1);

    public ValueTask<bool> RemoveRecurringJobAsync(string name, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Command(Sql.RemoveRecurring).With("$name", name).ExecuteNonQuery() == 1);

    public ValueTask ForgetJobStateAsync(IReadOnlyList<Guid> jobIds, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(jobIds);
        foreach (var id in jobIds)
        {
            Command(Sql.ForgetProgress).With("$job_id", id).ExecuteNonQuery();
            Command(Sql.ForgetCancellation).With("$job_id", id).ExecuteNonQuery();
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Cancels job <paramref name="id"/>: each waiting copy moves to the dead letters as cancelled and counts as a failure in
    /// its batch (enqueueing the batch's callbacks when that finishes it); a copy under a live lease is flagged for its worker.
    /// </summary>
    internal async ValueTask<JobCancelOutcome> CancelJobAsync(Guid id, CancellationToken cancellationToken)
    {
        var now = _store.Now.UtcTicks;
        var rows = Command(Sql.JobInQueue).With("$message_id", id).ReadAll(RowReader.ReadQueueRow);
        if (rows.Count == 0)
        {
            return JobCancelOutcome.NotFound;
        }

        var requested = false;
        foreach (var row in rows)
        {
            if (row.Leased && row.VisibleAt > now)
            {
                Command(Sql.RequestCancellation).With("$job_id", id).With("$at", now).ExecuteNonQuery();
                requested = true;
                continue;
            }

            var ordering = DeleteForDeadLetter(Command(Sql.DeleteQueued).With("$id", row.Id));
            InsertDeadLetter(row.Queue, row.Envelope, row.Priority, DeadLetterReasons.Cancelled, null, row.Attempts, row.History, null, ordering?.Key, ordering?.Seq);
            if (row.Envelope.Headers.TryGetValue(JobHeaders.Batch, out var batchId)
                && await RecordBatchOutcomesAsync(batchId, 0, 1, cancellationToken) is { } finished)
            {
                await JobRows.EnqueueBatchCallbacksAsync(this, finished, cancellationToken);
            }
        }

        return requested ? JobCancelOutcome.Requested : JobCancelOutcome.Cancelled;
    }

    public ValueTask SavepointAsync(CancellationToken cancellationToken)
    {
        Command(SqliteSchema.Savepoint).ExecuteNonQuery();
        _callbacksAtSavepoint = _afterCommit?.Count ?? 0;
        return ValueTask.CompletedTask;
    }

    public ValueTask RollbackToSavepointAsync(CancellationToken cancellationToken)
    {
        Command(SqliteSchema.RollbackToSavepoint).ExecuteNonQuery();
        Command(SqliteSchema.ReleaseSavepoint).ExecuteNonQuery();

        // What was undone must not be announced: callbacks registered since the savepoint go with it.
        _afterCommit?.RemoveRange(_callbacksAtSavepoint, _afterCommit.Count - _callbacksAtSavepoint);
        return ValueTask.CompletedTask;
    }

    public ValueTask ReleaseSavepointAsync(CancellationToken cancellationToken)
    {
        Command(SqliteSchema.ReleaseSavepoint).ExecuteNonQuery();
        return ValueTask.CompletedTask;
    }

    public void OnCommitted(Action callback)
    {
        if (_session is null)
        {
            CommitHooks.OnCommitted(_transaction.Connection!, _store, callback);
            return;
        }

        (_afterCommit ??= []).Add(callback);
    }

    public ValueTask CommitAsync(CancellationToken cancellationToken)
    {
        if (_session is null)
        {
            throw new InvalidOperationException("This transaction belongs to the caller: commit it with the DbTransaction you passed in.");
        }

        ObjectDisposedException.ThrowIf(_finished, this);
        try
        {
            _transaction.Commit();
        }
        catch
        {
            _session.Broken = true;
            throw;
        }

        Finish();
        if (_queuesWritten is { } queues)
        {
            foreach (var queue in queues)
            {
                _store.Signals.RingQueue(queue);
            }
        }

        if (_afterCommit is { } callbacks)
        {
            foreach (var callback in callbacks)
            {
                callback();
            }
        }

        return ValueTask.CompletedTask;
    }

    public ValueTask AbandonAsync()
    {
        if (_session is not null)
        {
            // The handler may still hold the connection: close it rather than pool it.
            _session.Broken = true;
        }

        return DisposeAsync();
    }

    public ValueTask DisposeAsync()
    {
        if (_session is not null && !_finished)
        {
            try
            {
                _transaction.Dispose();
            }
            catch (SqliteException)
            {
                _session.Broken = true;
            }

            Finish();
        }

        return ValueTask.CompletedTask;
    }

    void Finish()
    {
        _finished = true;
        _transaction.Dispose();
        _store.EndWrite(_session!);
    }
}
