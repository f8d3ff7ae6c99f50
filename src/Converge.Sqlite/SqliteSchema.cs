using Converge.Jobs;

namespace Converge.Sqlite;

/// <summary>Table names and every statement, built once from the validated prefix.</summary>
internal sealed class SqliteSchema
{
    readonly string _prefix;

    public SqliteSchema(string prefix)
    {
        _prefix = prefix;
        Queue = Quote(prefix + "queue");
        Inbox = Quote(prefix + "inbox");
        Log = Quote(prefix + "log");
        Groups = Quote(prefix + "consumer_groups");
        Projections = Quote(prefix + "projections");
        DeadLetters = Quote(prefix + "dead_letters");
        Migrations = Quote(prefix + "schema_migrations");
        Sagas = Quote(prefix + "sagas");
        SagaLog = Quote(prefix + "saga_log");
        UniqueKeys = Quote(prefix + "unique_keys");
        JobQueues = Quote(prefix + "job_queues");
        Batches = Quote(prefix + "job_batches");
        Recurring = Quote(prefix + "recurring_jobs");
        Progress = Quote(prefix + "job_progress");
        Cancellations = Quote(prefix + "job_cancellations");
        RateLimits = Quote(prefix + "rate_limits");
        OperatorLog = Quote(prefix + "operator_log");
        const string envelopeColumns = "message_id, message_type, correlation_id, causation_id, sent_at, as_of, headers, body";

        Versions =
        [
            $"""
            CREATE TABLE {Queue} (
                id INTEGER PRIMARY KEY,
                queue TEXT NOT NULL,
                priority INTEGER NOT NULL DEFAULT 0,
                visible_at INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                lease_token BLOB,
                message_id BLOB NOT NULL,
                message_type TEXT NOT NULL,
                correlation_id TEXT,
                causation_id BLOB,
                sent_at INTEGER NOT NULL,
                as_of INTEGER,
                headers TEXT,
                body BLOB NOT NULL,
                history TEXT);
            CREATE INDEX {Quote(prefix + "queue_ready")} ON {Queue} (queue, priority DESC, visible_at);
            CREATE TABLE {Inbox} (
                consumer TEXT NOT NULL,
                message_id BLOB NOT NULL,
                handled_at INTEGER NOT NULL,
                PRIMARY KEY (consumer, message_id)) WITHOUT ROWID;
            CREATE INDEX {Quote(prefix + "inbox_handled_at")} ON {Inbox} (handled_at);
            CREATE TABLE {Log} (
                position INTEGER PRIMARY KEY AUTOINCREMENT,
                stream TEXT NOT NULL,
                stream_version INTEGER NOT NULL,
                message_id BLOB NOT NULL,
                message_type TEXT NOT NULL,
                correlation_id TEXT,
                causation_id BLOB,
                sent_at INTEGER NOT NULL,
                as_of INTEGER,
                headers TEXT,
                body BLOB NOT NULL,
                UNIQUE (stream, stream_version));
            CREATE INDEX {Quote(prefix + "log_correlation")} ON {Log} (correlation_id) WHERE correlation_id IS NOT NULL;
            CREATE TABLE {Groups} (
                name TEXT PRIMARY KEY,
                position INTEGER NOT NULL,
                failed_attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                updated_at INTEGER NOT NULL);
            CREATE TABLE {DeadLetters} (
                id INTEGER PRIMARY KEY,
                source TEXT NOT NULL,
                priority INTEGER NOT NULL DEFAULT 0,
                message_id BLOB NOT NULL,
                message_type TEXT NOT NULL,
                correlation_id TEXT,
                causation_id BLOB,
                sent_at INTEGER NOT NULL,
                as_of INTEGER,
                headers TEXT,
                body BLOB NOT NULL,
                reason TEXT NOT NULL,
                exception TEXT,
                attempts INTEGER NOT NULL,
                history TEXT,
                dead_lettered_at INTEGER NOT NULL,
                log_position INTEGER);
            CREATE INDEX {Quote(prefix + "dead_letters_source")} ON {DeadLetters} (source);
            """,
            $"""
            ALTER TABLE {Inbox} ADD COLUMN message_type TEXT;
            ALTER TABLE {Inbox} ADD COLUMN correlation_id TEXT;
            ALTER TABLE {Inbox} ADD COLUMN causation_id BLOB;
            ALTER TABLE {Inbox} ADD COLUMN sent_at INTEGER;
            CREATE INDEX {Quote(prefix + "inbox_correlation")} ON {Inbox} (correlation_id) WHERE correlation_id IS NOT NULL;
            CREATE INDEX {Quote(prefix + "dead_letters_correlation")} ON {DeadLetters} (correlation_id) WHERE correlation_id IS NOT NULL;
            CREATE TABLE {Sagas} (
                transaction_id TEXT PRIMARY KEY,
                definition TEXT NOT NULL,
                version INTEGER NOT NULL,
                state TEXT NOT NULL,
                step_index INTEGER NOT NULL,
                awaiting BLOB,
                step_attempt INTEGER NOT NULL,
                steps TEXT NOT NULL,
                data BLOB NOT NULL,
                failure TEXT,
                concurrency_version INTEGER NOT NULL,
                started_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL);
            CREATE INDEX {Quote(prefix + "sagas_state")} ON {Sagas} (state, started_at);
            CREATE INDEX {Quote(prefix + "sagas_definition")} ON {Sagas} (definition, version, started_at);
            CREATE TABLE {SagaLog} (
                id INTEGER PRIMARY KEY,
                transaction_id TEXT NOT NULL,
                at INTEGER NOT NULL,
                kind TEXT NOT NULL,
                step TEXT,
                message_id BLOB,
                message_type TEXT,
                detail TEXT,
                answers BLOB);
            CREATE INDEX {Quote(prefix + "saga_log_transaction")} ON {SagaLog} (transaction_id, id);
            """,
            $"""
            CREATE INDEX {Quote(prefix + "queue_oldest")} ON {Queue} (queue, visible_at);
            CREATE INDEX {Quote(prefix + "queue_leased")} ON {Queue} (queue, visible_at) WHERE lease_token IS NOT NULL;
            ALTER TABLE {Inbox} ADD COLUMN batch_id TEXT;
            CREATE INDEX {Quote(prefix + "dead_letters_message_id")} ON {DeadLetters} (message_id);
            CREATE TABLE {JobQueues} (name TEXT PRIMARY KEY) WITHOUT ROWID;
            CREATE TABLE {UniqueKeys} (
                key TEXT PRIMARY KEY,
                job_id BLOB NOT NULL,
                expires_at INTEGER NOT NULL);
            CREATE TABLE {Batches} (
                id TEXT PRIMARY KEY,
                description TEXT,
                total INTEGER NOT NULL DEFAULT 0,
                pending INTEGER NOT NULL DEFAULT 0,
                succeeded INTEGER NOT NULL DEFAULT 0,
                failed INTEGER NOT NULL DEFAULT 0,
                sealed INTEGER NOT NULL DEFAULT 0,
                created_at INTEGER NOT NULL,
                finished_at INTEGER,
                on_success_queue TEXT,
                on_success_priority INTEGER,
                on_success_message_id BLOB,
                on_success_message_type TEXT,
                on_success_correlation_id TEXT,
                on_success_causation_id BLOB,
                on_success_sent_at INTEGER,
                on_success_as_of INTEGER,
                on_success_headers TEXT,
                on_success_body BLOB,
                on_complete_queue TEXT,
                on_complete_priority INTEGER,
                on_complete_message_id BLOB,
                on_complete_message_type TEXT,
                on_complete_correlation_id TEXT,
                on_complete_causation_id BLOB,
                on_complete_sent_at INTEGER,
                on_complete_as_of INTEGER,
                on_complete_headers TEXT,
                on_complete_body BLOB);
            CREATE TABLE {Recurring} (
                name TEXT PRIMARY KEY,
                cron TEXT NOT NULL,
                time_zone TEXT NOT NULL,
                queue TEXT NOT NULL,
                message_type TEXT NOT NULL,
                body BLOB NOT NULL,
                priority INTEGER NOT NULL DEFAULT 0,
                misfire TEXT NOT NULL,
                next_at INTEGER NOT NULL,
                last_at INTEGER);
            CREATE TABLE {Progress} (
                job_id BLOB PRIMARY KEY,
                percent INTEGER NOT NULL,
                note TEXT,
                updated_at INTEGER NOT NULL);
            CREATE TABLE {Cancellations} (
                job_id BLOB PRIMARY KEY,
                requested_at INTEGER NOT NULL);
            CREATE TABLE {RateLimits} (
                queue TEXT PRIMARY KEY,
                tokens REAL NOT NULL,
                refilled_at INTEGER NOT NULL);
            """,
            $"""
            ALTER TABLE {Sagas} ADD COLUMN failed_step TEXT;
            ALTER TABLE {Sagas} ADD COLUMN last_error TEXT;
            ALTER TABLE {Sagas} ADD COLUMN stuck_reason TEXT;
            ALTER TABLE {Sagas} ADD COLUMN timeout_id BLOB;
            ALTER TABLE {Sagas} ADD COLUMN timeout_at INTEGER;
            ALTER TABLE {Sagas} ADD COLUMN queue TEXT;
            """,
            $"""
            ALTER TABLE {Queue} ADD COLUMN ordering_key TEXT;
            ALTER TABLE {Queue} ADD COLUMN ordering_seq INTEGER;
            ALTER TABLE {DeadLetters} ADD COLUMN ordering_key TEXT;
            ALTER TABLE {DeadLetters} ADD COLUMN ordering_seq INTEGER;
            CREATE INDEX {Quote(prefix + "queue_ordering")} ON {Queue} (queue, ordering_key, ordering_seq) WHERE ordering_key IS NOT NULL;
            CREATE INDEX {Quote(prefix + "dead_letters_ordering")} ON {DeadLetters} (source, ordering_key) WHERE ordering_key IS NOT NULL;
            """,
            $"""
            ALTER TABLE {Groups} ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
            CREATE TABLE {Projections} (
                name TEXT NOT NULL,
                version INTEGER NOT NULL,
                tables TEXT NOT NULL,
                state TEXT NOT NULL,
                started_at INTEGER NOT NULL,
                built_at INTEGER,
                built_position INTEGER,
                live_since INTEGER,
                PRIMARY KEY (name, version));
            """,
            // Listings for the dashboard, newest first and keyset-paged: one index per filter combination, ending in the
            // order's columns, so a page is a short index range wherever it starts. The old saga indexes lacked the
            // tie-breaker; the old dead-letter source index is a prefix of its replacement. Rows of the inbox (a WITHOUT
            // ROWID table) and of the dead letters carry their key at the end of every index, which ends the order.
            $"""
            DROP INDEX {Quote(prefix + "sagas_state")};
            DROP INDEX {Quote(prefix + "sagas_definition")};
            CREATE INDEX {Quote(prefix + "sagas_newest")} ON {Sagas} (started_at, transaction_id);
            CREATE INDEX {Quote(prefix + "sagas_state_newest")} ON {Sagas} (state, started_at, transaction_id);
            CREATE INDEX {Quote(prefix + "sagas_definition_newest")} ON {Sagas} (definition, started_at, transaction_id);
            CREATE INDEX {Quote(prefix + "sagas_definition_state_newest")} ON {Sagas} (definition, state, started_at, transaction_id);
            CREATE INDEX {Quote(prefix + "sagas_definition_version_newest")} ON {Sagas} (definition, version, started_at, transaction_id);
            CREATE INDEX {Quote(prefix + "sagas_definition_version_state_newest")} ON {Sagas} (definition, version, state, started_at, transaction_id);
            DROP INDEX {Quote(prefix + "dead_letters_source")};
            CREATE INDEX {Quote(prefix + "dead_letters_newest")} ON {DeadLetters} (dead_lettered_at);
            CREATE INDEX {Quote(prefix + "dead_letters_source_newest")} ON {DeadLetters} (source, dead_lettered_at);
            CREATE INDEX {Quote(prefix + "dead_letters_reason_newest")} ON {DeadLetters} (reason, dead_lettered_at);
            CREATE INDEX {Quote(prefix + "dead_letters_reason_source_newest")} ON {DeadLetters} (reason, source, dead_lettered_at);
            CREATE INDEX {Quote(prefix + "dead_letters_key_newest")} ON {DeadLetters} (ordering_key, dead_lettered_at) WHERE ordering_key IS NOT NULL;
            CREATE INDEX {Quote(prefix + "inbox_consumer_newest")} ON {Inbox} (consumer, handled_at);
            CREATE INDEX {Quote(prefix + "inbox_batch_newest")} ON {Inbox} (batch_id, handled_at) WHERE batch_id IS NOT NULL;
            CREATE TABLE {OperatorLog} (
                id INTEGER PRIMARY KEY,
                at INTEGER NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                detail TEXT);
            """,
        ];

        CreateMigrations = $"CREATE TABLE IF NOT EXISTS {Migrations} (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)";
        CurrentVersion = $"SELECT coalesce(max(version), 0) FROM {Migrations}";
        RecordVersion = $"INSERT INTO {Migrations} (version, applied_at) VALUES ($version, $at)";

        Enqueue = $"INSERT INTO {Queue} (queue, priority, visible_at, {envelopeColumns}) VALUES ($queue, $priority, $visible_at, $message_id, $message_type, $correlation_id, $causation_id, $sent_at, $as_of, $headers, $body)";
        // A keyed row's place in its key: after every row and dead letter of the key, or, retried from the dead letters,
        // the place it had ($dead_letter, the dead letter's id). One writer at a time makes the places unique.
        EnqueueKeyed = $"""
            INSERT INTO {Queue} (queue, priority, visible_at, ordering_key, ordering_seq, {envelopeColumns})
            VALUES ($queue, $priority, $visible_at, $ordering_key,
                coalesce((SELECT ordering_seq FROM {DeadLetters} WHERE id = $dead_letter),
                    1 + coalesce(max((SELECT max(ordering_seq) FROM {Queue} WHERE queue = $queue AND ordering_key = $ordering_key),
                                     (SELECT max(ordering_seq) FROM {DeadLetters} WHERE source = $queue AND ordering_key = $ordering_key)),
                                 (SELECT max(ordering_seq) FROM {Queue} WHERE queue = $queue AND ordering_key = $ordering_key),
                                 (SELECT max(ordering_seq) FROM {DeadLetters} WHERE source = $queue AND ordering_key = $ordering_key), 0)),
                $message_id, $message_type, $correlation_id, $causation_id, $sent_at, $as_of, $headers, $body)
            """;
        // Claimable: unkeyed, or the oldest row of its queue and key (so a leased or retrying head holds its followers,
        // and a batch takes at most one row per key) while no dead letter holds the key. Cheap when no row is keyed:
        // the first test decides.
        var head = $"""
            (q.ordering_key IS NULL OR (
                NOT EXISTS (SELECT 1 FROM {Queue} h WHERE h.queue = q.queue AND h.ordering_key = q.ordering_key
                    AND (h.ordering_seq < q.ordering_seq OR (h.ordering_seq = q.ordering_seq AND h.id < q.id)))
                AND NOT EXISTS (SELECT 1 FROM {DeadLetters} d WHERE d.source = q.queue AND d.ordering_key = q.ordering_key)))
            """;

        // The queue is walked in claim order and stops at the batch's last row. The ordering test reads a column the
        // index lacks, and with it the planner would rather fetch every visible row and sort them: named, it does not.
        var ready = Quote(prefix + "queue_ready");
        var oldest = Quote(prefix + "queue_oldest");
        Requeue = $"INSERT INTO {Queue} (queue, priority, visible_at, attempts, history, {envelopeColumns}) VALUES ($queue, $priority, $visible_at, $attempts, $history, $message_id, $message_type, $correlation_id, $causation_id, $sent_at, $as_of, $headers, $body)";
        Claim = $"""
            UPDATE {Queue} SET visible_at = $until, lease_token = $token, attempts = attempts + 1
            WHERE id IN (SELECT id FROM {Queue} q INDEXED BY {ready} WHERE q.queue = $queue AND q.visible_at <= $now AND {head} ORDER BY q.priority DESC, q.visible_at LIMIT $max)
            RETURNING id, priority, attempts, history, {envelopeColumns}
            """;
        AnyVisible = $"SELECT 1 FROM {Queue} q INDEXED BY {oldest} WHERE q.queue = $queue AND q.visible_at <= $now AND {head} LIMIT 1";
        // Rows a held key or an earlier row of their key keeps waiting are not due: a consumer that woke for them would spin.
        NextVisible = $"SELECT q.visible_at FROM {Queue} q INDEXED BY {oldest} WHERE q.queue = $queue AND {head} ORDER BY q.visible_at LIMIT 1";
        CompleteForDeadLetter = $"DELETE FROM {Queue} WHERE id = $id AND lease_token = $token RETURNING ordering_key, ordering_seq";
        Complete = $"DELETE FROM {Queue} WHERE id = $id AND lease_token = $token";
        RetryLater = $"UPDATE {Queue} SET visible_at = $due, lease_token = NULL, history = $history WHERE id = $id AND lease_token = $token";
        Release = $"UPDATE {Queue} SET visible_at = $now, lease_token = NULL, attempts = attempts - $uncount WHERE id = $id AND lease_token = $token";
        Renew = $"UPDATE {Queue} SET visible_at = $until WHERE id = $id AND lease_token = $token";
        RecordInbox = $"INSERT INTO {Inbox} (consumer, message_id, handled_at, message_type, correlation_id, causation_id, sent_at, batch_id) VALUES ($consumer, $message_id, $at, $message_type, $correlation_id, $causation_id, $sent_at, $batch_id) ON CONFLICT DO NOTHING";
        ForgetInbox = $"DELETE FROM {Inbox} WHERE consumer = $consumer AND message_id = $message_id";
        PurgeInbox = $"DELETE FROM {Inbox} WHERE (consumer, message_id) IN (SELECT consumer, message_id FROM {Inbox} WHERE handled_at < $cutoff LIMIT $chunk)";
        PurgeUniqueKeys = $"DELETE FROM {UniqueKeys} WHERE key IN (SELECT key FROM {UniqueKeys} WHERE expires_at <= $now LIMIT $chunk)";

        InsertDeadLetter = $"""
            INSERT INTO {DeadLetters} (source, priority, {envelopeColumns}, reason, exception, attempts, history, dead_lettered_at, log_position, ordering_key, ordering_seq)
            VALUES ($source, $priority, $message_id, $message_type, $correlation_id, $causation_id, $sent_at, $as_of, $headers, $body, $reason, $exception, $attempts, $history, $at, $log_position, $ordering_key, $ordering_seq)
            """;
        ListDeadLetters = $"SELECT id, source, priority, reason, exception, attempts, history, dead_lettered_at, log_position, {envelopeColumns}, ordering_key FROM {DeadLetters} WHERE ($source IS NULL OR source = $source) ORDER BY id DESC LIMIT $max";
        GetDeadLetter = $"SELECT id, source, priority, reason, exception, attempts, history, dead_lettered_at, log_position, {envelopeColumns}, ordering_key FROM {DeadLetters} WHERE id = $id";
        DeleteDeadLetter = $"DELETE FROM {DeadLetters} WHERE id = $id";
        const string deadLetterListColumns = "id, source, priority, reason, exception, attempts, history, dead_lettered_at, log_position, message_id, message_type, correlation_id, causation_id, sent_at, as_of, headers, body, ordering_key";
        PageDeadLetters = [.. Enumerable.Range(0, 8).Select(filters =>
        {
            bool source = (filters & 1) != 0, reason = (filters & 2) != 0, key = (filters & 4) != 0;
            var index = (reason, source, key) switch
            {
                (true, true, _) => "dead_letters_reason_source_newest",
                (true, false, _) => "dead_letters_reason_newest",
                (false, _, true) => "dead_letters_key_newest",
                (false, true, false) => "dead_letters_source_newest",
                _ => "dead_letters_newest",
            };
            return $"""
                SELECT {deadLetterListColumns} FROM {DeadLetters} INDEXED BY {Quote(prefix + index)}
                WHERE {(source ? "source = $source AND " : "")}{(reason ? "reason = $reason AND " : "")}{(key ? "ordering_key = $ordering_key AND " : "")}
                    dead_lettered_at <= $t AND (dead_lettered_at < $t OR id < $id)
                ORDER BY dead_lettered_at DESC, id DESC LIMIT $max
                """;
        })];
        GroupDeadLetters = $"SELECT reason, source, count(*), max(dead_lettered_at) FROM {DeadLetters} INDEXED BY {Quote(prefix + "dead_letters_reason_source_newest")} GROUP BY reason, source ORDER BY reason, source";
        CountActivity = $"SELECT queue, sum(handled), sum(dead_lettered) FROM (SELECT consumer AS queue, count(*) AS handled, 0 AS dead_lettered FROM {Inbox} INDEXED BY {Quote(prefix + "inbox_handled_at")} WHERE handled_at >= $since GROUP BY consumer UNION ALL SELECT source, 0, count(*) FROM {DeadLetters} INDEXED BY {Quote(prefix + "dead_letters_newest")} WHERE dead_lettered_at >= $since GROUP BY source) GROUP BY queue ORDER BY queue";
        RecordOperatorAction = $"INSERT INTO {OperatorLog} (at, actor, action, target, detail) VALUES ($at, $actor, $action, $target, $detail) RETURNING id";
        ListOperatorActions = $"SELECT id, at, actor, action, target, detail FROM {OperatorLog} WHERE id < $before ORDER BY id DESC LIMIT $max";

        StreamVersion = $"SELECT coalesce(max(stream_version), 0) FROM {Log} WHERE stream = $stream";
        Append = $"INSERT INTO {Log} (stream, stream_version, {envelopeColumns}) VALUES ($stream, $stream_version, $message_id, $message_type, $correlation_id, $causation_id, $sent_at, $as_of, $headers, $body) RETURNING position";
        ReadLog = $"SELECT position, stream, stream_version, {envelopeColumns} FROM {Log} WHERE position > $after ORDER BY position LIMIT $max";
        ReadStream = $"SELECT position, stream, stream_version, {envelopeColumns} FROM {Log} WHERE stream = $stream AND stream_version >= $from ORDER BY stream_version LIMIT $max";
        GetGroup = $"SELECT name, position, failed_attempts, last_error, updated_at, paused FROM {Groups} WHERE name = $name";
        DeleteGroup = $"DELETE FROM {Groups} WHERE name = $name";
        PauseGroup = $"INSERT INTO {Groups} (name, position, failed_attempts, updated_at, paused) VALUES ($name, 0, 0, $at, $paused) ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at";
        SaveGroup = $"""
            INSERT INTO {Groups} (name, position, failed_attempts, last_error, updated_at) VALUES ($name, $position, $failed_attempts, $last_error, $at)
            ON CONFLICT (name) DO UPDATE SET position = excluded.position, failed_attempts = excluded.failed_attempts, last_error = excluded.last_error, updated_at = excluded.updated_at
            WHERE position = $expected
            """;

        QueueStatus = $"""
            SELECT queue,
                   sum(visible_at <= $now),
                   sum(lease_token IS NULL AND visible_at > $now AND visible_at <= $stranded_after AND typeof(visible_at) IN ('integer', 'real')),
                   sum(lease_token IS NOT NULL AND visible_at > $now),
                   sum(visible_at > $stranded_after OR typeof(visible_at) NOT IN ('integer', 'real')),
                   min(CASE WHEN visible_at <= $now THEN visible_at END)
            FROM {Queue} GROUP BY queue
            """;
        DeadLetterCounts = $"SELECT source, count(*) FROM {DeadLetters} GROUP BY source";
        HeldKeys = $"""
            SELECT d.source, d.ordering_key, count(*),
                   (SELECT count(*) FROM {Queue} q WHERE q.queue = d.source AND q.ordering_key = d.ordering_key)
            FROM {DeadLetters} d WHERE d.ordering_key IS NOT NULL GROUP BY d.source, d.ordering_key ORDER BY d.source, d.ordering_key
            """;
        LogHead = $"SELECT coalesce(max(position), 0) FROM {Log}";
        GroupStatus = $"SELECT name, position, failed_attempts, last_error, paused FROM {Groups} ORDER BY name";
        InboxCount = $"SELECT count(*) FROM {Inbox}";

        const string sagaColumns = "transaction_id, definition, version, state, step_index, awaiting, step_attempt, steps, data, failure, concurrency_version, started_at, updated_at, failed_step, last_error, stuck_reason, timeout_id, timeout_at, queue";
        LoadSaga = $"SELECT {sagaColumns} FROM {Sagas} WHERE transaction_id = $transaction_id";
        InsertSaga = $"""
            INSERT INTO {Sagas} ({sagaColumns})
            VALUES ($transaction_id, $definition, $version, $state, $step_index, $awaiting, $step_attempt, $steps, $data, $failure, $concurrency_version, $started_at, $updated_at, $failed_step, $last_error, $stuck_reason, $timeout_id, $timeout_at, $queue)
            ON CONFLICT (transaction_id) DO NOTHING
            """;
        UpdateSaga = $"""
            UPDATE {Sagas} SET state = $state, step_index = $step_index, awaiting = $awaiting, step_attempt = $step_attempt, data = $data,
                failure = $failure, concurrency_version = $concurrency_version, updated_at = $updated_at, failed_step = $failed_step,
                last_error = $last_error, stuck_reason = $stuck_reason, timeout_id = $timeout_id, timeout_at = $timeout_at, queue = $queue
            WHERE transaction_id = $transaction_id AND concurrency_version = $expected
            """;
        // One statement per combination of filters, each naming the index that serves it: "$x IS NULL OR x = $x" would
        // keep the planner from using any. The keyset condition is written so its first term bounds the index range;
        // without a cursor, $t is the largest time and every row passes.
        QuerySagas = [.. Enumerable.Range(0, 8).Select(filters =>
        {
            bool state = (filters & 1) != 0, definition = (filters & 2) != 0, version = (filters & 4) != 0;
            var index = (definition, version, state) switch
            {
                (true, true, true) => "sagas_definition_version_state_newest",
                (true, true, false) => "sagas_definition_version_newest",
                (true, false, true) => "sagas_definition_state_newest",
                (true, false, false) => "sagas_definition_newest",
                (false, _, true) => "sagas_state_newest",
                _ => "sagas_newest",
            };
            return $"""
                SELECT {sagaColumns} FROM {Sagas} INDEXED BY {Quote(prefix + index)}
                WHERE {(state ? "state = $state AND " : "")}{(definition ? "definition = $definition AND " : "")}{(version ? "version = $version AND " : "")}
                    started_at <= $t AND (started_at < $t OR transaction_id < $id)
                ORDER BY started_at DESC, transaction_id DESC LIMIT $max
                """;
        })];
        CountSagas = $"SELECT definition, version, state, count(*) FROM {Sagas} GROUP BY definition, version, state ORDER BY definition, version, state";
        AppendSagaLog = [.. Enumerable.Range(1, SagaLogRowsPerInsert).Select(rows =>
            $"INSERT INTO {SagaLog} (transaction_id, at, kind, step, message_id, message_type, detail, answers) VALUES " +
            string.Join(", ", Enumerable.Range(0, rows).Select(i => $"($transaction_id, $at, $kind{i}, $step{i}, $message_id{i}, $message_type{i}, $detail{i}, $answers{i})")))];
        ReadSagaLog = $"SELECT id, transaction_id, at, kind, step, message_id, message_type, detail, answers FROM {SagaLog} WHERE transaction_id = $transaction_id ORDER BY id";
        FlowInbox = $"SELECT message_id, message_type, causation_id, sent_at, consumer, handled_at FROM {Inbox} WHERE correlation_id = $correlation_id";
        FlowQueue = $"SELECT message_id, message_type, causation_id, sent_at, queue FROM {Queue} WHERE correlation_id = $correlation_id";
        FlowDeadLetters = $"SELECT message_id, message_type, causation_id, sent_at, source FROM {DeadLetters} WHERE correlation_id = $correlation_id";
        FlowLog = $"SELECT message_id, message_type, causation_id, sent_at, stream FROM {Log} WHERE correlation_id = $correlation_id";

        ClaimOldest = $"""
            UPDATE {Queue} SET visible_at = $until, lease_token = $token, attempts = attempts + 1
            WHERE id IN (SELECT id FROM {Queue} q INDEXED BY {oldest} WHERE q.queue = $queue AND q.visible_at <= $now AND {head} ORDER BY q.visible_at, q.id LIMIT $max)
            RETURNING id, priority, attempts, history, {envelopeColumns}
            """;
        CountLiveLeases = $"SELECT count(*) FROM {Queue} WHERE queue = $queue AND lease_token IS NOT NULL AND visible_at > $now";
        GetRateLimit = $"SELECT tokens, refilled_at FROM {RateLimits} WHERE queue = $queue";
        SaveRateLimit = $"""
            INSERT INTO {RateLimits} (queue, tokens, refilled_at) VALUES ($queue, $tokens, $refilled_at)
            ON CONFLICT (queue) DO UPDATE SET tokens = excluded.tokens, refilled_at = excluded.refilled_at
            """;

        ReserveUniqueKey = $"""
            INSERT INTO {UniqueKeys} (key, job_id, expires_at) VALUES ($key, $job_id, $expires_at)
            ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id, expires_at = excluded.expires_at WHERE expires_at <= $now
            """;
        UniqueKeyHolder = $"SELECT job_id FROM {UniqueKeys} WHERE key = $key";

        const string batchColumns = "id, description, total, pending, succeeded, failed, sealed, created_at, finished_at, "
            + "on_success_queue, on_success_priority, on_success_message_id, on_success_message_type, on_success_correlation_id, on_success_causation_id, on_success_sent_at, on_success_as_of, on_success_headers, on_success_body, "
            + "on_complete_queue, on_complete_priority, on_complete_message_id, on_complete_message_type, on_complete_correlation_id, on_complete_causation_id, on_complete_sent_at, on_complete_as_of, on_complete_headers, on_complete_body";
        CreateBatch = $"""
            INSERT INTO {Batches} ({batchColumns})
            VALUES ($id, $description, 0, 0, 0, 0, 0, $created_at, NULL,
                $on_success_queue, $on_success_priority, $on_success_message_id, $on_success_message_type, $on_success_correlation_id, $on_success_causation_id, $on_success_sent_at, $on_success_as_of, $on_success_headers, $on_success_body,
                $on_complete_queue, $on_complete_priority, $on_complete_message_id, $on_complete_message_type, $on_complete_correlation_id, $on_complete_causation_id, $on_complete_sent_at, $on_complete_as_of, $on_complete_headers, $on_complete_body)
            ON CONFLICT (id) DO NOTHING
            """;
        GetBatch = $"SELECT {batchColumns} FROM {Batches} WHERE id = $id";
        AddToBatch = $"UPDATE {Batches} SET total = total + $count, pending = pending + $count WHERE id = $id AND finished_at IS NULL";
        RecordBatchOutcomes = $"""
            UPDATE {Batches} SET pending = pending - ($succeeded + $failed), succeeded = succeeded + $succeeded, failed = failed + $failed
            WHERE id = $id AND finished_at IS NULL
            """;
        SealBatch = $"UPDATE {Batches} SET sealed = 1 WHERE id = $id";
        FinishBatch = $"UPDATE {Batches} SET finished_at = $now WHERE id = $id AND sealed = 1 AND pending <= 0 AND finished_at IS NULL RETURNING {batchColumns}";

        const string recurringColumns = "name, cron, time_zone, queue, message_type, body, priority, misfire, next_at, last_at";
        UpsertRecurring = $"""
            INSERT INTO {Recurring} ({recurringColumns}) VALUES ($name, $cron, $time_zone, $queue, $message_type, $body, $priority, $misfire, $next_at, $last_at)
            ON CONFLICT (name) DO UPDATE SET
                next_at = CASE WHEN cron = excluded.cron AND time_zone = excluded.time_zone THEN next_at ELSE excluded.next_at END,
                cron = excluded.cron, time_zone = excluded.time_zone, queue = excluded.queue, message_type = excluded.message_type,
                body = excluded.body, priority = excluded.priority, misfire = excluded.misfire
            """;
        LoadDueRecurring = $"SELECT {recurringColumns} FROM {Recurring} WHERE next_at <= $now ORDER BY next_at, name";
        ListRecurring = $"SELECT {recurringColumns} FROM {Recurring} ORDER BY name";
        AdvanceRecurring = $"UPDATE {Recurring} SET next_at = $next_at, last_at = coalesce($last_at, last_at) WHERE name = $name AND next_at = $expected";
        RemoveRecurring = $"DELETE FROM {Recurring} WHERE name = $name";

        SaveProgress = $"""
            INSERT INTO {Progress} (job_id, percent, note, updated_at) VALUES ($job_id, $percent, $note, $at)
            ON CONFLICT (job_id) DO UPDATE SET percent = excluded.percent, note = excluded.note, updated_at = excluded.updated_at
            """;
        GetProgress = $"SELECT percent, note FROM {Progress} WHERE job_id = $job_id";
        ForgetProgress = $"DELETE FROM {Progress} WHERE job_id = $job_id";
        RequestCancellation = $"INSERT INTO {Cancellations} (job_id, requested_at) VALUES ($job_id, $at) ON CONFLICT (job_id) DO NOTHING";
        HasCancellation = $"SELECT 1 FROM {Cancellations} WHERE job_id = $job_id";
        ForgetCancellation = $"DELETE FROM {Cancellations} WHERE job_id = $job_id";

        // Jobs are queue messages: a job is read back from the queue, then the inbox, then the dead letters. The queue
        // and the inbox have no index on the message id: every enqueue and every handled message would pay for it,
        // while looking a job up by id is a rare, interactive read that can afford a scan.
        const string queueJobColumns = "id, queue, priority, visible_at, attempts, lease_token, history";
        const string deadLetterColumns = "id, source, priority, reason, exception, attempts, history, dead_lettered_at, log_position";
        const string inboxJobColumns = "consumer, handled_at, message_type, correlation_id, sent_at, message_id, batch_id";
        const string batchOf = $"json_extract(headers, '$.\"{Jobs.JobHeaders.Batch}\"')";
        JobInQueue = $"SELECT {queueJobColumns}, {envelopeColumns} FROM {Queue} WHERE message_id = $message_id ORDER BY id";
        JobInInbox = $"SELECT {inboxJobColumns} FROM {Inbox} WHERE message_id = $message_id ORDER BY handled_at DESC LIMIT 1";
        JobInDeadLetters = $"SELECT {deadLetterColumns}, {envelopeColumns} FROM {DeadLetters} WHERE message_id = $message_id AND log_position IS NULL ORDER BY id DESC LIMIT 1";
        ListQueueJobs = $"""
            SELECT {queueJobColumns}, {envelopeColumns} FROM {Queue}
            WHERE ($queue IS NULL OR queue = $queue) AND queue IN (SELECT name FROM {JobQueues}) AND ($batch IS NULL OR {batchOf} = $batch)
              AND ($state IS NULL
                   OR ($state = 'scheduled' AND lease_token IS NULL AND visible_at > $now)
                   OR ($state = 'enqueued' AND visible_at <= $now)
                   OR ($state = 'processing' AND lease_token IS NOT NULL AND visible_at > $now))
              AND sent_at <= $t AND (sent_at < $t OR id < $n)
            ORDER BY sent_at DESC, id DESC LIMIT $max
            """;
        // Succeeded jobs are most of the jobs a store holds (a million is ordinary): each filter reads its own index.
        // $tie_all says every row at the cursor's time comes after it (the cursor is a queue or dead-letter job).
        ListInboxJobs = [.. Enumerable.Range(0, 4).Select(filters =>
        {
            bool queue = (filters & 1) != 0, batch = (filters & 2) != 0;
            var index = batch ? "inbox_batch_newest" : queue ? "inbox_consumer_newest" : "inbox_handled_at";
            return $"""
                SELECT {inboxJobColumns} FROM {Inbox} INDEXED BY {Quote(prefix + index)}
                WHERE {(queue ? "consumer = $queue AND " : "")}{(batch ? "batch_id = $batch AND " : "")}consumer IN (SELECT name FROM {JobQueues})
                    AND handled_at <= $t AND (handled_at < $t OR $tie_all = 1 OR (consumer, message_id) < ($consumer, $message_id))
                ORDER BY handled_at DESC, consumer DESC, message_id DESC LIMIT $max
                """;
        })];
        RegisterJobQueue = $"INSERT INTO {JobQueues} (name) VALUES ($name) ON CONFLICT DO NOTHING";
        ListDeadLetterJobs = [.. Enumerable.Range(0, 2).Select(filters => filters == 1).Select(queue => $"""
            SELECT {deadLetterColumns}, {envelopeColumns} FROM {DeadLetters} INDEXED BY {Quote(prefix + (queue ? "dead_letters_source_newest" : "dead_letters_newest"))}
            WHERE log_position IS NULL AND {(queue ? "source = $queue AND " : "")}source IN (SELECT name FROM {JobQueues}) AND ($batch IS NULL OR {batchOf} = $batch)
              AND ($cancelled IS NULL OR (reason = '{Storage.DeadLetterReasons.Cancelled}') = $cancelled)
              AND dead_lettered_at <= $t AND (dead_lettered_at < $t OR id < $n)
            ORDER BY dead_lettered_at DESC, id DESC LIMIT $max
            """)];
        DeleteQueued = $"DELETE FROM {Queue} WHERE id = $id RETURNING ordering_key, ordering_seq";
        CancelScheduled = $"DELETE FROM {Queue} WHERE queue = $queue AND visible_at = $visible_at AND message_id = $message_id AND lease_token IS NULL";
    }

