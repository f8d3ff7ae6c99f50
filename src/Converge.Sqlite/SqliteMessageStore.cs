using System.Collections.Concurrent;
using System.Data.Common;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.Data.Sqlite;

namespace Converge.Sqlite;

/// <summary>
/// The embedded store: one SQLite file in WAL mode. SQLite allows one writer at a time, so writers in this
/// process queue on an in-process gate (never spinning on SQLITE_BUSY among themselves) and group their work
/// into few commits; other processes on the same file wait on SQLite's busy timeout.
/// </summary>
public sealed class SqliteMessageStore : IMessageStore, IDatabaseStore, IStoreQueries, ISagaQueries, IJobStore, IJobQueries, IDeadLetterQueries, IOperatorLog, IActivityQueries
{
    const int MaxPooledSessions = 16;
    const int PurgeChunk = 5000;

    readonly SqliteStoreOptions _options;
    readonly TimeProvider _time;
    readonly string _connectionString;
    readonly string _readConnectionString;
    readonly string _fullPath;
    readonly SemaphoreSlim _writeGate = new(1, 1);
    volatile bool _schemaCurrent;
    readonly ConcurrentBag<SqliteSession> _sessions = [];

    // Whether a pooled read connection was ever opened, so that disposing has a pool to clear. A store that never
    // opened one must not construct a connection to clear it: when SQLite itself failed to load (its native library
    // missing), that construction throws again and would hide the original error behind the disposal's.
    volatile bool _readPoolUsed;

    /// <summary>Creates the store; nothing is opened until first use. Call <see cref="MigrateAsync"/> before anything else.</summary>
    public SqliteMessageStore(SqliteStoreOptions options, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _time = timeProvider ?? throw new ArgumentNullException(nameof(timeProvider));
        _fullPath = System.IO.Path.GetFullPath(options.Path);
        _connectionString = new SqliteConnectionStringBuilder { DataSource = _fullPath, Pooling = false }.ToString();
        _readConnectionString = new SqliteConnectionStringBuilder { DataSource = _fullPath, Pooling = true }.ToString();
        Schema = new SqliteSchema(options.TablePrefix);
    }

    /// <inheritdoc />
    public string Name => "sqlite";

    /// <inheritdoc />
    public CommitSignals Signals { get; } = new();

    /// <summary>The database file.</summary>
    public string Path => _fullPath;

    internal SqliteSchema Schema { get; }

    internal DateTimeOffset Now => _time.GetUtcNow();

    /// <summary>Opens a new connection to the store's file with the store's settings; the caller disposes it.</summary>
    public SqliteConnection OpenConnection()
    {
        var connection = new SqliteConnection(_connectionString);
        connection.Open();

        // temp_store: savepoints journal each page they first touch; in memory that costs a copy, on disk a write.
        // cache_size and wal_autocheckpoint: a batch touches pages of several tables and indexes, and a checkpoint
        // runs inside the committing writer's lock; fewer, larger checkpoints copy each hot page once, not often.
        using var pragma = connection.CreateCommand();
        pragma.CommandText = $"PRAGMA busy_timeout = {(long)_options.BusyTimeout.TotalMilliseconds}; PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 10000; PRAGMA synchronous = {(_options.Durability == SqliteDurability.Full ? "FULL" : "NORMAL")};";
        pragma.ExecuteNonQuery();
        return connection;
    }

    /// <inheritdoc />
    public async ValueTask MigrateAsync(CancellationToken cancellationToken)
    {
        await _writeGate.WaitAsync(cancellationToken);
        try
        {
            using var connection = OpenConnection();
            using (var wal = connection.CreateCommand())
            {
                wal.CommandText = "PRAGMA journal_mode = WAL";
                var mode = wal.ExecuteScalar() as string;
                if (!string.Equals(mode, "wal", StringComparison.OrdinalIgnoreCase))
                {
                    throw new InvalidOperationException($"SQLite refused WAL mode for {_fullPath} (it reported '{mode}'). Put the file on a local disk.");
                }
            }

            // BEGIN IMMEDIATE takes the write lock first, so two processes starting at once migrate one after the other.
            using var transaction = connection.BeginTransaction(deferred: false);
            Execute(connection, transaction, Schema.CreateMigrations);
            var current = Convert.ToInt32(Scalar(connection, transaction, Schema.CurrentVersion), System.Globalization.CultureInfo.InvariantCulture);
            for (var version = current + 1; version <= Schema.Versions.Count; version++)
            {
                Execute(connection, transaction, Schema.Versions[version - 1]);
                using var record = connection.CreateCommand();
                record.Transaction = transaction;
                record.CommandText = Schema.RecordVersion;
                record.With("$version", version).With("$at", Now.UtcTicks).ExecuteNonQuery();
            }

            transaction.Commit();
            _schemaCurrent = true;
        }
        finally
        {
            _writeGate.Release();
        }
    }

