using System.Data.Common;
using System.Runtime.CompilerServices;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Sagas;
using Converge.Storage;
using Npgsql;
using NpgsqlTypes;

namespace Converge.PostgreSql;

/// <summary>A write transaction on the store's database: Converge's own (owning its pooled connection) or the caller's.</summary>
internal sealed class PostgreSqlStoreTransaction : IStoreTransaction, IInboxRemovalTransaction, IDatabaseTransaction, ISagaTransaction, IJobTransaction, IConsumerGroupTransaction, IOperatorLogTransaction
{
    static readonly ConditionalWeakTable<NpgsqlTransaction, PostgreSqlStoreTransaction> OwnedTransactions = new();

    readonly PostgreSqlMessageStore _store;
    readonly NpgsqlConnection _connection;
    readonly NpgsqlTransaction _transaction;
    readonly bool _owned;
    List<Action>? _afterCommit;
    int _callbacksAtSavepoint;
    List<(OutgoingMessage Message, long VisibleAt)>? _pendingEnqueues;
    Dictionary<string, long>? _batchAdds;
    Dictionary<string, long>? _batchAddsAtSavepoint;
    Dictionary<string, (long Succeeded, long Failed)>? _heldOutcomes;
    Dictionary<string, (long Succeeded, long Failed)>? _heldOutcomesAtSavepoint;
    HashSet<string>? _notified;
    HashSet<string>? _notifiedSent;
    bool _logLocked;
    bool _finished;

    // Savepoint statements held back to go with the next statement, one round trip fewer each (in Converge's own
    // transaction only: nothing but the runtime uses its connection between them).
    bool _releaseHeld;
    bool _savepointHeld;

    // Statements made for their effect alone (WriteAsync), held back to go in one round trip with the held sends and
    // savepoint statements before whatever statement comes next (in Converge's own transaction only).
    List<NpgsqlBatchCommand>? _pendingWrites;

    PostgreSqlStoreTransaction(PostgreSqlMessageStore store, NpgsqlConnection connection, NpgsqlTransaction transaction, bool owned)
    {
        _store = store;
        _connection = connection;
        _transaction = transaction;
        _owned = owned;
    }

    public DbTransaction Transaction => _transaction;

    PostgreSqlSchema Sql => _store.Schema;

    public static PostgreSqlStoreTransaction Owned(PostgreSqlMessageStore store, NpgsqlConnection connection, NpgsqlTransaction transaction)
    {
        var owned = new PostgreSqlStoreTransaction(store, connection, transaction, owned: true);
        // Npgsql reuses a connection's transaction object, so a pooled connection brings back one seen before.
        OwnedTransactions.AddOrUpdate(transaction, owned);
        return owned;
    }

    public static PostgreSqlStoreTransaction? TryGetOwned(NpgsqlTransaction transaction) =>
        OwnedTransactions.TryGetValue(transaction, out var owned) && !owned._finished ? owned : null;

    public static PostgreSqlStoreTransaction Enlisted(PostgreSqlMessageStore store, NpgsqlConnection connection, NpgsqlTransaction transaction) =>
        new(store, connection, transaction, owned: false);

    NpgsqlCommand Command(string sql) => PostgreSqlMessageStore.Command(_connection, _transaction, TakeHeld() + sql);

    /// <summary>The held savepoint statements, to run before the next one; nothing is held after this.</summary>
    string TakeHeld()
    {
        var (release, savepoint) = TakeHeldFlags();
        return (release ? PostgreSqlSchema.ReleaseSavepoint + "; " : "") + (savepoint ? PostgreSqlSchema.Savepoint + "; " : "");
    }

    /// <summary>Which savepoint statements are held (a release, then a savepoint); nothing is held after this.</summary>
    (bool Release, bool Savepoint) TakeHeldFlags()
    {
        var held = (_releaseHeld, _savepointHeld);
        (_releaseHeld, _savepointHeld) = (false, false);
        return held;
    }

    /// <summary>A command that runs after the held sends are written, so that it sees them.</summary>
    async ValueTask<NpgsqlCommand> CommandAsync(string sql, CancellationToken cancellationToken)
    {
        await FlushAsync(cancellationToken);
        return Command(sql);
    }

    static async ValueTask<int> ExecuteAsync(NpgsqlCommand command, CancellationToken cancellationToken)
    {
        await using (command)
        {
            return await command.ExecuteNonQueryAsync(cancellationToken);
        }
    }

    /// <summary>
    /// Announces a write to other processes. In Converge's own transaction the notifications go out just before
    /// commit, once per queue; in the caller's, at once (PostgreSQL holds them until that transaction commits).
    /// </summary>
    async ValueTask AnnounceAsync(string payload, CancellationToken cancellationToken)
    {
        if (!(_notified ??= new HashSet<string>(StringComparer.Ordinal)).Add(payload) || _owned)
        {
            return;
        }

        await _store.NotifyAsync(_connection, _transaction, [payload], cancellationToken);
    }

    /// <summary>
    /// Writes the held sends and sends the notifications of Converge's own transaction not sent yet, in one round trip
    /// (PostgreSQL delivers the notifications at commit).
    /// </summary>
    async ValueTask FlushAndNotifyAsync(CancellationToken cancellationToken)
    {
        var unsent = _notified is not { Count: > 0 } notified ? []
            : _notifiedSent is null ? notified.ToList()
            : notified.Where(p => !_notifiedSent.Contains(p)).ToList();
        await FlushAsync(unsent, cancellationToken);
        (_notifiedSent ??= new HashSet<string>(StringComparer.Ordinal)).UnionWith(unsent);
    }