    public string Sagas { get; }
    public string SagaLog { get; }
    public string LoadSaga { get; }
    public string InsertSaga { get; }
    public string UpdateSaga { get; }
    /// <summary>Saga listings by filter combination: index bit 0 state, bit 1 definition, bit 2 version.</summary>
    public IReadOnlyList<string> QuerySagas { get; }

    /// <summary>Dead-letter pages by filter combination: index bit 0 source, bit 1 reason, bit 2 ordering key.</summary>
    public IReadOnlyList<string> PageDeadLetters { get; }
    public string GroupDeadLetters { get; }

    public string CountActivity { get; }
    public string OperatorLog { get; }
    public string RecordOperatorAction { get; }
    public string ListOperatorActions { get; }
    public string CountSagas { get; }
    /// <summary>Entries written by one statement: a transition logs a few at once, and one statement costs less than several.</summary>
    public const int SagaLogRowsPerInsert = 4;

    /// <summary>Inserts of 1 to <see cref="SagaLogRowsPerInsert"/> log entries of one instance at one time; index = rows - 1.</summary>
    public IReadOnlyList<string> AppendSagaLog { get; }
    public string ReadSagaLog { get; }
    public string FlowInbox { get; }
    public string FlowQueue { get; }
    public string FlowDeadLetters { get; }
    public string FlowLog { get; }