    /// <summary>
    /// Refuses a write to a file whose tables are older than this version's (never migrated, or migrated by an older
    /// Converge) with what to do, rather than SQLite's "no such table". Checked once; a migration sets it.
    /// </summary>
    void RequireCurrentSchema(SqliteConnection connection)
    {
        using var command = connection.CreateCommand();
        command.CommandText = $"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = {Schema.Migrations.Replace('"', '\'')}";
        var version = 0;
        if (Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture) > 0)
        {
            command.CommandText = Schema.CurrentVersion;
            version = Convert.ToInt32(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
        }

        if (version < Schema.Versions.Count)
        {
            throw new InvalidOperationException(version == 0
                ? $"{_fullPath} has no Converge tables yet. Start the host first (AddConverge migrates the store when it starts), or call MigrateAsync before the first write."
                : $"{_fullPath} holds Converge schema version {version}; this version needs {Schema.Versions.Count}. Start the host (it migrates the store when it starts) or call MigrateAsync before writing.");
        }

        _schemaCurrent = true;
    }

    /// <summary>The schema version this build writes and reads: what <see cref="MigrateAsync"/> brings a file to.</summary>
    internal int LatestSchemaVersion => Schema.Versions.Count;

    /// <summary>The schema version of the file, or 0 when Converge has never migrated it.</summary>
    public int GetSchemaVersion()
    {
        using var connection = OpenConnection();
        using var command = connection.CreateCommand();
        command.CommandText = $"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = {Schema.Migrations.Replace('"', '\'')}";
        if (Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture) == 0)
        {
            return 0;
        }

        command.CommandText = Schema.CurrentVersion;
        return Convert.ToInt32(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <inheritdoc />
    public async ValueTask<IStoreTransaction> BeginAsync(CancellationToken cancellationToken)
    {
        await _writeGate.WaitAsync(cancellationToken);
        SqliteSession? session = null;
        try
        {
            session = Rent();
            if (!_schemaCurrent)
            {
                RequireCurrentSchema(session.Connection);
            }

            return SqliteStoreTransaction.Owned(this, session);
        }
        catch
        {
            if (session is not null)
            {
                session.Broken = true;
                Return(session);
            }

            _writeGate.Release();
            throw;
        }
    }

    /// <summary>
    /// Runs the callbacks of a caller's transaction once its commit is visible. Called from SQLite's commit hook,
    /// which fires while the committing connection still holds the write lock: taking the write lock here waits
    /// for that commit to finish, so consumers woken afterwards find what it wrote.
    /// </summary>
    internal void AfterForeignCommit(Action[] callbacks) => _ = Task.Run(async () =>
    {
        try
        {
            await WriteAsync(static (_, _) => 0, CancellationToken.None);
        }
        catch (SqliteException)
        {
            // Could not confirm; wake anyway: consumers fall back to polling if they find nothing.
        }

        foreach (var callback in callbacks)
        {
            callback();
        }
    });

    internal void EndWrite(SqliteSession session)
    {
        Return(session);
        _writeGate.Release();
    }

    /// <inheritdoc />
    public IStoreTransaction Enlist(DbTransaction transaction)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        if (transaction is not SqliteTransaction sqlite || sqlite.Connection is not { } connection)
        {
            throw new ArgumentException($"The outbox needs an open transaction on the store's SQLite file; got {transaction.GetType().Name}.", nameof(transaction));
        }

        if (!string.Equals(System.IO.Path.GetFullPath(connection.DataSource), _fullPath, StringComparison.Ordinal))
        {
            throw new ArgumentException($"The transaction is on '{connection.DataSource}', but the store is '{_fullPath}'. Open the connection on the store's file so the message commits with your writes.", nameof(transaction));
        }

        return SqliteStoreTransaction.Enlisted(this, sqlite);
    }

    /// <inheritdoc />
    public async ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken)
    {
        // A read first: an idle poll never takes the write lock.
        if (!Read(session => AnyVisible(session, queue, Now)))
        {
            return [];
        }

        return await ClaimInOwnTransactionAsync(queue, max, lease, ClaimPolicy.Default, cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(policy);
        if (policy is { OldestFirst: false, MaxInFlight: null, RateLimit: null })
        {
            return await ClaimAsync(queue, max, lease, cancellationToken);
        }

        ClaimLimits.Validate(policy);

        // Reads first: an idle poll, or one at the concurrency limit, never takes the write lock.
        if (!Read(session => AnyVisible(session, queue, Now) && (policy.MaxInFlight is not { } most || CountLiveLeases(session.Commands, null, queue, Now) < most)))
        {
            return [];
        }

        return await ClaimInOwnTransactionAsync(queue, max, lease, policy, cancellationToken);
    }

    /// <summary>
    /// Claims in a write transaction of its own (BEGIN IMMEDIATE): the count of live leases and the token bucket hold
    /// until the claim commits, in every process, and a row that cannot be decoded leaves the queue with the claim.
    /// </summary>
    async ValueTask<IReadOnlyList<QueuedMessage>> ClaimInOwnTransactionAsync(string queue, int max, TimeSpan lease, ClaimPolicy policy, CancellationToken cancellationToken)
    {
        await using var transaction = await BeginAsync(cancellationToken);
        var claimed = await transaction.ClaimAsync(queue, max, lease, policy, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return claimed;
    }

    /// <summary>
    /// Claims inside <paramref name="transaction"/>, within <paramref name="policy"/>'s limits: live leases counted
    /// against the concurrency limit, permits taken from the token bucket, rows leased in the policy's order. Rows
    /// that cannot be decoded are dead-lettered in the same transaction (<see cref="InvalidRows"/>) and not returned.
    /// </summary>
    internal async ValueTask<List<QueuedMessage>> ClaimWithinAsync(IStoreTransaction storeTransaction, CommandCache commands, SqliteTransaction transaction, string queue, int max, TimeSpan lease, ClaimPolicy policy, DateTimeOffset now, CancellationToken cancellationToken)
    {
        var allowed = max;
        if (policy.MaxInFlight is { } maxInFlight)
        {
            allowed = (int)Math.Min(allowed, maxInFlight - CountLiveLeases(commands, transaction, queue, now));
        }

        var (tokens, refilledAt) = (0d, now.UtcTicks);
        if (policy.RateLimit is { } rate)
        {
            (tokens, refilledAt) = RefillBucket(commands, transaction, queue, rate, now);
            allowed = Math.Min(allowed, ClaimLimits.Permits(tokens));
        }

        var rows = allowed > 0
            ? ClaimRows(commands, transaction, policy.OldestFirst ? Schema.ClaimOldest : Schema.Claim, queue, allowed, lease, now)
            : [];
        if (policy.RateLimit is not null)
        {
            commands.Get(Schema.SaveRateLimit, transaction)
                .With("$queue", queue)
                .With("$tokens", Math.Max(0, tokens - rows.Count))
                .With("$refilled_at", refilledAt)
                .ExecuteNonQuery();
        }

        var claimed = rows.TrueForAll(static row => row.Problem is null)
            ? rows.ConvertAll(static row => row.Message)
            : await InvalidRows.SetAsideAsync(storeTransaction, rows, now, JobRows.InvalidRowDeadLetteredAsync, cancellationToken);
        claimed.Sort(static (a, b) => a.Priority != b.Priority ? b.Priority.CompareTo(a.Priority) : a.Id.CompareTo(b.Id));
        return claimed;
    }

    bool AnyVisible(SqliteSession session, string queue, DateTimeOffset now) =>
        session.Commands.Get(Schema.AnyVisible, null).With("$queue", queue).With("$now", now.UtcTicks).ExecuteScalar() is not null;

    long CountLiveLeases(CommandCache commands, SqliteTransaction? transaction, string queue, DateTimeOffset now) =>
        (long)commands.Get(Schema.CountLiveLeases, transaction).With("$queue", queue).With("$now", now.UtcTicks).ExecuteScalar()!;

    /// <summary>The queue's token bucket refilled to <paramref name="now"/>, and the refill time to store.</summary>
    (double Tokens, long RefilledAt) RefillBucket(CommandCache commands, SqliteTransaction transaction, string queue, RateLimit rate, DateTimeOffset now)
    {
        using var reader = commands.Get(Schema.GetRateLimit, transaction).With("$queue", queue).ExecuteReader();
        return ClaimLimits.Refill(reader.Read() ? (reader.GetDouble(0), reader.GetInt64(1)) : null, rate, now);
    }

    /// <summary>Leases up to <paramref name="max"/> visible messages with <paramref name="claim"/>; highest priority first, then in queue order.</summary>
    static List<ClaimedRow> ClaimRows(CommandCache commands, SqliteTransaction transaction, string claim, string queue, int max, TimeSpan lease, DateTimeOffset now)
    {
        var token = Guid.NewGuid();
        var claimed = new List<ClaimedRow>(Math.Min(max, 1024));
        using (var reader = commands.Get(claim, transaction)
            .With("$until", (now + lease).UtcTicks)
            .With("$token", token)
            .With("$queue", queue)
            .With("$now", now.UtcTicks)
            .With("$max", max)
            .ExecuteReader())
        {
            while (reader.Read())
            {
                claimed.Add(RowReader.ReadClaimed(reader, queue, token));
            }
        }

        return claimed;
    }

    /// <inheritdoc />
    public ValueTask<DateTimeOffset?> NextVisibleAtAsync(string queue, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Read(session =>
            session.Commands.Get(Schema.NextVisible, null).With("$queue", queue).ExecuteScalar() is long ticks
                ? StoredRows.FromTicksClamped(ticks)
                : (DateTimeOffset?)null));

    /// <inheritdoc />
    public async ValueTask<int> RenewLeasesAsync(IReadOnlyList<QueuedMessage> messages, TimeSpan lease, CancellationToken cancellationToken)
    {
        var until = (Now + lease).UtcTicks;
        return await WriteAsync(
            (session, transaction) => messages.Sum(m => session.Commands.Get(Schema.Renew, transaction).With("$until", until).With("$id", m.Id).With("$token", m.LeaseToken).ExecuteNonQuery()),
            cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> messages, bool countAttempt, CancellationToken cancellationToken)
    {
        var now = Now.UtcTicks;
        var queues = await WriteAsync(
            (session, transaction) =>
            {
                foreach (var m in messages)
                {
                    session.Commands.Get(Schema.Release, transaction).With("$now", now).With("$uncount", countAttempt ? 0 : 1).With("$id", m.Id).With("$token", m.LeaseToken).ExecuteNonQuery();
                }

                return messages.Select(m => m.Queue).Distinct().ToList();
            },
            cancellationToken);
        queues.ForEach(Signals.RingQueue);
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<LogEvent>> ReadLogAsync(long afterPosition, int max, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<LogEvent>>(Read(session => ReadEvents(session.Commands.Get(Schema.ReadLog, null).With("$after", afterPosition).With("$max", max))));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<LogEvent>> ReadStreamAsync(string stream, long fromVersion, int max, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<LogEvent>>(Read(session => ReadEvents(session.Commands.Get(Schema.ReadStream, null).With("$stream", stream).With("$from", fromVersion).With("$max", max))));

    static List<LogEvent> ReadEvents(SqliteCommand command) => command.ReadAll(RowReader.ReadEvent);

    /// <inheritdoc />
    public ValueTask<ConsumerGroupState?> GetConsumerGroupAsync(string group, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Read(session =>
        {
            using var reader = session.Commands.Get(Schema.GetGroup, null).With("$name", group).ExecuteReader();
            return reader.Read()
                ? new ConsumerGroupState(reader.GetString(0), reader.GetInt64(1), reader.GetInt32(2), reader.IsDBNull(3) ? null : reader.GetString(3), SqliteMapping.FromTicks(reader.GetInt64(4)), reader.GetInt64(5) != 0)
                : null;
        }));

    /// <inheritdoc />
    public ValueTask<long> GetLogHeadAsync(CancellationToken cancellationToken) =>
        ValueTask.FromResult(Read(session => (long)session.Commands.Get(Schema.LogHead, null).ExecuteScalar()!));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<DeadLetter>> ListDeadLettersAsync(string? source, int max, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<DeadLetter>>(Read(session => ReadDeadLetters(session.Commands.Get(Schema.ListDeadLetters, null).With("$source", source).With("$max", max))));

    static List<DeadLetter> ReadDeadLetters(SqliteCommand command) => command.ReadAll(RowReader.ReadDeadLetter);

    /// <inheritdoc />
    public async ValueTask<bool> RetryDeadLetterAsync(long id, CancellationToken cancellationToken)
    {
        var queue = await WriteAsync(
            (session, transaction) =>
            {
                var letter = ReadDeadLetters(session.Commands.Get(Schema.GetDeadLetter, transaction).With("$id", id)) is [var found, ..] ? found : null;
                if (letter is null || letter.LogPosition is not null)
                {
                    return null;
                }

                // A keyed dead letter goes back to the place it had in its key, ahead of the messages it held.
                var enqueue = letter.OrderingKey is null
                    ? session.Commands.Get(Schema.Enqueue, transaction)
                    : session.Commands.Get(Schema.EnqueueKeyed, transaction).With("$ordering_key", letter.OrderingKey).With("$dead_letter", id);
                enqueue
                    .With("$queue", letter.Source)
                    .With("$priority", letter.Priority)
                    .With("$visible_at", Now.UtcTicks)
                    .WithEnvelope(letter.Envelope)
                    .ExecuteNonQuery();
                session.Commands.Get(Schema.DeleteDeadLetter, transaction).With("$id", id).ExecuteNonQuery();
                if (letter.Envelope.Headers.TryGetValue(JobHeaders.Batch, out var batchId))
                {
                    // Counted as failed in its batch; pending again until it finishes anew. A finished batch stays as it ended.
                    session.Commands.Get(Schema.RecordBatchOutcomes, transaction).With("$id", batchId).With("$succeeded", 0).With("$failed", -1).ExecuteNonQuery();
                }

                return letter.Source;
            },
            cancellationToken);
        if (queue is null)
        {
            return false;
        }

        Signals.RingQueue(queue);
        return true;
    }

    /// <inheritdoc />
    public async ValueTask<bool> DiscardDeadLetterAsync(long id, CancellationToken cancellationToken) =>
        await WriteAsync((session, transaction) => session.Commands.Get(Schema.DeleteDeadLetter, transaction).With("$id", id).ExecuteNonQuery() == 1, cancellationToken);

    /// <inheritdoc />
    public async ValueTask<int> PurgeInboxAsync(DateTimeOffset handledBefore, CancellationToken cancellationToken)
    {
        // In chunks, so that a large clean-up never holds the write lock for long.
        var total = 0;
        int deleted;
        do
        {
            deleted = await WriteAsync((session, transaction) => session.Commands.Get(Schema.PurgeInbox, transaction).With("$cutoff", handledBefore.UtcTicks).With("$chunk", PurgeChunk).ExecuteNonQuery(), cancellationToken);
            total += deleted;
        }
        while (deleted == PurgeChunk);

        return total;
    }

    /// <inheritdoc />
    public async ValueTask<int> PurgeExpiredUniqueKeysAsync(CancellationToken cancellationToken)
    {
        var now = Now.UtcTicks;
        var total = 0;
        int deleted;
        do
        {
            deleted = await WriteAsync((session, transaction) => session.Commands.Get(Schema.PurgeUniqueKeys, transaction).With("$now", now).With("$chunk", PurgeChunk).ExecuteNonQuery(), cancellationToken);
            total += deleted;
        }
        while (deleted == PurgeChunk);

        return total;
    }

    /// <inheritdoc />
    public ValueTask<StoreStatus> GetStatusAsync(CancellationToken cancellationToken) =>
        ValueTask.FromResult(Read(session =>
        {
            var now = Now.UtcTicks;
            var deadLetters = new Dictionary<string, long>(StringComparer.Ordinal);
            using (var reader = session.Commands.Get(Schema.DeadLetterCounts, null).ExecuteReader())
            {
                while (reader.Read())
                {
                    deadLetters[reader.GetString(0)] = reader.GetInt64(1);
                }
            }

            var queues = new List<QueueStatus>();
            using (var reader = session.Commands.Get(Schema.QueueStatus, null).With("$now", now).With("$stranded_after", (Now + InvalidRows.StrandedAfter).UtcTicks).ExecuteReader())
            {
                while (reader.Read())
                {
                    var name = reader.GetString(0);
                    queues.Add(new QueueStatus(name, reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3), deadLetters.GetValueOrDefault(name))
                    {
                        Stranded = reader.GetInt64(4),
                        OldestReadyAt = reader.IsDBNull(5) ? null : new DateTimeOffset(reader.GetInt64(5), TimeSpan.Zero),
                    });
                }
            }

            foreach (var (source, count) in deadLetters)
            {
                if (!source.StartsWith("log:", StringComparison.Ordinal) && queues.All(q => q.Queue != source))
                {
                    queues.Add(new QueueStatus(source, 0, 0, 0, count));
                }
            }

            var head = (long)session.Commands.Get(Schema.LogHead, null).ExecuteScalar()!;
            var groups = new List<ConsumerGroupStatus>();
            using (var reader = session.Commands.Get(Schema.GroupStatus, null).ExecuteReader())
            {
                while (reader.Read())
                {
                    var position = reader.GetInt64(1);
                    groups.Add(new ConsumerGroupStatus(reader.GetString(0), position, head - position, reader.GetInt32(2), reader.IsDBNull(3) ? null : reader.GetString(3), reader.GetInt64(4) != 0));
                }
            }

            var inbox = (long)session.Commands.Get(Schema.InboxCount, null).ExecuteScalar()!;
            queues.Sort((a, b) => string.CompareOrdinal(a.Queue, b.Queue));
            var held = session.Commands.Get(Schema.HeldKeys, null).ReadAll(static reader => new HeldKeyStatus(reader.GetString(0), reader.GetString(1), reader.GetInt64(2), reader.GetInt64(3)));
            return new StoreStatus(queues, deadLetters.Values.Sum(), head, groups, inbox) { HeldKeys = held };
        }));

    /// <inheritdoc />
    public ValueTask<SagaInstance?> GetSagaAsync(string transactionId, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Read(session => session.Commands.Get(Schema.LoadSaga, null).With("$transaction_id", transactionId).ReadFirst(SagaRows.ReadSaga)));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<SagaInstance>> QuerySagasAsync(SagaQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (query.Max <= 0)
        {
            return ValueTask.FromResult<IReadOnlyList<SagaInstance>>([]);
        }

        var (afterTicks, afterId) = query.After is { } after ? PageCursor.Parse(after) : (long.MaxValue, "");
        var filters = (query.State is null ? 0 : 1) | (query.Definition is null ? 0 : 2) | (query.Version is null ? 0 : 4);
        return ValueTask.FromResult<IReadOnlyList<SagaInstance>>(Read(session => session.Commands.Get(Schema.QuerySagas[filters], null)
            .With("$state", query.State is { } state ? SagaStates.ToText(state) : null)
            .With("$definition", query.Definition)
            .With("$version", query.Version)
            .With("$t", afterTicks)
            .With("$id", afterId)
            .With("$max", query.Max)
            .ReadAll(SagaRows.ReadSaga)));
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<SagaCount>> CountSagasAsync(CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<SagaCount>>(Read(session => session.Commands.Get(Schema.CountSagas, null)
            .ReadAll(reader => new SagaCount(reader.GetString(0), reader.GetInt32(1), SagaStates.Parse(reader.GetString(2)), reader.GetInt64(3)))));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<SagaLogEntry>>(Read(session =>
            session.Commands.Get(Schema.ReadSagaLog, null).With("$transaction_id", transactionId).ReadAll(SagaRows.ReadSagaLogEntry)));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<FlowItem>> ReadFlowAsync(string correlationId, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<FlowItem>>(Read(session =>
        {
            var items = new List<FlowItem>();
            void Collect(string sql, string wherePrefix, string status, bool handled)
            {
                using var reader = session.Commands.Get(sql, null).With("$correlation_id", correlationId).ExecuteReader();
                while (reader.Read())
                {
                    items.Add(new FlowItem(
                        reader.GetGuid(0),
                        reader.IsDBNull(1) ? "?" : reader.GetString(1),
                        reader.IsDBNull(2) ? null : reader.GetGuid(2),
                        reader.IsDBNull(3) ? DateTimeOffset.MinValue : SqliteMapping.FromTicks(reader.GetInt64(3)),
                        wherePrefix + reader.GetString(4),
                        status,
                        handled ? SqliteMapping.FromTicks(reader.GetInt64(5)) : null));
                }
            }

            Collect(Schema.FlowInbox, "queue:", "handled", handled: true);
            Collect(Schema.FlowQueue, "queue:", "pending", handled: false);
            Collect(Schema.FlowDeadLetters, "dead-letters:", "dead-lettered", handled: false);
            Collect(Schema.FlowLog, "log:", "appended", handled: false);
            return items;
        }));

    /// <inheritdoc />
    public SqlDialect Dialect => SqlDialect.Sqlite;

    /// <inheritdoc />
    public string TableName(string name) => Schema.TableName(name);

    /// <inheritdoc />
    public ValueTask<DbConnection> OpenReadConnectionAsync(CancellationToken cancellationToken)
    {
        // Pooled, unlike the store's own sessions: jobs open one per run, and a fresh SQLite connection parses the
        // whole schema on its first statement. Disposing it returns it to the pool.
        var connection = new SqliteConnection(_readConnectionString);
        try
        {
            connection.Open();
            _readPoolUsed = true;
            using var readOnly = connection.CreateCommand();
            readOnly.CommandText = $"PRAGMA busy_timeout = {(long)_options.BusyTimeout.TotalMilliseconds}; PRAGMA query_only = 1";
            readOnly.ExecuteNonQuery();
            return ValueTask.FromResult<DbConnection>(connection);
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public ValueTask<JobInfo?> GetJobAsync(Guid id, CancellationToken cancellationToken) =>
        ValueTask.FromResult(ReadSnapshot((session, transaction) =>
        {
            var now = Now.UtcTicks;
            var job = session.Commands.Get(Schema.JobInQueue, transaction).With("$message_id", id).ReadAll(RowReader.ReadQueueRow) is [var row, ..]
                ? JobRows.QueuedJob(row, now)
                : session.Commands.Get(Schema.JobInInbox, transaction).With("$message_id", id).ReadFirst(SucceededJob)
                    ?? (ReadDeadLetters(session.Commands.Get(Schema.JobInDeadLetters, transaction).With("$message_id", id)) is [var letter, ..] ? JobRows.DeadJob(letter) : null);
            return job is null ? null : WithProgress(session, transaction, job);
        }));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<JobInfo>> ListJobsAsync(JobQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (query.Max <= 0)
        {
            return ValueTask.FromResult<IReadOnlyList<JobInfo>>([]);
        }

        return ValueTask.FromResult<IReadOnlyList<JobInfo>>(ReadSnapshot((session, transaction) =>
        {
            var now = Now.UtcTicks;
            var state = query.State;

            // Each source lists its newest after the cursor; the merge keeps the newest of all. A waiting or running job
            // counts from when it was sent, a finished one from when it finished.
            var after = query.After is { } cursor ? JobListPosition.Parse(cursor) : new JobListPosition(long.MaxValue, JobListPosition.QueueSource + 1, 0, "", Guid.Empty);
            var found = new List<(JobInfo, JobListPosition)>();
            if (state is null or JobState.Scheduled or JobState.Enqueued or JobState.Processing)
            {
                var rows = session.Commands.Get(Schema.ListQueueJobs, transaction)
                    .With("$queue", query.Queue)
                    .With("$batch", query.BatchId)
                    .With("$state", state switch { JobState.Scheduled => "scheduled", JobState.Enqueued => "enqueued", JobState.Processing => "processing", _ => null })
                    .With("$now", now)
                    .With("$t", after.Ticks)
                    .With("$n", after.NumberBoundFor(JobListPosition.QueueSource))
                    .With("$max", query.Max)
                    .ReadAll(RowReader.ReadQueueRow);
                found.AddRange(rows.Select(row => (JobRows.QueuedJob(row, now), new JobListPosition(row.Envelope.SentAt.UtcTicks, JobListPosition.QueueSource, row.Id, "", Guid.Empty))));
            }

            if (state is null or JobState.Dead or JobState.Cancelled)
            {
                var letters = ReadDeadLetters(session.Commands.Get(Schema.ListDeadLetterJobs[query.Queue is null ? 0 : 1], transaction)
                    .With("$queue", query.Queue)
                    .With("$batch", query.BatchId)
                    .With("$cancelled", state switch { JobState.Cancelled => 1, JobState.Dead => 0, _ => null })
                    .With("$t", after.Ticks)
                    .With("$n", after.NumberBoundFor(JobListPosition.DeadLetterSource))
                    .With("$max", query.Max));
                found.AddRange(letters.Select(letter => (JobRows.DeadJob(letter), new JobListPosition(letter.DeadLetteredAt.UtcTicks, JobListPosition.DeadLetterSource, letter.Id, "", Guid.Empty))));
            }

            if (state is null or JobState.Succeeded)
            {
                var handled = session.Commands.Get(Schema.ListInboxJobs[(query.Queue is null ? 0 : 1) | (query.BatchId is null ? 0 : 2)], transaction)
                    .With("$queue", query.Queue)
                    .With("$batch", query.BatchId)
                    .With("$t", after.Ticks)
                    .With("$tie_all", after.Source == JobListPosition.InboxSource ? 0 : 1)
                    .With("$consumer", after.Consumer)
                    .With("$message_id", after.MessageId)
                    .With("$max", query.Max)
                    .ReadAll(SucceededJob);
                found.AddRange(handled.Select(job => (job, new JobListPosition(job.FinishedAt!.Value.UtcTicks, JobListPosition.InboxSource, 0, job.Queue, job.Id))));
            }

            return JobListPosition.Newest(found, query.Max, CompareStoredGuids).Select(job => WithProgress(session, transaction, job)).ToList();
        }));
    }

    /// <summary>The order of message ids in SQLite's indexes: their stored 16 bytes compared as bytes.</summary>
    static int CompareStoredGuids(Guid a, Guid b)
    {
        Span<byte> x = stackalloc byte[16];
        Span<byte> y = stackalloc byte[16];
        a.TryWriteBytes(x);
        b.TryWriteBytes(y);
        return x.SequenceCompareTo(y);
    }

    /// <inheritdoc />
    public ValueTask<Page<DeadLetter>> ListDeadLettersAsync(DeadLetterQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (query.Max <= 0)
        {
            return ValueTask.FromResult(new Page<DeadLetter>([], null));
        }

        var (afterTicks, afterId) = query.After is { } after ? PageCursor.ParseNumbered(after) : (long.MaxValue, long.MaxValue);
        var filters = (query.Source is null ? 0 : 1) | (query.Reason is null ? 0 : 2) | (query.OrderingKey is null ? 0 : 4);
        var letters = Read(session => ReadDeadLetters(session.Commands.Get(Schema.PageDeadLetters[filters], null)
            .With("$source", query.Source)
            .With("$reason", query.Reason)
            .With("$ordering_key", query.OrderingKey)
            .With("$t", afterTicks)
            .With("$id", afterId)
            .With("$max", query.Max + 1)));
        return ValueTask.FromResult(Page.OfFirst(letters, query.Max, DeadLetterQuery.CursorOf));
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<DeadLetterGroup>> GroupDeadLettersAsync(CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<DeadLetterGroup>>(Read(session => session.Commands.Get(Schema.GroupDeadLetters, null)
            .ReadAll(static reader => new DeadLetterGroup(reader.GetString(0), reader.GetString(1), reader.GetInt64(2), SqliteMapping.FromTicks(reader.GetInt64(3))))));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<QueueActivity>> CountActivitySinceAsync(DateTimeOffset since, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<QueueActivity>>(Read(session => session.Commands.Get(Schema.CountActivity, null).With("$since", since.UtcTicks)
            .ReadAll(static reader => new QueueActivity(reader.GetString(0), reader.GetInt64(1), reader.GetInt64(2)))));

    /// <inheritdoc />
    public ValueTask<DeadLetter?> GetDeadLetterAsync(long id, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Read(session => ReadDeadLetters(session.Commands.Get(Schema.GetDeadLetter, null).With("$id", id)) is [var letter, ..] ? letter : null));

    /// <inheritdoc />
    public async ValueTask<long> RecordAsync(OperatorAction action, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(action);
        return await WriteAsync((session, transaction) => RecordOperatorAction(session.Commands, transaction, action), cancellationToken);
    }

    internal long RecordOperatorAction(CommandCache commands, SqliteTransaction transaction, OperatorAction action) =>
        (long)commands.Get(Schema.RecordOperatorAction, transaction)
            .With("$at", action.At.UtcTicks)
            .With("$actor", action.Actor)
            .With("$action", action.Action)
            .With("$target", action.Target)
            .With("$detail", action.Detail)
            .ExecuteScalar()!;

    /// <inheritdoc />
    public ValueTask<Page<OperatorAction>> ListAsync(string? after, int max, CancellationToken cancellationToken)
    {
        if (max <= 0)
        {
            return ValueTask.FromResult(new Page<OperatorAction>([], null));
        }

        var before = after is null ? long.MaxValue : PageCursor.ParseNumbered(after).Number;
        var actions = Read(session => session.Commands.Get(Schema.ListOperatorActions, null).With("$before", before).With("$max", max + 1).ReadAll(static reader => new OperatorAction
        {
            Id = reader.GetInt64(0),
            At = SqliteMapping.FromTicks(reader.GetInt64(1)),
            Actor = reader.GetString(2),
            Action = reader.GetString(3),
            Target = reader.GetString(4),
            Detail = reader.IsDBNull(5) ? null : reader.GetString(5),
        }));
        return ValueTask.FromResult(Page.OfFirst(actions, max, static action => PageCursor.CreateNumbered(action.At.UtcTicks, action.Id)));
    }

    /// <summary>Reads an inbox row: consumer, handled_at, message_type, correlation_id, sent_at, message_id, batch_id.</summary>
    static JobInfo SucceededJob(SqliteDataReader reader) => JobRows.SucceededJob(
        reader.GetGuid(5),
        reader.GetString(0),
        SqliteMapping.FromTicks(reader.GetInt64(1)),
        reader.IsDBNull(2) ? null : reader.GetString(2),
        reader.IsDBNull(3) ? null : reader.GetString(3),
        reader.IsDBNull(4) ? null : SqliteMapping.FromTicks(reader.GetInt64(4)),
        reader.IsDBNull(6) ? null : reader.GetString(6));

    JobInfo WithProgress(SqliteSession session, SqliteTransaction transaction, JobInfo job)
    {
        using var reader = session.Commands.Get(Schema.GetProgress, transaction).With("$job_id", job.Id).ExecuteReader();
        return reader.Read() ? job with { Progress = reader.GetInt32(0), ProgressNote = reader.IsDBNull(1) ? null : reader.GetString(1) } : job;
    }

    /// <inheritdoc />
    public async ValueTask<JobCancelOutcome> CancelJobAsync(Guid id, CancellationToken cancellationToken)
    {
        await using var transaction = (SqliteStoreTransaction)await BeginAsync(cancellationToken);
        var outcome = await transaction.CancelJobAsync(id, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return outcome;
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<Guid>> ReadCancellationsAsync(IReadOnlyList<Guid> ids, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(ids);
        if (ids.Count == 0)
        {
            return ValueTask.FromResult<IReadOnlyList<Guid>>([]);
        }

        return ValueTask.FromResult<IReadOnlyList<Guid>>(Read(session =>
            ids.Where(id => session.Commands.Get(Schema.HasCancellation, null).With("$job_id", id).ExecuteScalar() is not null).ToList()));
    }

    /// <inheritdoc />
    public async ValueTask SaveJobProgressAsync(Guid id, int percent, string? note, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(percent);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(percent, 100);
        var at = Now.UtcTicks;
        await WriteAsync(
            (session, transaction) => session.Commands.Get(Schema.SaveProgress, transaction).With("$job_id", id).With("$percent", percent).With("$note", note).With("$at", at).ExecuteNonQuery(),
            cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<JobBatchRecord?> GetBatchAsync(string id, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Read(session => session.Commands.Get(Schema.GetBatch, null).With("$id", id).ReadFirst(JobRows.ReadBatch)));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<RecurringJobRecord>> ListRecurringJobsAsync(CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<RecurringJobRecord>>(Read(session => session.Commands.Get(Schema.ListRecurring, null).ReadAll(JobRows.ReadRecurring)));

    T Read<T>(Func<SqliteSession, T> read)
    {
        var session = Rent();
        try
        {
            return read(session);
        }
        catch
        {
            session.Broken = true;
            throw;
        }
        finally
        {
            Return(session);
        }
    }

    /// <summary>Several reads that see one snapshot of the file (a job moving between tables is seen in one place).</summary>
    T ReadSnapshot<T>(Func<SqliteSession, SqliteTransaction, T> read) => Read(session =>
    {
        using var transaction = session.Connection.BeginTransaction(deferred: true);
        var result = read(session, transaction);
        transaction.Commit();
        return result;
    });

    async ValueTask<T> WriteAsync<T>(Func<SqliteSession, SqliteTransaction, T> write, CancellationToken cancellationToken)
    {
        await _writeGate.WaitAsync(cancellationToken);
        var session = Rent();
        try
        {
            using var transaction = session.Connection.BeginTransaction(deferred: false);
            var result = write(session, transaction);
            transaction.Commit();
            return result;
        }
        catch
        {
            session.Broken = true;
            throw;
        }
        finally
        {
            EndWrite(session);
        }
    }

    SqliteSession Rent() => _sessions.TryTake(out var session) ? session : new SqliteSession(OpenConnection());

    void Return(SqliteSession session)
    {
        if (session.Broken || _sessions.Count >= MaxPooledSessions)
        {
            session.Dispose();
            return;
        }

        _sessions.Add(session);
    }

    static void Execute(SqliteConnection connection, SqliteTransaction transaction, string sql)
    {
        using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    static object? Scalar(SqliteConnection connection, SqliteTransaction transaction, string sql)
    {
        using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        return command.ExecuteScalar();
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        while (_sessions.TryTake(out var session))
        {
            session.Dispose();
        }

        if (_readPoolUsed)
        {
            using var pooled = new SqliteConnection(_readConnectionString);
            SqliteConnection.ClearPool(pooled);
        }

        _writeGate.Dispose();
        return ValueTask.CompletedTask;
    }
}