    public async ValueTask EnqueueAsync(OutgoingMessage message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (message.IsContinuation)
        {
            await EnqueueContinuationAsync(message, cancellationToken);
            return;
        }

        var now = _store.Now;
        var visibleAt = (message.DueAt is { } due && due > now ? due : now).UtcTicks;
        if (message.OrderingKey is { } key)
        {
            // Written at once, after the held sends: its place in its key is read from the rows before it.
            await ExecuteAsync(
                (await CommandAsync(Sql.EnqueueKeyed, cancellationToken))
                    .With("queue", message.Queue)
                    .With("priority", message.Priority)
                    .With("visible_at", visibleAt)
                    .With("ordering_key", Runtime.SendOptions.ValidateOrderingKey(key))
                    .With("dead_letter", NpgsqlDbType.Bigint, null)
                    .WithEnvelope(message.Envelope),
                cancellationToken);
            await AnnounceAsync(PostgreSqlNotifications.QueuePrefix + message.Queue, cancellationToken);
            return;
        }

        if (_owned)
        {
            // Held until the next statement or the commit, then written with the others in one statement: a batch of
            // sends costs one round trip, not one each. (A caller's transaction is committed by the caller, so its
            // sends are written at once.)
            (_pendingEnqueues ??= []).Add((message, visibleAt));
            (_notified ??= new HashSet<string>(StringComparer.Ordinal)).Add(PostgreSqlNotifications.QueuePrefix + message.Queue);
            return;
        }

        await ExecuteAsync(
            Command(Sql.Enqueue)
                .With("queue", message.Queue)
                .With("priority", message.Priority)
                .With("visible_at", visibleAt)
                .WithEnvelope(message.Envelope),
            cancellationToken);
        await AnnounceAsync(PostgreSqlNotifications.QueuePrefix + message.Queue, cancellationToken);
    }

    async ValueTask EnqueueContinuationAsync(OutgoingMessage message, CancellationToken cancellationToken)
    {
        var attempts = message.Attempts;
        var history = message.History;
        ArgumentNullException.ThrowIfNull(history);
        ArgumentOutOfRangeException.ThrowIfNegative(attempts);
        var now = _store.Now;
        await ExecuteAsync(
            (await CommandAsync(Sql.EnqueueWithHistory, cancellationToken))
                .With("queue", message.Queue)
                .With("priority", message.Priority)
                .With("visible_at", (message.DueAt is { } due && due > now ? due : now).UtcTicks)
                .With("attempts", attempts)
                .With("history", NpgsqlDbType.Text, StoredRows.WriteHistory(history, null))
                .WithEnvelope(message.Envelope),
            cancellationToken);
        await AnnounceAsync(PostgreSqlNotifications.QueuePrefix + message.Queue, cancellationToken);
    }

    public async ValueTask RecordDeadLetterAsync(DeadLetterRecord letter, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(letter);
        ArgumentException.ThrowIfNullOrEmpty(letter.Source);
        ArgumentException.ThrowIfNullOrEmpty(letter.Reason);
        await InsertDeadLetterAsync(letter.Source, letter.Envelope, letter.Priority, letter.Reason, letter.Exception, letter.Attempts, StoredRows.WriteHistory(letter.History, null), letter.LogPosition, cancellationToken);
    }

    /// <summary>Writes the held sends; every other statement of the transaction runs after this, so it sees them.</summary>
    ValueTask FlushAsync(CancellationToken cancellationToken) => FlushAsync(null, cancellationToken);

    /// <summary>
    /// Writes the held sends, then the held writes, with <paramref name="notifications"/> in the same round trip as the
    /// last of them.
    /// </summary>
    async ValueTask FlushAsync(IReadOnlyList<string>? notifications, CancellationToken cancellationToken)
    {
        if (_pendingWrites is { Count: > 0 } writes)
        {
            await FlushEnqueuesAsync(null, cancellationToken);
            _pendingWrites = null;
            await SendWritesAsync(writes, notifications, cancellationToken);
            return;
        }

        await FlushEnqueuesAsync(notifications, cancellationToken);
    }

