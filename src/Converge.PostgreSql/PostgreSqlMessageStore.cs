using System.Data;
using System.Data.Common;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Npgsql;
using NpgsqlTypes;

namespace Converge.PostgreSql;

/// <summary>
/// The scale-out store: every table in one PostgreSQL schema, shared by any number of processes. Claims lock rows
/// with <c>FOR UPDATE SKIP LOCKED</c>, so competing workers never wait on each other's messages; commits that
/// write to a queue or the log notify the schema's channel, which wakes workers in every process at once.
/// </summary>
public sealed class PostgreSqlMessageStore : IMessageStore, IDatabaseStore, IStoreQueries, ISagaQueries, IJobStore, IJobQueries, IDeadLetterQueries, IOperatorLog, IActivityQueries
{
    const int PurgeChunk = 5000;

    readonly PostgreSqlStoreOptions _options;
    readonly TimeProvider _time;
    readonly NpgsqlDataSource _dataSource;
    readonly NpgsqlDataSource _readSource;
    readonly PostgreSqlNotifications _notifications;

    /// <summary>Creates the store; nothing is opened until first use. Call <see cref="MigrateAsync"/> before anything else.</summary>
    public PostgreSqlMessageStore(PostgreSqlStoreOptions options, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _time = timeProvider ?? throw new ArgumentNullException(nameof(timeProvider));
        var builder = new NpgsqlConnectionStringBuilder(options.ConnectionString);
        // The builder's own ContainsKey says whether a keyword is known, not whether it was given: its Keys are the given ones.
        if (!((System.Data.Common.DbConnectionStringBuilder)builder).Keys.Cast<string>().Contains("Max Auto Prepare", StringComparer.OrdinalIgnoreCase))
        {
            // Converge runs the same few statements all day: prepared once per connection, each costs one round trip less parsing.
            builder.MaxAutoPrepare = 64;
        }

        _dataSource = NpgsqlDataSource.Create(builder.ConnectionString);
        var readOnly = new NpgsqlConnectionStringBuilder(builder.ConnectionString) { Options = ((builder.Options ?? "") + " -c default_transaction_read_only=on").Trim() };
        _readSource = NpgsqlDataSource.Create(readOnly.ConnectionString);
        Schema = new PostgreSqlSchema(options.Schema);
        _notifications = new PostgreSqlNotifications(_dataSource, Schema.Channel, Signals, _time, options.ListenerReconnectDelay);
        LogLockKey = StableKey("log:" + options.Schema);
    }

    /// <inheritdoc />
    public string Name => "postgresql";

    /// <inheritdoc />
    public CommitSignals Signals { get; } = new();

    /// <inheritdoc />
    /// <remarks>PostgreSQL overlaps commits from several connections; see <see cref="PostgreSqlStoreOptions.ParallelWriters"/>.</remarks>
    public int ParallelWriters => _options.ParallelWriters;

    /// <summary>The schema that holds Converge's tables.</summary>
    public string SchemaName => _options.Schema;

    internal PostgreSqlSchema Schema { get; }

    internal PostgreSqlNotifications Notifications => _notifications;

    /// <summary>The advisory lock that appending transactions hold until they commit, so log positions become visible in order.</summary>
    internal long LogLockKey { get; }

    internal DateTimeOffset Now => _time.GetUtcNow();

    /// <summary>Opens a pooled connection to the store's database; the caller disposes it.</summary>
    public ValueTask<NpgsqlConnection> OpenConnectionAsync(CancellationToken cancellationToken = default) => _dataSource.OpenConnectionAsync(cancellationToken);

    /// <summary>A stable 64-bit key for an advisory lock (FNV-1a), the same in every process.</summary>
    internal static long StableKey(string name)
    {
        var hash = 14695981039346656037UL;
        foreach (var c in "converge:" + name)
        {
            hash = (hash ^ c) * 1099511628211UL;
        }

        return unchecked((long)hash);
    }

    internal static NpgsqlCommand Command(NpgsqlConnection connection, NpgsqlTransaction? transaction, string sql) => new(sql, connection, transaction);

    /// <inheritdoc />
    public async ValueTask MigrateAsync(CancellationToken cancellationToken)
    {
        await using (var connection = await _dataSource.OpenConnectionAsync(cancellationToken))
        await using (var transaction = await connection.BeginTransactionAsync(cancellationToken))
        {
            // Two processes starting at once migrate one after the other.
            await Command(connection, transaction, "SELECT pg_advisory_xact_lock(@key)").With("key", StableKey("migrate:" + _options.Schema)).ExecuteNonQueryAsync(cancellationToken);
            await Command(connection, transaction, Schema.CreateSchema).ExecuteNonQueryAsync(cancellationToken);
            await Command(connection, transaction, Schema.CreateMigrations).ExecuteNonQueryAsync(cancellationToken);
            var current = Convert.ToInt32(await Command(connection, transaction, Schema.CurrentVersion).ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture);
            for (var version = current + 1; version <= Schema.Versions.Count; version++)
            {
                await Command(connection, transaction, Schema.Versions[version - 1]).ExecuteNonQueryAsync(cancellationToken);
                await Command(connection, transaction, Schema.RecordVersion).With("version", version).With("at", Now.UtcTicks).ExecuteNonQueryAsync(cancellationToken);
            }

            await transaction.CommitAsync(cancellationToken);
        }

        await _notifications.StartAsync(cancellationToken);
    }