    public string UniqueKeys { get; }
    public string Batches { get; }
    public string Recurring { get; }
    public string Progress { get; }
    public string Cancellations { get; }
    public string RateLimits { get; }
    public string ClaimOldest { get; }
    public string CountLiveLeases { get; }
    public string GetRateLimit { get; }
    public string SaveRateLimit { get; }
    public string ReserveUniqueKey { get; }
    public string UniqueKeyHolder { get; }
    public string CreateBatch { get; }
    public string GetBatch { get; }
    public string AddToBatch { get; }
    public string RecordBatchOutcomes { get; }
    public string SealBatch { get; }
    public string FinishBatch { get; }
    public string UpsertRecurring { get; }
    public string LoadDueRecurring { get; }
    public string ListRecurring { get; }
    public string AdvanceRecurring { get; }
    public string RemoveRecurring { get; }
    public string SaveProgress { get; }
    public string GetProgress { get; }
    public string ForgetProgress { get; }
    public string RequestCancellation { get; }
    public string HasCancellation { get; }
    public string ForgetCancellation { get; }
    public string JobInQueue { get; }
    public string JobInInbox { get; }
    public string JobInDeadLetters { get; }
    public string ListQueueJobs { get; }
    /// <summary>Succeeded-job listings by filter combination: index bit 0 queue, bit 1 batch.</summary>
    public IReadOnlyList<string> ListInboxJobs { get; }
    /// <summary>Dead or cancelled jobs: index 0 of every job queue, 1 of one.</summary>
    public IReadOnlyList<string> ListDeadLetterJobs { get; }
    public string DeleteQueued { get; }
    public string CancelScheduled { get; }