    /// <summary>
    /// Sends <paramref name="writes"/> in one round trip: after the held savepoint statements, which go first as they
    /// would with any statement, and before <paramref name="notifications"/>.
    /// </summary>
    async ValueTask SendWritesAsync(List<NpgsqlBatchCommand> writes, IReadOnlyList<string>? notifications, CancellationToken cancellationToken)
    {
        await using var batch = new NpgsqlBatch(_connection, _transaction);
        var (release, savepoint) = TakeHeldFlags();
        if (release)
        {
            batch.BatchCommands.Add(new NpgsqlBatchCommand(PostgreSqlSchema.ReleaseSavepoint));
        }

        if (savepoint)
        {
            batch.BatchCommands.Add(new NpgsqlBatchCommand(PostgreSqlSchema.Savepoint));
        }

        foreach (var write in writes)
        {
            batch.BatchCommands.Add(write);
        }

        if (notifications is { Count: > 0 })
        {
            var notify = new NpgsqlBatchCommand(PostgreSqlMessageStore.NotifySql);
            notify.Parameters.AddWithValue("channel", Sql.Channel);
            notify.Parameters.AddWithValue("payloads", notifications.ToArray());
            batch.BatchCommands.Add(notify);
        }

        await batch.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>Writes the held sends, with <paramref name="notifications"/> in the same round trip.</summary>
    async ValueTask FlushEnqueuesAsync(IReadOnlyList<string>? notifications, CancellationToken cancellationToken)
    {
        if (_pendingEnqueues is not { Count: > 0 } pending)
        {
            if (notifications is { Count: > 0 })
            {
                await _store.NotifyAsync(_connection, _transaction, notifications, cancellationToken);
            }

            return;
        }

        _pendingEnqueues = null;
        var notify = notifications is { Count: > 0 } ? "; " + PostgreSqlMessageStore.NotifySql : "";
        NpgsqlCommand WithNotifications(NpgsqlCommand command) =>
            notify.Length == 0 ? command : command.With("channel", _store.Schema.Channel).With("payloads", notifications!.ToArray());

        if (pending.Count == 1)
        {
            var (message, visibleAt) = pending[0];
            await ExecuteAsync(WithNotifications(Command(Sql.Enqueue + notify)).With("queue", message.Queue).With("priority", message.Priority).With("visible_at", visibleAt).WithEnvelope(message.Envelope), cancellationToken);
            return;
        }

        var envelopes = pending.Select(p => p.Message.Envelope).ToArray();
        await ExecuteAsync(
            WithNotifications(Command(Sql.EnqueueMany + notify))
                .With("queues", NpgsqlDbType.Array | NpgsqlDbType.Text, pending.Select(p => p.Message.Queue).ToArray())
                .With("priorities", NpgsqlDbType.Array | NpgsqlDbType.Integer, pending.Select(p => p.Message.Priority).ToArray())
                .With("visible_ats", NpgsqlDbType.Array | NpgsqlDbType.Bigint, pending.Select(p => p.VisibleAt).ToArray())
                .WithEnvelopes(envelopes)
                .With("as_ofs", NpgsqlDbType.Array | NpgsqlDbType.Bigint, envelopes.Select(e => e.AsOf?.UtcTicks).ToArray())
                .With("headers", NpgsqlDbType.Array | NpgsqlDbType.Text, envelopes.Select(e => StoredRows.WriteHeaders(e.Headers)).ToArray())
                .With("bodies", NpgsqlDbType.Array | NpgsqlDbType.Bytea, envelopes.Select(e => PostgreSqlMapping.ToArray(e.Body)).ToArray()),
            cancellationToken);
    }

    public async ValueTask<IReadOnlyList<LogEvent>> AppendAsync(string stream, long? expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(events);

        // Appending transactions take turns from their first append until they commit. Positions come from an identity
        // column, so without turns a transaction could commit position 7 while another still holds 6: a reader that
        // saw 7 and saved its checkpoint would never see 6. With turns, every position is visible before a larger one
        // is handed out (PostgreSQL makes a commit visible before it releases the commit's locks).
        if (!_logLocked)
        {
            await ExecuteAsync((await CommandAsync("SELECT pg_advisory_xact_lock(@key)", cancellationToken)).With("key", _store.LogLockKey), cancellationToken);
            _logLocked = true;
        }

        long version;
        await using (var current = (await CommandAsync(Sql.StreamVersion, cancellationToken)).With("stream", stream))
        {
            version = (long)(await current.ExecuteScalarAsync(cancellationToken))!;
        }

        if (expectedVersion is { } expected && expected != version)
        {
            throw new StreamVersionConflictException(stream, expected, version);
        }

        var stored = new List<LogEvent>(events.Count);
        foreach (var envelope in events)
        {
            version++;
            await using var append = (await CommandAsync(Sql.Append, cancellationToken)).With("stream", stream).With("stream_version", version).WithEnvelope(envelope);
            var position = (long)(await append.ExecuteScalarAsync(cancellationToken))!;
            stored.Add(new LogEvent(position, stream, version, envelope));
        }

        await AnnounceAsync(PostgreSqlNotifications.LogPayload, cancellationToken);
        return stored;
    }

    public async ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken)
    {
        await FlushAsync(cancellationToken);
        await SendHeldAsync(cancellationToken);
        return await _store.ClaimWithinAsync(_connection, _transaction, queue, max, lease, policy, _store.Now, cancellationToken);
    }

    public async ValueTask<long> RecordOperatorActionAsync(OperatorAction action, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(action);
        await FlushAsync(cancellationToken);
        await SendHeldAsync(cancellationToken);
        return await _store.RecordOperatorActionAsync(_connection, _transaction, action, cancellationToken);
    }

    public async ValueTask RegisterJobQueueAsync(string queue, CancellationToken cancellationToken) =>
        await ExecuteAsync((await CommandAsync(Sql.RegisterJobQueue, cancellationToken)).With("name", queue), cancellationToken);

    public async ValueTask<bool> TryRecordInboxAsync(string consumer, Envelope envelope, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        return await ExecuteAsync(
            (await CommandAsync(Sql.RecordInbox, cancellationToken))
                .With("consumer", consumer)
                .With("message_id", envelope.MessageId)
                .With("at", _store.Now.UtcTicks)
                .With("message_type", envelope.MessageType)
                .With("correlation_id", NpgsqlDbType.Text, envelope.CorrelationId)
                .With("causation_id", NpgsqlDbType.Uuid, envelope.CausationId)
                .With("sent_at", envelope.SentAt.UtcTicks)
                .With("batch_id", NpgsqlDbType.Text, JobRows.BatchOf(envelope)),
            cancellationToken) == 1;
    }

    public async ValueTask<bool> ForgetInboxAsync(string consumer, Guid messageId, CancellationToken cancellationToken) =>
        await ExecuteAsync((await CommandAsync(Sql.ForgetInbox, cancellationToken)).With("consumer", consumer).With("message_id", messageId), cancellationToken) == 1;

    public async ValueTask<IReadOnlyList<bool>> TryRecordInboxAsync(string consumer, IReadOnlyList<Envelope> envelopes, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(envelopes);
        await FlushAsync(cancellationToken);
        var all = envelopes.ToArray();
        HashSet<Guid> inserted;
        await using (var command = (await CommandAsync(Sql.RecordInboxMany, cancellationToken))
            .With("consumer", consumer)
            .With("at", _store.Now.UtcTicks)
            .WithEnvelopes(all)
            .With("batch_ids", NpgsqlDbType.Array | NpgsqlDbType.Text, all.Select(JobRows.BatchOf).ToArray()))
        {
            inserted = [.. await command.ReadAllAsync(reader => reader.GetGuid(0), cancellationToken)];
        }

        // A message id listed twice is new only the first time.
        return [.. all.Select(e => inserted.Remove(e.MessageId))];
    }

    public async ValueTask<int> CompleteAsync(IReadOnlyList<QueuedMessage> messages, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        await FlushAsync(cancellationToken);
        await using var command = (await CommandAsync(Sql.CompleteMany, cancellationToken))
            .With("ids", messages.Select(m => m.Id).ToArray())
            .With("tokens", messages.Select(m => m.LeaseToken).ToArray());
        return (await command.ReadAllAsync(reader => reader.GetInt64(0), cancellationToken)).Count;
    }

    public async ValueTask<bool> CancelScheduledAsync(string queue, Guid messageId, DateTimeOffset dueAt, CancellationToken cancellationToken) =>
        await ExecuteAsync(
            (await CommandAsync(Sql.CancelScheduled, cancellationToken))
                .With("queue", queue)
                .With("visible_at", dueAt.UtcTicks)
                .With("message_id", messageId),
            cancellationToken) == 1;