    /// <summary>The schema version this build writes and reads: what <see cref="MigrateAsync"/> brings a schema to.</summary>
    internal int LatestSchemaVersion => Schema.Versions.Count;

    /// <summary>The schema version in the database, or 0 when Converge has never migrated this schema.</summary>
    public async ValueTask<int> GetSchemaVersionAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        var exists = await Command(connection, null, "SELECT to_regclass(@table) IS NOT NULL").With("table", Schema.Migrations).ExecuteScalarAsync(cancellationToken);
        if (exists is not true)
        {
            return 0;
        }

        return Convert.ToInt32(await Command(connection, null, Schema.CurrentVersion).ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <inheritdoc />
    public async ValueTask<IStoreTransaction> BeginAsync(CancellationToken cancellationToken)
    {
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        try
        {
            var transaction = await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, cancellationToken);
            return PostgreSqlStoreTransaction.Owned(this, connection, transaction);
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }

    /// <inheritdoc />
    public IStoreTransaction Enlist(DbTransaction transaction)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        if (transaction is not NpgsqlTransaction npgsql || npgsql.Connection is not { } connection)
        {
            throw new ArgumentException($"The outbox needs an open transaction on the store's PostgreSQL database; got {transaction.GetType().Name}.", nameof(transaction));
        }

        if (PostgreSqlStoreTransaction.TryGetOwned(npgsql) is { } owned)
        {
            return owned;
        }

        var ours = new NpgsqlConnectionStringBuilder(_dataSource.ConnectionString);
        var theirs = new NpgsqlConnectionStringBuilder(connection.ConnectionString);
        if (!string.Equals(ours.Host, theirs.Host, StringComparison.OrdinalIgnoreCase) || ours.Port != theirs.Port
            || !string.Equals(ours.Database ?? ours.Username, theirs.Database ?? theirs.Username, StringComparison.Ordinal))
        {
            throw new ArgumentException($"The transaction is on {theirs.Host}:{theirs.Port}/{theirs.Database}, but the store is {ours.Host}:{ours.Port}/{ours.Database}. Open the connection on the store's database so the message commits with your writes.", nameof(transaction));
        }

        return PostgreSqlStoreTransaction.Enlisted(this, connection, npgsql);
    }

    /// <inheritdoc />
    public async ValueTask<IReadOnlyList<QueuedMessage>> ClaimAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        return await ClaimRowsAsync(connection, null, Schema.Claim, queue, max, lease, Now, cancellationToken);
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
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        if (policy is { MaxInFlight: null, RateLimit: null })
        {
            return await ClaimRowsAsync(connection, null, Schema.ClaimOldest, queue, max, lease, Now, cancellationToken);
        }

        // Reads first: an idle poll, or one at the concurrency limit, takes no lock.
        var now = Now;
        if (await Command(connection, null, Schema.AnyVisible).With("queue", queue).With("now", now.UtcTicks).ExecuteScalarAsync(cancellationToken) is null
            || (policy.MaxInFlight is { } most && await CountLiveLeasesAsync(connection, null, queue, now, cancellationToken) >= most))
        {
            return [];
        }