    public const string Savepoint = "SAVEPOINT converge_item";
    public const string RollbackToSavepoint = "ROLLBACK TO converge_item";
    public const string ReleaseSavepoint = "RELEASE converge_item";

    public string Queue { get; }
    public string Inbox { get; }
    public string Log { get; }
    public string Groups { get; }
    public string Projections { get; }
    public string DeadLetters { get; }
    public string Migrations { get; }

    /// <summary>Migration scripts; index 0 is version 1. Append only: never edit a released version.</summary>
    public IReadOnlyList<string> Versions { get; }

    public string CreateMigrations { get; }
    public string CurrentVersion { get; }
    public string RecordVersion { get; }
    public string Enqueue { get; }
    public string EnqueueKeyed { get; }
    public string CompleteForDeadLetter { get; }
    public string HeldKeys { get; }
    public string Requeue { get; }
    public string Claim { get; }
    public string AnyVisible { get; }
    public string NextVisible { get; }
    public string Complete { get; }
    public string RetryLater { get; }
    public string Release { get; }
    public string Renew { get; }
    public string RecordInbox { get; }

    public string ForgetInbox { get; }
    public string PurgeInbox { get; }
    public string PurgeUniqueKeys { get; }
    public string JobQueues { get; }
    public string RegisterJobQueue { get; }
    public string InsertDeadLetter { get; }
    public string ListDeadLetters { get; }
    public string GetDeadLetter { get; }
    public string DeleteDeadLetter { get; }
    public string StreamVersion { get; }
    public string Append { get; }
    public string ReadLog { get; }
    public string ReadStream { get; }
    public string GetGroup { get; }
    public string SaveGroup { get; }
    public string PauseGroup { get; }
    public string DeleteGroup { get; }
    public string QueueStatus { get; }
    public string DeadLetterCounts { get; }
    public string LogHead { get; }
    public string GroupStatus { get; }
    public string InboxCount { get; }

    /// <summary>A table of the application's beside the store's own: behind the same prefix, quoted.</summary>
    public string TableName(string name) => Quote(_prefix + name);

    static string Quote(string identifier) => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";
}