    public async ValueTask<SagaInstance?> LoadSagaAsync(string transactionId, CancellationToken cancellationToken)
    {
        await using var command = (await CommandAsync(Sql.LoadSaga, cancellationToken)).With("transaction_id", transactionId);
        return await command.ReadFirstAsync(SagaRows.ReadSaga, cancellationToken);
    }

    public async ValueTask<bool> InsertSagaAsync(SagaInstance instance, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(instance);
        instance.ConcurrencyVersion = 1;
        instance.UpdatedAt = _store.Now;
        return await ExecuteAsync(
            (await CommandAsync(Sql.InsertSaga, cancellationToken))
                .WithSaga(instance)
                .With("definition", instance.Definition)
                .With("version", instance.Version)
                .With("steps", SagaRows.WriteSteps(instance.Steps))
                .With("started_at", instance.StartedAt.UtcTicks),
            cancellationToken) == 1;
    }

    public async ValueTask<bool> UpdateSagaAsync(SagaInstance instance, long expectedVersion, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(instance);
        instance.ConcurrencyVersion = expectedVersion + 1;
        instance.UpdatedAt = _store.Now;
        var saved = await ExecuteAsync((await CommandAsync(Sql.UpdateSaga, cancellationToken)).WithSaga(instance).With("expected", expectedVersion), cancellationToken) == 1;
        if (!saved)
        {
            instance.ConcurrencyVersion = expectedVersion;
        }

        return saved;
    }