        await using var transaction = await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, cancellationToken);
        var claimed = await ClaimWithinAsync(connection, transaction, queue, max, lease, policy, Now, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return claimed;
    }

    /// <summary>
    /// Claims inside <paramref name="transaction"/>, within <paramref name="policy"/>'s limits. A limited queue's claims
    /// take turns on an advisory lock held to commit, so the count of live leases and the token bucket each process
    /// reads are the ones it writes back.
    /// </summary>
    internal async Task<IReadOnlyList<QueuedMessage>> ClaimWithinAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string queue, int max, TimeSpan lease, ClaimPolicy policy, DateTimeOffset now, CancellationToken cancellationToken)
    {
        ClaimLimits.Validate(policy);
        var claim = policy.OldestFirst ? Schema.ClaimOldest : Schema.Claim;
        if (policy is { MaxInFlight: null, RateLimit: null })
        {
            return await ClaimRowsAsync(connection, transaction, claim, queue, max, lease, now, cancellationToken);
        }

        await Command(connection, transaction, "SELECT pg_advisory_xact_lock(@key)").With("key", StableKey("claim:" + _options.Schema + ":" + queue)).ExecuteNonQueryAsync(cancellationToken);
        var allowed = max;
        if (policy.MaxInFlight is { } maxInFlight)
        {
            allowed = (int)Math.Min(allowed, maxInFlight - await CountLiveLeasesAsync(connection, transaction, queue, now, cancellationToken));
        }

        var (tokens, refilledAt) = (0d, now.UtcTicks);
        if (policy.RateLimit is { } rate)
        {
            (tokens, refilledAt) = await RefillBucketAsync(connection, transaction, queue, rate, now, cancellationToken);
            allowed = Math.Min(allowed, ClaimLimits.Permits(tokens));
        }

        IReadOnlyList<QueuedMessage> claimed = allowed > 0 ? await ClaimRowsAsync(connection, transaction, claim, queue, allowed, lease, now, cancellationToken) : [];
        if (policy.RateLimit is not null)
        {
            await Command(connection, transaction, Schema.SaveRateLimit)
                .With("queue", queue)
                .With("tokens", Math.Max(0, tokens - claimed.Count))
                .With("refilled_at", refilledAt)
                .ExecuteNonQueryAsync(cancellationToken);
        }

        return claimed;
    }

    async Task<long> CountLiveLeasesAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction, string queue, DateTimeOffset now, CancellationToken cancellationToken) =>
        (long)(await Command(connection, transaction, Schema.CountLiveLeases).With("queue", queue).With("now", now.UtcTicks).ExecuteScalarAsync(cancellationToken))!;

    /// <summary>The queue's token bucket refilled to <paramref name="now"/>, and the refill time to store.</summary>
    async Task<(double Tokens, long RefilledAt)> RefillBucketAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string queue, RateLimit rate, DateTimeOffset now, CancellationToken cancellationToken)
    {
        await using var reader = await Command(connection, transaction, Schema.GetRateLimit).With("queue", queue).ExecuteReaderAsync(cancellationToken);
        return ClaimLimits.Refill(await reader.ReadAsync(cancellationToken) ? (reader.GetDouble(0), reader.GetInt64(1)) : null, rate, now);
    }

    /// <summary>Leases up to <paramref name="max"/> visible messages with <paramref name="claim"/>, skipping rows other claims hold.</summary>
    /// <remarks>
    /// The claim must walk its index in order and stop after <paramref name="max"/> rows. Right after a burst of enqueues
    /// the table's statistics still describe it as nearly empty, and the planner then reads every waiting row and sorts
    /// them, each claim again, until autovacuum analyzes the table. Sorting and bitmap scans are switched off for the claim
    /// alone so its plan does not depend on how fresh the statistics are.
    /// </remarks>
    async Task<IReadOnlyList<QueuedMessage>> ClaimRowsAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction, string claim, string queue, int max, TimeSpan lease, DateTimeOffset now, CancellationToken cancellationToken)
    {
        var token = Guid.NewGuid();
        var rows = new List<ClaimedRow>(Math.Min(max, 1024));
        await using var own = transaction is null ? await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, cancellationToken) : null;
        await using (var batch = new NpgsqlBatch(connection, transaction ?? own))
        {
            foreach (var setting in PostgreSqlSchema.PinClaimPlan)
            {
                batch.BatchCommands.Add(new NpgsqlBatchCommand(setting));
            }

            var claimCommand = new NpgsqlBatchCommand(claim);
            claimCommand.Parameters.AddWithValue("until", (now + lease).UtcTicks);
            claimCommand.Parameters.AddWithValue("token", token);
            claimCommand.Parameters.AddWithValue("queue", queue);
            claimCommand.Parameters.AddWithValue("now", now.UtcTicks);
            claimCommand.Parameters.AddWithValue("max", max);
            batch.BatchCommands.Add(claimCommand);

            // In the caller's transaction the statements after the claim plan as usual.
            foreach (var setting in own is null ? PostgreSqlSchema.UnpinClaimPlan : [])
            {
                batch.BatchCommands.Add(new NpgsqlBatchCommand(setting));
            }

            await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
            do
            {
                while (reader.FieldCount > 0 && await reader.ReadAsync(cancellationToken))
                {
                    rows.Add(RowReader.ReadClaimed(reader, queue, token));
                }
            }
            while (await reader.NextResultAsync(cancellationToken));
        }

        // A row that cannot be decoded is dead-lettered in the claim's transaction; the rest go on.
        var claimed = rows.TrueForAll(static row => row.Problem is null)
            ? rows.ConvertAll(static row => row.Message)
            : await InvalidRows.SetAsideAsync(
                PostgreSqlStoreTransaction.TryGetOwned(transaction ?? own!) ?? PostgreSqlStoreTransaction.Enlisted(this, connection, transaction ?? own!),
                rows,
                now,
                JobRows.InvalidRowDeadLetteredAsync,
                cancellationToken);

        if (own is not null)
        {
            await own.CommitAsync(cancellationToken);
        }

        claimed.Sort(static (a, b) => a.Priority != b.Priority ? b.Priority.CompareTo(a.Priority) : a.Id.CompareTo(b.Id));
        return claimed;
    }

    /// <inheritdoc />
    public ValueTask<DateTimeOffset?> NextVisibleAtAsync(string queue, CancellationToken cancellationToken) =>
        ReadAsync(async connection =>
            await Command(connection, null, Schema.NextVisible).With("queue", queue).ExecuteScalarAsync(cancellationToken) is long ticks
                ? StoredRows.FromTicksClamped(ticks)
                : (DateTimeOffset?)null,
            cancellationToken);

    /// <inheritdoc />
    public async ValueTask<int> RenewLeasesAsync(IReadOnlyList<QueuedMessage> messages, TimeSpan lease, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (messages.Count == 0)
        {
            return 0;
        }

        var until = (Now + lease).UtcTicks;
        return await ReadAsync(
            async connection => await Command(connection, null, Schema.Renew)
                .With("until", until)
                .With("ids", messages.Select(m => m.Id).ToArray())
                .With("tokens", messages.Select(m => m.LeaseToken).ToArray())
                .ExecuteNonQueryAsync(cancellationToken),
            cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> messages, bool countAttempt, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (messages.Count == 0)
        {
            return;
        }

        var queues = messages.Select(m => m.Queue).Distinct().ToArray();
        await WriteAsync(
            async (connection, transaction) =>
            {
                await Command(connection, transaction, Schema.Release)
                    .With("now", Now.UtcTicks)
                    .With("uncount", countAttempt ? 0 : 1)
                    .With("ids", messages.Select(m => m.Id).ToArray())
                    .With("tokens", messages.Select(m => m.LeaseToken).ToArray())
                    .ExecuteNonQueryAsync(cancellationToken);
                await NotifyAsync(connection, transaction, queues.Select(q => PostgreSqlNotifications.QueuePrefix + q), cancellationToken);
                return 0;
            },
            cancellationToken);
        Array.ForEach(queues, Signals.RingQueue);
    }

    /// <summary>Notifies the schema's channel (<c>@channel</c>) once per payload of <c>@payloads</c>.</summary>
    internal const string NotifySql = "SELECT pg_notify(@channel, payload) FROM unnest(@payloads) AS payload";

    /// <summary>Announces <paramref name="payloads"/> on the schema's channel when <paramref name="transaction"/> commits.</summary>
    internal async Task NotifyAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction, IEnumerable<string> payloads, CancellationToken cancellationToken)
    {
        var all = payloads.ToArray();
        if (all.Length == 0)
        {
            return;
        }

        await using var command = Command(connection, transaction, NotifySql)
            .With("channel", Schema.Channel)
            .With("payloads", all);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<LogEvent>> ReadLogAsync(long afterPosition, int max, CancellationToken cancellationToken) =>
        ReadAsync<IReadOnlyList<LogEvent>>(
            async connection => await Command(connection, null, Schema.ReadLog).With("after", afterPosition).With("max", max).ReadAllAsync(RowReader.ReadEvent, cancellationToken),
            cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<LogEvent>> ReadStreamAsync(string stream, long fromVersion, int max, CancellationToken cancellationToken) =>
        ReadAsync<IReadOnlyList<LogEvent>>(
            async connection => await Command(connection, null, Schema.ReadStream).With("stream", stream).With("from", fromVersion).With("max", max).ReadAllAsync(RowReader.ReadEvent, cancellationToken),
            cancellationToken);

    /// <inheritdoc />
    public ValueTask<ConsumerGroupState?> GetConsumerGroupAsync(string group, CancellationToken cancellationToken) =>
        ReadAsync(
            async connection => await Command(connection, null, Schema.GetGroup).With("name", group).ReadFirstAsync(
                reader => new ConsumerGroupState(reader.GetString(0), reader.GetInt64(1), reader.GetInt32(2), reader.IsDBNull(3) ? null : reader.GetString(3), PostgreSqlMapping.FromTicks(reader.GetInt64(4)), reader.GetBoolean(5)),
                cancellationToken),
            cancellationToken);

    /// <inheritdoc />
    public ValueTask<long> GetLogHeadAsync(CancellationToken cancellationToken) =>
        ReadAsync(
            async connection => (long)(await Command(connection, null, Schema.LogHead).ExecuteScalarAsync(cancellationToken))!,
            cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<DeadLetter>> ListDeadLettersAsync(string? source, int max, CancellationToken cancellationToken) =>
        ReadAsync<IReadOnlyList<DeadLetter>>(
            async connection => await Command(connection, null, Schema.ListDeadLetters).With("source", NpgsqlDbType.Text, source).With("max", max).ReadAllAsync(RowReader.ReadDeadLetter, cancellationToken),
            cancellationToken);

    /// <inheritdoc />
    public async ValueTask<bool> RetryDeadLetterAsync(long id, CancellationToken cancellationToken)
    {
        var queue = await WriteAsync(
            async (connection, transaction) =>
            {
                var letter = await Command(connection, transaction, Schema.GetDeadLetter).With("id", id).ReadFirstAsync(RowReader.ReadDeadLetter, cancellationToken);
                if (letter is null || letter.LogPosition is not null)
                {
                    return null;
                }

                // A keyed dead letter goes back to the place it had in its key, ahead of the messages it held.
                var enqueue = letter.OrderingKey is null
                    ? Command(connection, transaction, Schema.Enqueue)
                    : Command(connection, transaction, Schema.EnqueueKeyed).With("ordering_key", letter.OrderingKey).With("dead_letter", id);
                await enqueue
                    .With("queue", letter.Source)
                    .With("priority", letter.Priority)
                    .With("visible_at", Now.UtcTicks)
                    .WithEnvelope(letter.Envelope)
                    .ExecuteNonQueryAsync(cancellationToken);
                await Command(connection, transaction, Schema.DeleteDeadLetter).With("id", id).ExecuteNonQueryAsync(cancellationToken);
                if (letter.Envelope.Headers.TryGetValue(JobHeaders.Batch, out var batchId))
                {
                    // Counted as failed in its batch; pending again until it finishes anew. A finished batch stays as it ended.
                    await Command(connection, transaction, Schema.RecordBatchOutcomes).With("id", batchId).With("succeeded", 0L).With("failed", -1L).ExecuteNonQueryAsync(cancellationToken);
                }

                await NotifyAsync(connection, transaction, [PostgreSqlNotifications.QueuePrefix + letter.Source], cancellationToken);
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
        await WriteAsync(async (connection, transaction) => await Command(connection, transaction, Schema.DeleteDeadLetter).With("id", id).ExecuteNonQueryAsync(cancellationToken) == 1, cancellationToken);

    /// <inheritdoc />
    public async ValueTask<int> PurgeInboxAsync(DateTimeOffset handledBefore, CancellationToken cancellationToken)
    {
        // In chunks, so that a large clean-up never holds many row locks for long.
        var total = 0;
        int deleted;
        do
        {
            deleted = await WriteAsync(async (connection, transaction) => await Command(connection, transaction, Schema.PurgeInbox).With("cutoff", handledBefore.UtcTicks).With("chunk", PurgeChunk).ExecuteNonQueryAsync(cancellationToken), cancellationToken);
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
            deleted = await WriteAsync(async (connection, transaction) => await Command(connection, transaction, Schema.PurgeUniqueKeys).With("now", now).With("chunk", PurgeChunk).ExecuteNonQueryAsync(cancellationToken), cancellationToken);
            total += deleted;
        }
        while (deleted == PurgeChunk);

        return total;
    }

    /// <inheritdoc />
    public ValueTask<StoreStatus> GetStatusAsync(CancellationToken cancellationToken) =>
        ReadSnapshotAsync(
            async (connection, transaction) =>
            {
                var now = Now.UtcTicks;
                var deadLetters = new Dictionary<string, long>(StringComparer.Ordinal);
                foreach (var (source, count) in await Command(connection, transaction, Schema.DeadLetterCounts).ReadAllAsync(r => (r.GetString(0), r.GetInt64(1)), cancellationToken))
                {
                    deadLetters[source] = count;
                }

                var queues = await Command(connection, transaction, Schema.QueueStatus).With("now", now).With("stranded_after", (Now + InvalidRows.StrandedAfter).UtcTicks).ReadAllAsync(
                    r => new QueueStatus(r.GetString(0), r.GetInt64(1), r.GetInt64(2), r.GetInt64(3), 0)
                    {
                        Stranded = r.GetInt64(4),
                        OldestReadyAt = r.IsDBNull(5) ? null : new DateTimeOffset(r.GetInt64(5), TimeSpan.Zero),
                    },
                    cancellationToken);
                queues = [.. queues.Select(q => q with { DeadLetters = deadLetters.GetValueOrDefault(q.Queue) })];
                foreach (var (source, count) in deadLetters)
                {
                    if (!source.StartsWith("log:", StringComparison.Ordinal) && queues.All(q => q.Queue != source))
                    {
                        queues.Add(new QueueStatus(source, 0, 0, 0, count));
                    }
                }

                var head = (long)(await Command(connection, transaction, Schema.LogHead).ExecuteScalarAsync(cancellationToken))!;
                var groups = await Command(connection, transaction, Schema.GroupStatus).ReadAllAsync(
                    r => new ConsumerGroupStatus(r.GetString(0), r.GetInt64(1), head - r.GetInt64(1), r.GetInt32(2), r.IsDBNull(3) ? null : r.GetString(3), r.GetBoolean(4)),
                    cancellationToken);
                var inbox = (long)(await Command(connection, transaction, Schema.InboxCount).ExecuteScalarAsync(cancellationToken))!;
                queues.Sort((a, b) => string.CompareOrdinal(a.Queue, b.Queue));
                var held = await Command(connection, transaction, Schema.HeldKeys).ReadAllAsync(
                    r => new HeldKeyStatus(r.GetString(0), r.GetString(1), r.GetInt64(2), r.GetInt64(3)),
                    cancellationToken);
                return new StoreStatus(queues, deadLetters.Values.Sum(), head, groups, inbox) { HeldKeys = held };
            },
            cancellationToken);

    /// <inheritdoc />
    public ValueTask<SagaInstance?> GetSagaAsync(string transactionId, CancellationToken cancellationToken) =>
        ReadAsync(async connection => await Command(connection, null, Schema.LoadSaga).With("transaction_id", transactionId).ReadFirstAsync(SagaRows.ReadSaga, cancellationToken), cancellationToken);

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
        return ReadAsync<IReadOnlyList<SagaInstance>>(
            async connection => await Command(connection, null, Schema.QuerySagas[filters])
                .With("state", NpgsqlDbType.Text, query.State is { } state ? SagaStates.ToText(state) : null)
                .With("definition", NpgsqlDbType.Text, query.Definition)
                .With("version", NpgsqlDbType.Integer, query.Version)
                .With("t", afterTicks)
                .With("id", NpgsqlDbType.Text, afterId)
                .With("max", query.Max)
                .ReadAllAsync(SagaRows.ReadSaga, cancellationToken),
            cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<SagaCount>> CountSagasAsync(CancellationToken cancellationToken) =>
        ReadAsync<IReadOnlyList<SagaCount>>(
            async connection => await Command(connection, null, Schema.CountSagas)
                .ReadAllAsync(reader => new SagaCount(reader.GetString(0), reader.GetInt32(1), SagaStates.Parse(reader.GetString(2)), reader.GetInt64(3)), cancellationToken),
            cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<SagaLogEntry>> ReadSagaLogAsync(string transactionId, CancellationToken cancellationToken) =>
        ReadAsync<IReadOnlyList<SagaLogEntry>>(
            async connection => await Command(connection, null, Schema.ReadSagaLog).With("transaction_id", transactionId).ReadAllAsync(SagaRows.ReadSagaLogEntry, cancellationToken),
            cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<FlowItem>> ReadFlowAsync(string correlationId, CancellationToken cancellationToken) =>
        ReadSnapshotAsync<IReadOnlyList<FlowItem>>(
            async (connection, transaction) =>
            {
                var items = new List<FlowItem>();
                async Task CollectAsync(string sql, string wherePrefix, string status, bool handled) =>
                    items.AddRange(await Command(connection, transaction, sql).With("correlation_id", correlationId).ReadAllAsync(
                        reader => new FlowItem(
                            reader.GetGuid(0),
                            reader.IsDBNull(1) ? "?" : reader.GetString(1),
                            reader.IsDBNull(2) ? null : reader.GetGuid(2),
                            reader.IsDBNull(3) ? DateTimeOffset.MinValue : PostgreSqlMapping.FromTicks(reader.GetInt64(3)),
                            wherePrefix + reader.GetString(4),
                            status,
                            handled ? PostgreSqlMapping.FromTicks(reader.GetInt64(5)) : null),
                        cancellationToken));

                await CollectAsync(Schema.FlowInbox, "queue:", "handled", handled: true);
                await CollectAsync(Schema.FlowQueue, "queue:", "pending", handled: false);
                await CollectAsync(Schema.FlowDeadLetters, "dead-letters:", "dead-lettered", handled: false);
                await CollectAsync(Schema.FlowLog, "log:", "appended", handled: false);
                return items;
            },
            cancellationToken);

    /// <inheritdoc />
    public SqlDialect Dialect => SqlDialect.PostgreSql;

    /// <inheritdoc />
    public string TableName(string name) => Schema.TableName(name);

    /// <inheritdoc />
    public async ValueTask<DbConnection> OpenReadConnectionAsync(CancellationToken cancellationToken) =>
        await _readSource.OpenConnectionAsync(cancellationToken);

    /// <inheritdoc />
    public ValueTask<JobInfo?> GetJobAsync(Guid id, CancellationToken cancellationToken) =>
        ReadSnapshotAsync(
            async (connection, transaction) =>
            {
                var now = Now.UtcTicks;
                var job = await Command(connection, transaction, Schema.JobInQueue).With("message_id", id).ReadAllAsync(RowReader.ReadQueueRow, cancellationToken) is [var row, ..]
                    ? JobRows.QueuedJob(row, now)
                    : await Command(connection, transaction, Schema.JobInInbox).With("message_id", id).ReadFirstAsync(SucceededJob, cancellationToken)
                        ?? (await Command(connection, transaction, Schema.JobInDeadLetters).With("message_id", id).ReadFirstAsync(RowReader.ReadDeadLetter, cancellationToken) is { } letter ? JobRows.DeadJob(letter) : null);
                return job is null ? null : await WithProgressAsync(connection, transaction, job, cancellationToken);
            },
            cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<JobInfo>> ListJobsAsync(JobQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (query.Max <= 0)
        {
            return ValueTask.FromResult<IReadOnlyList<JobInfo>>([]);
        }

        return ReadSnapshotAsync<IReadOnlyList<JobInfo>>(
            async (connection, transaction) =>
            {
                var now = Now.UtcTicks;
                var state = query.State;

                // Each source lists its newest after the cursor; the merge keeps the newest of all. A waiting or running
                // job counts from when it was sent, a finished one from when it finished.
                var after = query.After is { } cursor ? JobListPosition.Parse(cursor) : new JobListPosition(long.MaxValue, JobListPosition.QueueSource + 1, 0, "", Guid.Empty);
                var found = new List<(JobInfo, JobListPosition)>();
                if (state is null or JobState.Scheduled or JobState.Enqueued or JobState.Processing)
                {
                    var rows = await Command(connection, transaction, Schema.ListQueueJobs)
                        .With("queue", NpgsqlDbType.Text, query.Queue)
                        .With("batch", NpgsqlDbType.Text, query.BatchId)
                        .With("state", NpgsqlDbType.Text, state switch { JobState.Scheduled => "scheduled", JobState.Enqueued => "enqueued", JobState.Processing => "processing", _ => null })
                        .With("now", now)
                        .With("t", after.Ticks)
                        .With("n", after.NumberBoundFor(JobListPosition.QueueSource))
                        .With("max", query.Max)
                        .ReadAllAsync(RowReader.ReadQueueRow, cancellationToken);
                    found.AddRange(rows.Select(row => (JobRows.QueuedJob(row, now), new JobListPosition(row.Envelope.SentAt.UtcTicks, JobListPosition.QueueSource, row.Id, "", Guid.Empty))));
                }

                if (state is null or JobState.Dead or JobState.Cancelled)
                {
                    var letters = await Command(connection, transaction, Schema.ListDeadLetterJobs)
                        .With("queue", NpgsqlDbType.Text, query.Queue)
                        .With("batch", NpgsqlDbType.Text, query.BatchId)
                        .With("cancelled", NpgsqlDbType.Boolean, state switch { JobState.Cancelled => true, JobState.Dead => false, _ => null })
                        .With("t", after.Ticks)
                        .With("n", after.NumberBoundFor(JobListPosition.DeadLetterSource))
                        .With("max", query.Max)
                        .ReadAllAsync(RowReader.ReadDeadLetter, cancellationToken);
                    found.AddRange(letters.Select(letter => (JobRows.DeadJob(letter), new JobListPosition(letter.DeadLetteredAt.UtcTicks, JobListPosition.DeadLetterSource, letter.Id, "", Guid.Empty))));
                }

                if (state is null or JobState.Succeeded)
                {
                    var handled = await Command(connection, transaction, Schema.ListInboxJobs[(query.Queue is null ? 0 : 1) | (query.BatchId is null ? 0 : 2)])
                        .With("queue", NpgsqlDbType.Text, query.Queue)
                        .With("batch", NpgsqlDbType.Text, query.BatchId)
                        .With("t", after.Ticks)
                        .With("tie_all", after.Source != JobListPosition.InboxSource)
                        .With("consumer", NpgsqlDbType.Text, after.Consumer)
                        .With("message_id", after.MessageId)
                        .With("max", query.Max)
                        .ReadAllAsync(SucceededJob, cancellationToken);
                    found.AddRange(handled.Select(job => (job, new JobListPosition(job.FinishedAt!.Value.UtcTicks, JobListPosition.InboxSource, 0, job.Queue, job.Id))));
                }

                // PostgreSQL orders uuids by their bytes in RFC 4122 order, which is how Guid.CompareTo orders them.
                var newest = JobListPosition.Newest(found, query.Max, static (a, b) => a.CompareTo(b));
                for (var i = 0; i < newest.Count; i++)
                {
                    newest[i] = await WithProgressAsync(connection, transaction, newest[i], cancellationToken);
                }

                return newest;
            },
            cancellationToken);
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
        return ReadAsync(
            async connection => Page.OfFirst(
                await Command(connection, null, Schema.PageDeadLetters[filters])
                    .With("source", NpgsqlDbType.Text, query.Source)
                    .With("reason", NpgsqlDbType.Text, query.Reason)
                    .With("ordering_key", NpgsqlDbType.Text, query.OrderingKey)
                    .With("t", afterTicks)
                    .With("id", afterId)
                    .With("max", query.Max + 1)
                    .ReadAllAsync(RowReader.ReadDeadLetter, cancellationToken),
                query.Max,
                DeadLetterQuery.CursorOf),
            cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<DeadLetterGroup>> GroupDeadLettersAsync(CancellationToken cancellationToken) =>
        ReadAsync<IReadOnlyList<DeadLetterGroup>>(
            async connection => await Command(connection, null, Schema.GroupDeadLetters)
                .ReadAllAsync(static reader => new DeadLetterGroup(reader.GetString(0), reader.GetString(1), reader.GetInt64(2), PostgreSqlMapping.FromTicks(reader.GetInt64(3))), cancellationToken),
            cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<QueueActivity>> CountActivitySinceAsync(DateTimeOffset since, CancellationToken cancellationToken) =>
        ReadAsync<IReadOnlyList<QueueActivity>>(
            async connection => await Command(connection, null, Schema.CountActivity).With("since", since.UtcTicks)
                .ReadAllAsync(static reader => new QueueActivity(reader.GetString(0), reader.GetInt64(1), reader.GetInt64(2)), cancellationToken),
            cancellationToken);

    /// <inheritdoc />
    public ValueTask<DeadLetter?> GetDeadLetterAsync(long id, CancellationToken cancellationToken) =>
        ReadAsync(async connection => await Command(connection, null, Schema.GetDeadLetterForRead).With("id", id).ReadFirstAsync(RowReader.ReadDeadLetter, cancellationToken), cancellationToken);

    /// <inheritdoc />
    public async ValueTask<long> RecordAsync(OperatorAction action, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(action);
        return await WriteAsync((connection, transaction) => RecordOperatorActionAsync(connection, transaction, action, cancellationToken), cancellationToken);
    }

    internal async Task<long> RecordOperatorActionAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, OperatorAction action, CancellationToken cancellationToken)
    {
        await using var command = Command(connection, transaction, Schema.RecordOperatorAction)
            .With("at", action.At.UtcTicks)
            .With("actor", NpgsqlDbType.Text, action.Actor)
            .With("action", NpgsqlDbType.Text, action.Action)
            .With("target", NpgsqlDbType.Text, action.Target)
            .With("detail", NpgsqlDbType.Text, action.Detail);
        return (long)(await command.ExecuteScalarAsync(cancellationToken))!;
    }

    /// <inheritdoc />
    public ValueTask<Page<OperatorAction>> ListAsync(string? after, int max, CancellationToken cancellationToken)
    {
        if (max <= 0)
        {
            return ValueTask.FromResult(new Page<OperatorAction>([], null));
        }

        var before = after is null ? long.MaxValue : PageCursor.ParseNumbered(after).Number;
        return ReadAsync(
            async connection => Page.OfFirst(
                await Command(connection, null, Schema.ListOperatorActions).With("before", before).With("max", max + 1).ReadAllAsync(
                    static reader => new OperatorAction
                    {
                        Id = reader.GetInt64(0),
                        At = PostgreSqlMapping.FromTicks(reader.GetInt64(1)),
                        Actor = reader.GetString(2),
                        Action = reader.GetString(3),
                        Target = reader.GetString(4),
                        Detail = reader.IsDBNull(5) ? null : reader.GetString(5),
                    },
                    cancellationToken),
                max,
                static action => PageCursor.CreateNumbered(action.At.UtcTicks, action.Id)),
            cancellationToken);
    }

    /// <summary>Reads an inbox row: consumer, handled_at, message_type, correlation_id, sent_at, message_id, batch_id.</summary>
    static JobInfo SucceededJob(NpgsqlDataReader reader) => JobRows.SucceededJob(
        reader.GetGuid(5),
        reader.GetString(0),
        PostgreSqlMapping.FromTicks(reader.GetInt64(1)),
        reader.IsDBNull(2) ? null : reader.GetString(2),
        reader.IsDBNull(3) ? null : reader.GetString(3),
        reader.IsDBNull(4) ? null : PostgreSqlMapping.FromTicks(reader.GetInt64(4)),
        reader.IsDBNull(6) ? null : reader.GetString(6));

    async Task<JobInfo> WithProgressAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, JobInfo job, CancellationToken cancellationToken)
    {
        await using var reader = await Command(connection, transaction, Schema.GetProgress).With("job_id", job.Id).ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? job with { Progress = reader.GetInt32(0), ProgressNote = reader.IsDBNull(1) ? null : reader.GetString(1) } : job;
    }

    /// <inheritdoc />
    public async ValueTask<JobCancelOutcome> CancelJobAsync(Guid id, CancellationToken cancellationToken)
    {
        await using var transaction = (PostgreSqlStoreTransaction)await BeginAsync(cancellationToken);
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

        return ReadAsync<IReadOnlyList<Guid>>(
            async connection => await Command(connection, null, Schema.ReadCancellations).With("job_ids", ids.ToArray()).ReadAllAsync(reader => reader.GetGuid(0), cancellationToken),
            cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask SaveJobProgressAsync(Guid id, int percent, string? note, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(percent);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(percent, 100);
        await ReadAsync(
            async connection => await Command(connection, null, Schema.SaveProgress).With("job_id", id).With("percent", percent).With("note", NpgsqlDbType.Text, note).With("at", Now.UtcTicks).ExecuteNonQueryAsync(cancellationToken),
            cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<JobBatchRecord?> GetBatchAsync(string id, CancellationToken cancellationToken) =>
        ReadAsync(async connection => await Command(connection, null, Schema.GetBatch).With("id", id).ReadFirstAsync(JobRows.ReadBatch, cancellationToken), cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<RecurringJobRecord>> ListRecurringJobsAsync(CancellationToken cancellationToken) =>
        ReadAsync<IReadOnlyList<RecurringJobRecord>>(async connection => await Command(connection, null, Schema.ListRecurring).ReadAllAsync(JobRows.ReadRecurring, cancellationToken), cancellationToken);

    /// <summary>Runs one statement or a few on a pooled connection, each in its own implicit transaction.</summary>
    async ValueTask<T> ReadAsync<T>(Func<NpgsqlConnection, Task<T>> read, CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        return await read(connection);
    }

    /// <summary>Several reads that see one snapshot (a job moving between tables is seen in one place).</summary>
    async ValueTask<T> ReadSnapshotAsync<T>(Func<NpgsqlConnection, NpgsqlTransaction, Task<T>> read, CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(IsolationLevel.RepeatableRead, cancellationToken);
        var result = await read(connection, transaction);
        await transaction.CommitAsync(cancellationToken);
        return result;
    }

    async ValueTask<T> WriteAsync<T>(Func<NpgsqlConnection, NpgsqlTransaction, Task<T>> write, CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, cancellationToken);
        var result = await write(connection, transaction);
        await transaction.CommitAsync(cancellationToken);
        return result;
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await _notifications.DisposeAsync();
        await _dataSource.DisposeAsync();
        await _readSource.DisposeAsync();
    }
}