    public async ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken)
    {
        await using var command = (await CommandAsync(Sql.ReadSagaLog, cancellationToken)).With("transaction_id", transactionId);
        return await command.ReadAllAsync(SagaRows.ReadSagaLogEntry, cancellationToken);
    }

    public async ValueTask AppendSagaLogAsync(IReadOnlyList<SagaLogEntry> entries, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entries);
        if (entries.Count == 0)
        {
            return;
        }

        // One statement for all entries: a transition logs a few at once.
        await ExecuteAsync(
            (await CommandAsync(Sql.AppendSagaLog, cancellationToken))
                .With("transaction_ids", NpgsqlDbType.Array | NpgsqlDbType.Text, entries.Select(e => e.TransactionId).ToArray())
                .With("ats", NpgsqlDbType.Array | NpgsqlDbType.Bigint, entries.Select(e => e.At.UtcTicks).ToArray())
                .With("kinds", NpgsqlDbType.Array | NpgsqlDbType.Text, entries.Select(e => e.Kind).ToArray())
                .With("steps", NpgsqlDbType.Array | NpgsqlDbType.Text, entries.Select(e => e.Step).ToArray())
                .With("message_ids", NpgsqlDbType.Array | NpgsqlDbType.Uuid, entries.Select(e => e.MessageId).ToArray())
                .With("message_types", NpgsqlDbType.Array | NpgsqlDbType.Text, entries.Select(e => e.MessageType).ToArray())
                .With("details", NpgsqlDbType.Array | NpgsqlDbType.Text, entries.Select(e => e.Detail).ToArray())
                .With("answers", NpgsqlDbType.Array | NpgsqlDbType.Uuid, entries.Select(e => e.Answers).ToArray()),
            cancellationToken);
    }

    public async ValueTask<bool> CompleteAsync(QueuedMessage message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        return await ExecuteAsync((await CommandAsync(Sql.Complete, cancellationToken)).With("id", message.Id).With("token", message.LeaseToken), cancellationToken) == 1;
    }

    public async ValueTask<bool> RetryLaterAsync(QueuedMessage message, DateTimeOffset dueAt, AttemptRecord failure, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        var retried = await ExecuteAsync(
            (await CommandAsync(Sql.RetryLater, cancellationToken))
                .With("due", dueAt.UtcTicks)
                .With("history", NpgsqlDbType.Text, StoredRows.WriteHistory(message.History, failure))
                .With("id", message.Id)
                .With("token", message.LeaseToken),
            cancellationToken) == 1;
        if (retried)
        {
            await AnnounceAsync(PostgreSqlNotifications.QueuePrefix + message.Queue, cancellationToken);
        }

        return retried;
    }

    public async ValueTask<bool> DeadLetterAsync(QueuedMessage message, string reason, string? exception, AttemptRecord? failure, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (await DeleteForDeadLetterAsync((await CommandAsync(Sql.CompleteForDeadLetter, cancellationToken)).With("id", message.Id).With("token", message.LeaseToken), cancellationToken) is not { } ordering)
        {
            return false;
        }

        await InsertDeadLetterAsync(message.Queue, message.Envelope, message.Priority, reason, exception, message.Attempt, StoredRows.WriteHistory(message.History, failure), null, cancellationToken, ordering.Key, ordering.Seq);
        return true;
    }

    /// <summary>
    /// Deletes a queue row on its way to the dead letters and returns its ordering key and place, which the dead letter
    /// keeps (so its key stays held, and a retry puts it back where it was); <c>null</c> when no row was deleted.
    /// </summary>
    static async ValueTask<(string? Key, long? Seq)?> DeleteForDeadLetterAsync(NpgsqlCommand delete, CancellationToken cancellationToken)
    {
        await using (delete)
        {
            await using var reader = await delete.ExecuteReaderAsync(cancellationToken);
            if (!await reader.ReadAsync(cancellationToken))
            {
                return null;
            }

            return (reader.IsDBNull(0) ? null : reader.GetString(0), reader.IsDBNull(1) ? null : reader.GetInt64(1));
        }
    }

    async ValueTask InsertDeadLetterAsync(string source, Envelope envelope, int priority, string reason, string? exception, int attempts, string? history, long? logPosition, CancellationToken cancellationToken, string? orderingKey = null, long? orderingSeq = null) =>
        await ExecuteAsync(
            (await CommandAsync(Sql.InsertDeadLetter, cancellationToken))
                .With("ordering_key", NpgsqlDbType.Text, orderingKey)
                .With("ordering_seq", NpgsqlDbType.Bigint, orderingSeq)
                .With("source", source)
                .With("priority", priority)
                .WithEnvelope(envelope)
                .With("reason", reason)
                .With("exception", NpgsqlDbType.Text, exception)
                .With("attempts", attempts)
                .With("history", NpgsqlDbType.Text, history)
                .With("at", _store.Now.UtcTicks)
                .With("log_position", NpgsqlDbType.Bigint, logPosition),
            cancellationToken);

    public async ValueTask<bool> SaveConsumerGroupAsync(string group, long expectedPosition, long position, int failedAttempts, string? lastError, CancellationToken cancellationToken) =>
        await ExecuteAsync(
            (await CommandAsync(Sql.SaveGroup, cancellationToken))
                .With("name", group)
                .With("position", position)
                .With("failed_attempts", failedAttempts)
                .With("last_error", NpgsqlDbType.Text, lastError)
                .With("at", _store.Now.UtcTicks)
                .With("expected", expectedPosition),
            cancellationToken) == 1;

    public async ValueTask<bool> DeleteConsumerGroupAsync(string group, CancellationToken cancellationToken) =>
        await ExecuteAsync((await CommandAsync(Sql.DeleteGroup, cancellationToken)).With("name", group), cancellationToken) == 1;

    public async ValueTask SetConsumerGroupPausedAsync(string group, bool paused, CancellationToken cancellationToken) =>
        await ExecuteAsync(
            (await CommandAsync(Sql.PauseGroup, cancellationToken))
                .With("name", group)
                .With("paused", paused)
                .With("at", _store.Now.UtcTicks),
            cancellationToken);

    public async ValueTask<int> ExecuteAsync(string sql, IReadOnlyList<KeyValuePair<string, object?>> parameters, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var command = await CommandAsync(sql, cancellationToken);
        foreach (var (name, value) in parameters)
        {
            command.Parameters.AddWithValue(name, value ?? DBNull.Value);
        }

        return await ExecuteAsync(command, cancellationToken);
    }

    /// <remarks>
    /// In Converge's own transaction the statement is held until the next statement, <see cref="FlushWritesAsync"/> or
    /// the commit, and goes with the other held writes in one round trip. A statement holding several (a <c>;</c>) is
    /// run at once: one command of a batch is one statement.
    /// </remarks>
    public async ValueTask WriteAsync(string sql, IReadOnlyList<KeyValuePair<string, object?>> parameters, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(sql);
        ArgumentNullException.ThrowIfNull(parameters);
        ObjectDisposedException.ThrowIf(_finished, this);
        if (!_owned || sql.Contains(';', StringComparison.Ordinal))
        {
            await ExecuteAsync(sql, parameters, cancellationToken);
            return;
        }

        var write = new NpgsqlBatchCommand(sql);
        foreach (var (name, value) in parameters)
        {
            write.Parameters.AddWithValue(name, value ?? DBNull.Value);
        }

        (_pendingWrites ??= []).Add(write);
    }

    public ValueTask FlushWritesAsync(CancellationToken cancellationToken) =>
        _pendingWrites is { Count: > 0 } ? FlushAsync(cancellationToken) : ValueTask.CompletedTask;

    public async ValueTask<Guid?> TryReserveUniqueKeyAsync(string key, Guid jobId, DateTimeOffset expiresAt, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var reserved = await ExecuteAsync(
            (await CommandAsync(Sql.ReserveUniqueKey, cancellationToken)).With("key", key).With("job_id", jobId).With("expires_at", expiresAt.UtcTicks).With("now", _store.Now.UtcTicks),
            cancellationToken) == 1;
        if (reserved)
        {
            return null;
        }

        await using var holder = (await CommandAsync(Sql.UniqueKeyHolder, cancellationToken)).With("key", key);
        return await holder.ExecuteScalarAsync(cancellationToken) is Guid id ? id : null;
    }

    public async ValueTask<bool> CreateBatchAsync(JobBatchRecord batch, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batch);
        return await ExecuteAsync((await CommandAsync(Sql.CreateBatch, cancellationToken)).WithBatch(batch), cancellationToken) == 1;
    }

    public async ValueTask AddToBatchAsync(string batchId, int count, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batchId);
        if (!_owned)
        {
            await ApplyBatchAddAsync(batchId, count, cancellationToken);
            return;
        }

        // Every job that enqueues a child into its batch counts it there, and the batch row is one row for all of them:
        // updated now, it would stay locked through the rest of the transaction. Checked now, counted just before the
        // batch's outcomes or the commit, so the row is held only from there to the commit (which checks again that
        // the batch is open). Checked once per transaction, and without writing the held sends first: the check does
        // not need to see them, and they stay one statement.
        if (_batchAdds?.ContainsKey(batchId) != true)
        {
            await using var check = Command(Sql.GetBatch).With("id", batchId);
            if (await check.ReadFirstAsync(JobRows.ReadBatch, cancellationToken) is not { FinishedAt: null })
            {
                await ApplyBatchAddAsync(batchId, count, cancellationToken);
                return;
            }
        }

        _batchAdds ??= new Dictionary<string, long>(StringComparer.Ordinal);
        _batchAdds[batchId] = _batchAdds.GetValueOrDefault(batchId) + count;
    }

    /// <summary>Counts jobs into a batch now; throws as <see cref="IJobTransaction.AddToBatchAsync"/> says when it cannot.</summary>
    async ValueTask ApplyBatchAddAsync(string batchId, long count, CancellationToken cancellationToken)
    {
        if (await ExecuteAsync((await CommandAsync(Sql.AddToBatch, cancellationToken)).With("id", batchId).With("count", count), cancellationToken) == 0)
        {
            await using var get = (await CommandAsync(Sql.GetBatch, cancellationToken)).With("id", batchId);
            var batch = await get.ReadFirstAsync(JobRows.ReadBatch, cancellationToken);
            throw new InvalidOperationException(batch is null
                ? $"There is no batch '{batchId}'. Start it with IJobClient.StartBatchAsync before adding jobs to it."
                : $"Batch '{batchId}' finished at {batch.FinishedAt:O}; a finished batch takes no more jobs. Start a new batch.");
        }
    }

    /// <summary>Applies the counts held for <paramref name="batchId"/> (or for every batch).</summary>
    async ValueTask FlushBatchAddsAsync(string? batchId, CancellationToken cancellationToken)
    {
        if (_batchAdds is not { Count: > 0 } adds)
        {
            return;
        }

        foreach (var (id, count) in adds.Where(a => batchId is null || a.Key == batchId).ToList())
        {
            adds.Remove(id);
            if (count != 0)
            {
                await ApplyBatchAddAsync(id, count, cancellationToken);
            }
        }
    }

    public async ValueTask<JobBatchRecord?> RecordBatchOutcomesAsync(string batchId, int succeeded, int failed, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batchId);
        var added = 0L;
        if (_batchAdds is { } adds && adds.Remove(batchId, out var held))
        {
            added = held;
        }

        // The batch row stays locked from the count to the commit: what the commit would send first goes out now.
        if (_owned)
        {
            await FlushAndNotifyAsync(cancellationToken);
        }

        // A finished batch keeps its counts: only a job retried before it finished was re-opened in it.
        await using var count = (await CommandAsync(Sql.CountIntoBatch, cancellationToken))
            .With("id", batchId)
            .With("added", added)
            .With("succeeded", (long)succeeded)
            .With("failed", (long)failed)
            .With("now", _store.Now.UtcTicks);
        if (await count.ReadFirstAsync(JobRows.ReadBatch, cancellationToken) is { } batch)
        {
            return batch.FinishedAt is null ? null : batch;
        }

        if (added != 0)
        {
            // The batch finished (or is gone) since the adds were checked: say so as an add would.
            await ApplyBatchAddAsync(batchId, added, cancellationToken);
        }

        return null;
    }

    /// <inheritdoc />
    /// <remarks>Held in Converge's own transaction only: a caller's transaction is committed by the caller.</remarks>
    public ValueTask<bool> TryHoldBatchOutcomesAsync(string batchId, int succeeded, int failed, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batchId);
        if (!_owned)
        {
            return ValueTask.FromResult(false);
        }

        _heldOutcomes ??= new Dictionary<string, (long, long)>(StringComparer.Ordinal);
        var (heldSucceeded, heldFailed) = _heldOutcomes.GetValueOrDefault(batchId);
        _heldOutcomes[batchId] = (heldSucceeded + succeeded, heldFailed + failed);
        return ValueTask.FromResult(true);
    }

    /// <summary>
    /// Takes the held outcome counts for the commit. A batch that also took jobs in this transaction is counted now,
    /// as a finished batch must fail the transaction before it commits; the others are returned, to go with the commit.
    /// </summary>
    async ValueTask<List<(string BatchId, long Succeeded, long Failed)>> TakeHeldOutcomesAsync(CancellationToken cancellationToken)
    {
        var withCommit = new List<(string, long, long)>();
        if (_heldOutcomes is not { Count: > 0 } held)
        {
            return withCommit;
        }

        _heldOutcomes = null;
        foreach (var (batchId, (succeeded, failed)) in held)
        {
            if (_batchAdds is { } adds && adds.Remove(batchId, out var added) && added != 0)
            {
                await using var count = Command(Sql.CountIntoBatchWithCallbacks);
                AddCountParameters(count.Parameters, batchId, added, succeeded, failed);
                await using var reader = await count.ExecuteReaderAsync(cancellationToken);
                if (!await ReadCountWithCallbacksAsync(reader, cancellationToken))
                {
                    // The batch finished (or is gone) since the adds were checked: say so as an add would.
                    await ApplyBatchAddAsync(batchId, added, cancellationToken);
                }
            }
            else if (succeeded != 0 || failed != 0)
            {
                withCommit.Add((batchId, succeeded, failed));
            }
        }

        return withCommit;
    }

    /// <summary>The parameters of <see cref="PostgreSqlSchema.CountIntoBatchWithCallbacks"/>.</summary>
    void AddCountParameters(NpgsqlParameterCollection parameters, string batchId, long added, long succeeded, long failed)
    {
        parameters.AddWithValue("id", batchId);
        parameters.AddWithValue("added", added);
        parameters.AddWithValue("succeeded", succeeded);
        parameters.AddWithValue("failed", failed);
        parameters.AddWithValue("now", _store.Now.UtcTicks);
        parameters.AddWithValue("channel", Sql.Channel);
        parameters.AddWithValue("prefix", PostgreSqlNotifications.QueuePrefix);
    }

    /// <summary>
    /// Reads the current result of a count (<see cref="PostgreSqlSchema.CountIntoBatchWithCallbacks"/>): whether the
    /// batch was counted. A queue a callback went to is announced in this process after the commit.
    /// </summary>
    async ValueTask<bool> ReadCountWithCallbacksAsync(NpgsqlDataReader reader, CancellationToken cancellationToken)
    {
        var counted = false;
        while (await reader.ReadAsync(cancellationToken))
        {
            counted = reader.GetInt64(0) > 0;
            if (!reader.IsDBNull(1))
            {
                var payload = PostgreSqlNotifications.QueuePrefix + reader.GetString(1);
                (_notified ??= new HashSet<string>(StringComparer.Ordinal)).Add(payload);
                (_notifiedSent ??= new HashSet<string>(StringComparer.Ordinal)).Add(payload);
            }
        }

        return counted;
    }

    /// <summary>
    /// Makes the held outcome counts and commits, in one round trip: the batches' rows are locked from their count to
    /// the end of the commit, with no round trip to this process between.
    /// </summary>
    async ValueTask CountAndCommitAsync(List<(string BatchId, long Succeeded, long Failed)> counts, CancellationToken cancellationToken)
    {
        // A held savepoint or release has nothing after it: the commit ends it.
        TakeHeld();
        await using var batch = new NpgsqlBatch(_connection, _transaction);
        foreach (var (batchId, succeeded, failed) in counts)
        {
            var count = new NpgsqlBatchCommand(Sql.CountIntoBatchWithCallbacks);
            AddCountParameters(count.Parameters, batchId, 0, succeeded, failed);
            batch.BatchCommands.Add(count);
        }

        batch.BatchCommands.Add(new NpgsqlBatchCommand("COMMIT"));
        await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
        for (var i = 0; i < counts.Count; i++)
        {
            await ReadCountWithCallbacksAsync(reader, cancellationToken);
            await reader.NextResultAsync(cancellationToken);
        }

        // The commit's own result: an error there (the connection lost, a deferred check) surfaces here.
        while (await reader.NextResultAsync(cancellationToken))
        {
        }
    }

    public async ValueTask<JobBatchRecord?> SealBatchAsync(string batchId, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batchId);
        await FlushBatchAddsAsync(batchId, cancellationToken);
        var sealedNow = await ExecuteAsync((await CommandAsync(Sql.SealBatch, cancellationToken)).With("id", batchId), cancellationToken) == 1;
        return sealedNow ? await FinishBatchAsync(batchId, cancellationToken) : null;
    }

    /// <summary>Marks the batch finished if it is sealed and nothing is pending; the batch when this call finished it.</summary>
    async Task<JobBatchRecord?> FinishBatchAsync(string batchId, CancellationToken cancellationToken)
    {
        await using var finish = (await CommandAsync(Sql.FinishBatch, cancellationToken)).With("id", batchId).With("now", _store.Now.UtcTicks);
        return await finish.ReadFirstAsync(JobRows.ReadBatch, cancellationToken);
    }

    public async ValueTask UpsertRecurringJobAsync(RecurringJobRecord schedule, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        await ExecuteAsync((await CommandAsync(Sql.UpsertRecurring, cancellationToken)).WithRecurring(schedule), cancellationToken);
    }

    public async ValueTask<IReadOnlyList<RecurringJobRecord>> LoadDueRecurringJobsAsync(DateTimeOffset now, CancellationToken cancellationToken)
    {
        // The scheduler is singleton work: one process at a time fires schedules; the others find nothing due
        // until it commits (and then find the schedules advanced).
        await using (var turn = (await CommandAsync("SELECT pg_try_advisory_xact_lock(@key)", cancellationToken)).With("key", PostgreSqlMessageStore.StableKey("recurring:" + _store.SchemaName)))
        {
            if (await turn.ExecuteScalarAsync(cancellationToken) is not true)
            {
                return [];
            }
        }

        await using var command = (await CommandAsync(Sql.LoadDueRecurring, cancellationToken)).With("now", now.UtcTicks);
        return await command.ReadAllAsync(JobRows.ReadRecurring, cancellationToken);
    }

    public async ValueTask<bool> AdvanceRecurringJobAsync(string name, DateTimeOffset expectedNextAt, DateTimeOffset nextAt, DateTimeOffset? lastAt, CancellationToken cancellationToken) =>
        await ExecuteAsync(
            (await CommandAsync(Sql.AdvanceRecurring, cancellationToken))
                .With("name", name)
                .With("expected", expectedNextAt.UtcTicks)
                .With("next_at", nextAt.UtcTicks)
                .With("last_at", NpgsqlDbType.Bigint, lastAt?.UtcTicks),
            cancellationToken) == 1;

    public async ValueTask<bool> RemoveRecurringJobAsync(string name, CancellationToken cancellationToken) =>
        await ExecuteAsync((await CommandAsync(Sql.RemoveRecurring, cancellationToken)).With("name", name), cancellationToken) == 1;

    public async ValueTask ForgetJobStateAsync(IReadOnlyList<Guid> jobIds, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(jobIds);
        if (jobIds.Count > 0)
        {
            await ExecuteAsync((await CommandAsync(Sql.ForgetJobState, cancellationToken)).With("job_ids", jobIds.ToArray()), cancellationToken);
        }
    }

    /// <summary>
    /// Cancels job <paramref name="id"/>: each waiting copy moves to the dead letters as cancelled and counts as a failure in
    /// its batch (enqueueing the batch's callbacks when that finishes it); a copy under a live lease is flagged for its worker.
    /// </summary>
    internal async ValueTask<JobCancelOutcome> CancelJobAsync(Guid id, CancellationToken cancellationToken)
    {
        var now = _store.Now.UtcTicks;
        List<QueueRow> rows;
        await using (var find = (await CommandAsync(Sql.JobInQueueForUpdate, cancellationToken)).With("message_id", id))
        {
            rows = await find.ReadAllAsync(RowReader.ReadQueueRow, cancellationToken);
        }

        if (rows.Count == 0)
        {
            return JobCancelOutcome.NotFound;
        }

        var requested = false;
        foreach (var row in rows)
        {
            if (row.Leased && row.VisibleAt > now)
            {
                await ExecuteAsync((await CommandAsync(Sql.RequestCancellation, cancellationToken)).With("job_id", id).With("at", now), cancellationToken);
                requested = true;
                continue;
            }

            var ordering = await DeleteForDeadLetterAsync((await CommandAsync(Sql.DeleteQueued, cancellationToken)).With("id", row.Id), cancellationToken);
            await InsertDeadLetterAsync(row.Queue, row.Envelope, row.Priority, DeadLetterReasons.Cancelled, null, row.Attempts, row.History, null, cancellationToken, ordering?.Key, ordering?.Seq);
            if (JobRows.BatchOf(row.Envelope) is { } batchId
                && await RecordBatchOutcomesAsync(batchId, 0, 1, cancellationToken) is { } finished)
            {
                await JobRows.EnqueueBatchCallbacksAsync(this, finished, cancellationToken);
            }
        }

        return requested ? JobCancelOutcome.Requested : JobCancelOutcome.Cancelled;
    }

    public async ValueTask SavepointAsync(CancellationToken cancellationToken)
    {
        await ExecuteAsync((await CommandAsync(PostgreSqlSchema.Savepoint, cancellationToken)), cancellationToken);
        MarkSavepoint();
    }

    /// <inheritdoc />
    /// <remarks>In Converge's own transaction the savepoint goes with the next statement (with a held release of the one before).</remarks>
    public async ValueTask SavepointBeforeNextAsync(CancellationToken cancellationToken)
    {
        if (!_owned)
        {
            await SavepointAsync(cancellationToken);
            return;
        }

        // Held sends are written before it, as a savepoint sent now would be after them.
        await FlushAsync(cancellationToken);
        _savepointHeld = true;
        MarkSavepoint();
    }

    /// <summary>A held savepoint with nothing written after it: ending it needs no statement.</summary>
    bool HeldSavepointUnused => _savepointHeld && _pendingEnqueues is not { Count: > 0 } && _pendingWrites is not { Count: > 0 };

    void MarkSavepoint()
    {
        _batchAddsAtSavepoint = _batchAdds is null ? null : new Dictionary<string, long>(_batchAdds, StringComparer.Ordinal);
        _heldOutcomesAtSavepoint = _heldOutcomes is null ? null : new Dictionary<string, (long, long)>(_heldOutcomes, StringComparer.Ordinal);
        _callbacksAtSavepoint = _afterCommit?.Count ?? 0;
    }

    /// <inheritdoc />
    async ValueTask IStoreTransaction.FlushAsync(CancellationToken cancellationToken)
    {
        await FlushAsync(cancellationToken);
        await SendHeldAsync(cancellationToken);
    }

    /// <summary>Sends the held savepoint statements on their own, for a statement that does not go through <see cref="Command"/>.</summary>
    async ValueTask SendHeldAsync(CancellationToken cancellationToken)
    {
        if (TakeHeld() is { Length: > 0 } held)
        {
            await ExecuteAsync(PostgreSqlMessageStore.Command(_connection, _transaction, held.TrimEnd(' ', ';')), cancellationToken);
        }
    }

    public async ValueTask RollbackToSavepointAsync(CancellationToken cancellationToken)
    {
        // Writes are held only after the savepoint (making it sends what was held before): undone, they need not be sent.
        _pendingWrites = null;
        if (HeldSavepointUnused)
        {
            // Never sent, and nothing written since: there is nothing to undo on the server.
            _savepointHeld = false;
        }
        else
        {
            await ExecuteAsync((await CommandAsync(PostgreSqlSchema.RollbackToSavepoint, cancellationToken)), cancellationToken);
        }

        _batchAdds = _batchAddsAtSavepoint;
        _batchAddsAtSavepoint = null;
        _heldOutcomes = _heldOutcomesAtSavepoint;
        _heldOutcomesAtSavepoint = null;

        // What was undone must not be announced: callbacks registered since the savepoint go with it (a caller's own
        // transaction announces through NOTIFY, which the rollback undoes by itself).
        _afterCommit?.RemoveRange(_callbacksAtSavepoint, _afterCommit.Count - _callbacksAtSavepoint);
    }

    /// <remarks>
    /// In Converge's own transaction the release goes with the next statement: until then the savepoint merely stays,
    /// which changes nothing for what runs meanwhile.
    /// </remarks>
    public async ValueTask ReleaseSavepointAsync(CancellationToken cancellationToken)
    {
        if (HeldSavepointUnused)
        {
            // Never sent, and nothing written since: released before it began.
            _savepointHeld = false;
        }
        else if (_owned)
        {
            await FlushAsync(cancellationToken);
            _releaseHeld = true;
        }
        else
        {
            await ExecuteAsync((await CommandAsync(PostgreSqlSchema.ReleaseSavepoint, cancellationToken)), cancellationToken);
        }

        _batchAddsAtSavepoint = null;
        _heldOutcomesAtSavepoint = null;
    }

    public void OnCommitted(Action callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        if (!_owned)
        {
            // The caller commits with its own NpgsqlTransaction, which raises no event: a notification carrying the
            // callback's token is delivered to this process's listener if, and only if, that transaction commits.
            var token = _store.Notifications.Register(callback);
            using var notify = Command("SELECT pg_notify(@channel, @payload)").With("channel", Sql.Channel).With("payload", PostgreSqlNotifications.CallbackPrefix + token.ToString("N"));
            notify.ExecuteNonQuery();
            return;
        }

        (_afterCommit ??= []).Add(callback);
    }

    public async ValueTask CommitAsync(CancellationToken cancellationToken)
    {
        if (!_owned)
        {
            throw new InvalidOperationException("This transaction belongs to the caller: commit it with the DbTransaction you passed in.");
        }

        ObjectDisposedException.ThrowIf(_finished, this);
        await FlushAndNotifyAsync(cancellationToken);

        // Last before the commit: each count locks its batch's row until then.
        var countsWithCommit = await TakeHeldOutcomesAsync(cancellationToken);
        await FlushBatchAddsAsync(null, cancellationToken);

        try
        {
            if (countsWithCommit.Count > 0)
            {
                await CountAndCommitAsync(countsWithCommit, cancellationToken);
            }
            else
            {
                await _transaction.CommitAsync(cancellationToken);
            }
        }
        finally
        {
            await FinishAsync();
        }

        if (_notified is { } written)
        {
            foreach (var payload in written)
            {
                if (payload == PostgreSqlNotifications.LogPayload)
                {
                    _store.Signals.Log.Ring();
                }
                else
                {
                    _store.Signals.RingQueue(payload[PostgreSqlNotifications.QueuePrefix.Length..]);
                }
            }
        }

        if (_afterCommit is { } callbacks)
        {
            foreach (var callback in callbacks)
            {
                callback();
            }
        }
    }

    public async ValueTask AbandonAsync()
    {
        if (!_owned || _finished)
        {
            return;
        }

        _finished = true;
        try
        {
            await _transaction.DisposeAsync();
        }
        catch (Exception exception) when (exception is NpgsqlException or InvalidOperationException)
        {
            // The handler is still inside a command on this connection; closing the connection ends the session,
            // and the server rolls the transaction back.
        }
        finally
        {
            try
            {
                await _connection.DisposeAsync();
            }
            catch (Exception exception) when (exception is NpgsqlException or InvalidOperationException)
            {
                // Could not close it under the running command: the leases expire and another consumer takes over.
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_owned && !_finished)
        {
            await FinishAsync();
        }
    }

    async ValueTask FinishAsync()
    {
        _finished = true;
        await _transaction.DisposeAsync();
        await _connection.DisposeAsync();
    }
}
