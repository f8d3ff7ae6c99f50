using Converge.Jobs;

namespace Converge.PostgreSql;

/// <summary>
/// Table names and every statement, built once from the validated schema name. Times are stored as .NET ticks
/// (UTC, 100 ns) in <c>bigint</c> columns: exact round trips, and the same arithmetic as the SQLite store.
/// </summary>
internal sealed class PostgreSqlSchema
{
    public PostgreSqlSchema(string schema)
    {
        Name = schema;
        SchemaName = Quote(schema);
        Queue = Table("queue");
        Inbox = Table("inbox");
        Log = Table("log");
        Groups = Table("consumer_groups");
        Projections = Table("projections");
        DeadLetters = Table("dead_letters");
        Migrations = Table("schema_migrations");
        Sagas = Table("sagas");
        SagaLog = Table("saga_log");
        UniqueKeys = Table("unique_keys");
        JobQueues = Table("job_queues");
        Batches = Table("job_batches");
        Recurring = Table("recurring_jobs");
        Progress = Table("job_progress");
        Cancellations = Table("job_cancellations");
        RateLimits = Table("rate_limits");
        OperatorLog = Table("operator_log");
        Channel = "converge_" + schema;
        const string envelopeColumns = "message_id, message_type, correlation_id, causation_id, sent_at, as_of, headers, body";
        const string envelopeParameters = "@message_id, @message_type, @correlation_id, @causation_id, @sent_at, @as_of, @headers, @body";

        Versions =
        [
            $"""
            CREATE TABLE {Queue} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                queue text NOT NULL,
                priority integer NOT NULL DEFAULT 0,
                visible_at bigint NOT NULL,
                attempts integer NOT NULL DEFAULT 0,
                lease_token uuid,
                message_id uuid NOT NULL,
                message_type text NOT NULL,
                correlation_id text,
                causation_id uuid,
                sent_at bigint NOT NULL,
                as_of bigint,
                headers text,
                body bytea NOT NULL,
                history text);
            CREATE INDEX queue_ready ON {Queue} (queue, priority DESC, visible_at, id);
            CREATE INDEX queue_oldest ON {Queue} (queue, visible_at, id);
            CREATE TABLE {Inbox} (
                consumer text NOT NULL,
                message_id uuid NOT NULL,
                handled_at bigint NOT NULL,
                message_type text,
                correlation_id text,
                causation_id uuid,
                sent_at bigint,
                batch_id text,
                PRIMARY KEY (consumer, message_id));
            CREATE INDEX inbox_handled_at ON {Inbox} (handled_at);
            CREATE INDEX inbox_correlation ON {Inbox} (correlation_id) WHERE correlation_id IS NOT NULL;
            CREATE TABLE {Log} (
                position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                stream text NOT NULL,
                stream_version bigint NOT NULL,
                message_id uuid NOT NULL,
                message_type text NOT NULL,
                correlation_id text,
                causation_id uuid,
                sent_at bigint NOT NULL,
                as_of bigint,
                headers text,
                body bytea NOT NULL,
                UNIQUE (stream, stream_version));
            CREATE INDEX log_correlation ON {Log} (correlation_id) WHERE correlation_id IS NOT NULL;
            CREATE TABLE {Groups} (
                name text PRIMARY KEY,
                position bigint NOT NULL,
                failed_attempts integer NOT NULL DEFAULT 0,
                last_error text,
                updated_at bigint NOT NULL);
            CREATE TABLE {DeadLetters} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                source text NOT NULL,
                priority integer NOT NULL DEFAULT 0,
                message_id uuid NOT NULL,
                message_type text NOT NULL,
                correlation_id text,
                causation_id uuid,
                sent_at bigint NOT NULL,
                as_of bigint,
                headers text,
                body bytea NOT NULL,
                reason text NOT NULL,
                exception text,
                attempts integer NOT NULL,
                history text,
                dead_lettered_at bigint NOT NULL,
                log_position bigint);
            CREATE INDEX dead_letters_source ON {DeadLetters} (source);
            CREATE INDEX dead_letters_correlation ON {DeadLetters} (correlation_id) WHERE correlation_id IS NOT NULL;
            CREATE INDEX dead_letters_message_id ON {DeadLetters} (message_id);
            CREATE TABLE {Sagas} (
                transaction_id text PRIMARY KEY,
                definition text NOT NULL,
                version integer NOT NULL,
                state text NOT NULL,
                step_index integer NOT NULL,
                awaiting uuid,
                step_attempt integer NOT NULL,
                steps text NOT NULL,
                data bytea NOT NULL,
                failure text,
                concurrency_version bigint NOT NULL,
                started_at bigint NOT NULL,
                updated_at bigint NOT NULL);
            CREATE INDEX sagas_state ON {Sagas} (state, started_at);
            CREATE INDEX sagas_definition ON {Sagas} (definition, version, started_at);
            CREATE TABLE {SagaLog} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                transaction_id text NOT NULL,
                at bigint NOT NULL,
                kind text NOT NULL,
                step text,
                message_id uuid,
                message_type text,
                detail text,
                answers uuid);
            CREATE INDEX saga_log_transaction ON {SagaLog} (transaction_id, id);
            CREATE TABLE {JobQueues} (name text PRIMARY KEY);
            CREATE TABLE {UniqueKeys} (
                key text PRIMARY KEY,
                job_id uuid NOT NULL,
                expires_at bigint NOT NULL);
            CREATE TABLE {Batches} (
                id text PRIMARY KEY,
                description text,
                total bigint NOT NULL DEFAULT 0,
                pending bigint NOT NULL DEFAULT 0,
                succeeded bigint NOT NULL DEFAULT 0,
                failed bigint NOT NULL DEFAULT 0,
                sealed boolean NOT NULL DEFAULT false,
                created_at bigint NOT NULL,
                finished_at bigint,
                on_success_queue text,
                on_success_priority integer,
                on_success_message_id uuid,
                on_success_message_type text,
                on_success_correlation_id text,
                on_success_causation_id uuid,
                on_success_sent_at bigint,
                on_success_as_of bigint,
                on_success_headers text,
                on_success_body bytea,
                on_complete_queue text,
                on_complete_priority integer,
                on_complete_message_id uuid,
                on_complete_message_type text,
                on_complete_correlation_id text,
                on_complete_causation_id uuid,
                on_complete_sent_at bigint,
                on_complete_as_of bigint,
                on_complete_headers text,
                on_complete_body bytea);
            CREATE TABLE {Recurring} (
                name text PRIMARY KEY,
                cron text NOT NULL,
                time_zone text NOT NULL,
                queue text NOT NULL,
                message_type text NOT NULL,
                body bytea NOT NULL,
                priority integer NOT NULL DEFAULT 0,
                misfire text NOT NULL,
                next_at bigint NOT NULL,
                last_at bigint);
            CREATE TABLE {Progress} (
                job_id uuid PRIMARY KEY,
                percent integer NOT NULL,
                note text,
                updated_at bigint NOT NULL);
            CREATE TABLE {Cancellations} (
                job_id uuid PRIMARY KEY,
                requested_at bigint NOT NULL);
            CREATE TABLE {RateLimits} (
                queue text PRIMARY KEY,
                tokens double precision NOT NULL,
                refilled_at bigint NOT NULL);
            """,
            $"""
            ALTER TABLE {Sagas}
                ADD COLUMN failed_step text,
                ADD COLUMN last_error text,
                ADD COLUMN stuck_reason text,
                ADD COLUMN timeout_id uuid,
                ADD COLUMN timeout_at bigint,
                ADD COLUMN queue text;
            """,
            $"""
            ALTER TABLE {Queue} ADD COLUMN ordering_key text, ADD COLUMN ordering_seq bigint;
            ALTER TABLE {DeadLetters} ADD COLUMN ordering_key text, ADD COLUMN ordering_seq bigint;
            CREATE INDEX queue_ordering ON {Queue} (queue, ordering_key, ordering_seq, id) WHERE ordering_key IS NOT NULL;
            CREATE INDEX dead_letters_ordering ON {DeadLetters} (source, ordering_key) WHERE ordering_key IS NOT NULL;
            """,
            $"""
            ALTER TABLE {Groups} ADD COLUMN paused boolean NOT NULL DEFAULT false;
            CREATE TABLE {Projections} (
                name text NOT NULL,
                version integer NOT NULL,
                tables text NOT NULL,
                state text NOT NULL,
                started_at bigint NOT NULL,
                built_at bigint,
                built_position bigint,
                live_since bigint,
                PRIMARY KEY (name, version));
            """,
            // Listings for the dashboard, newest first and keyset-paged: one index per filter combination, ending in the
            // order's columns and the tie-breaker, so a page is a short index range wherever it starts. The old saga
            // indexes lacked the tie-breaker; the old dead-letter source index and the inbox's time index are prefixes of
            // their replacements. The inbox orders consumers bytewise (COLLATE "C"), as the listing merges them.
            $"""
            DROP INDEX {SchemaName}.sagas_state;
            DROP INDEX {SchemaName}.sagas_definition;
            CREATE INDEX sagas_newest ON {Sagas} (started_at, transaction_id);
            CREATE INDEX sagas_state_newest ON {Sagas} (state, started_at, transaction_id);
            CREATE INDEX sagas_definition_newest ON {Sagas} (definition, started_at, transaction_id);
            CREATE INDEX sagas_definition_state_newest ON {Sagas} (definition, state, started_at, transaction_id);
            CREATE INDEX sagas_definition_version_newest ON {Sagas} (definition, version, started_at, transaction_id);
            CREATE INDEX sagas_definition_version_state_newest ON {Sagas} (definition, version, state, started_at, transaction_id);
            DROP INDEX {SchemaName}.dead_letters_source;
            CREATE INDEX dead_letters_newest ON {DeadLetters} (dead_lettered_at, id);
            CREATE INDEX dead_letters_source_newest ON {DeadLetters} (source, dead_lettered_at, id);
            CREATE INDEX dead_letters_reason_newest ON {DeadLetters} (reason, dead_lettered_at, id);
            CREATE INDEX dead_letters_reason_source_newest ON {DeadLetters} (reason, source, dead_lettered_at, id);
            CREATE INDEX dead_letters_key_newest ON {DeadLetters} (ordering_key, dead_lettered_at, id) WHERE ordering_key IS NOT NULL;
            DROP INDEX {SchemaName}.inbox_handled_at;
            CREATE INDEX inbox_newest ON {Inbox} (handled_at, consumer COLLATE "C", message_id);
            CREATE INDEX inbox_consumer_newest ON {Inbox} (consumer, handled_at, message_id);
            CREATE INDEX inbox_batch_newest ON {Inbox} (batch_id, handled_at, consumer COLLATE "C", message_id) WHERE batch_id IS NOT NULL;
            CREATE TABLE {OperatorLog} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                at bigint NOT NULL,
                actor text NOT NULL,
                action text NOT NULL,
                target text NOT NULL,
                detail text);
            """,
        ];

        CreateSchema = $"CREATE SCHEMA IF NOT EXISTS {SchemaName}";
        CreateMigrations = $"CREATE TABLE IF NOT EXISTS {Migrations} (version integer PRIMARY KEY, applied_at bigint NOT NULL)";
        CurrentVersion = $"SELECT coalesce(max(version), 0) FROM {Migrations}";
        RecordVersion = $"INSERT INTO {Migrations} (version, applied_at) VALUES (@version, @at)";
        SetSearchPath = $"SET LOCAL search_path TO {SchemaName}";

        Enqueue = $"INSERT INTO {Queue} (queue, priority, visible_at, {envelopeColumns}) VALUES (@queue, @priority, @visible_at, {envelopeParameters})";
        // A keyed row's place in its key: after every row and dead letter of the key it can see, or, retried from the
        // dead letters, the place it had (@dead_letter, the dead letter's id). Two sends of one key that commit at the
        // same time may draw the same place; the row id then decides, as neither send came first.
        EnqueueKeyed = $"""
            INSERT INTO {Queue} (queue, priority, visible_at, ordering_key, ordering_seq, {envelopeColumns})
            VALUES (@queue, @priority, @visible_at, @ordering_key,
                coalesce((SELECT ordering_seq FROM {DeadLetters} WHERE id = @dead_letter),
                    1 + coalesce(greatest(
                        (SELECT max(ordering_seq) FROM {Queue} WHERE queue = @queue AND ordering_key = @ordering_key),
                        (SELECT max(ordering_seq) FROM {DeadLetters} WHERE source = @queue AND ordering_key = @ordering_key)), 0)),
                {envelopeParameters})
            """;
        // Claimable: unkeyed, or the oldest row of its queue and key while no dead letter holds the key. The statement's
        // snapshot sees a head either in the queue or in the dead letters (both change in one transaction), so a
        // concurrent claimer, which skips the head while another holds its lock, still finds it older than the follower
        // and takes neither; a batch takes at most one row per key. The first test decides for unkeyed rows.
        var head = $"""
            (q.ordering_key IS NULL OR (
                NOT EXISTS (SELECT 1 FROM {Queue} h WHERE h.queue = q.queue AND h.ordering_key = q.ordering_key
                    AND (h.ordering_seq < q.ordering_seq OR (h.ordering_seq = q.ordering_seq AND h.id < q.id)))
                AND NOT EXISTS (SELECT 1 FROM {DeadLetters} d WHERE d.source = q.queue AND d.ordering_key = q.ordering_key)))
            """;
        EnqueueMany = $"""
            INSERT INTO {Queue} (queue, priority, visible_at, {envelopeColumns})
            SELECT * FROM unnest(@queues, @priorities, @visible_ats, @message_ids, @message_types, @correlation_ids, @causation_ids, @sent_ats, @as_ofs, @headers, @bodies)
            """;
        RecordInboxMany = $"""
            INSERT INTO {Inbox} (consumer, message_id, handled_at, message_type, correlation_id, causation_id, sent_at, batch_id)
            SELECT @consumer, m.message_id, @at, m.message_type, m.correlation_id, m.causation_id, m.sent_at, m.batch_id
            FROM unnest(@message_ids, @message_types, @correlation_ids, @causation_ids, @sent_ats, @batch_ids) AS m(message_id, message_type, correlation_id, causation_id, sent_at, batch_id)
            ON CONFLICT DO NOTHING RETURNING message_id
            """;
        EnqueueWithHistory = $"INSERT INTO {Queue} (queue, priority, visible_at, attempts, history, {envelopeColumns}) VALUES (@queue, @priority, @visible_at, @attempts, @history, {envelopeParameters})";
        // Saturating: a row whose count is already int's largest must still be claimed (and dead-lettered), not fail the claim.
        const string countAttempt = "CASE WHEN q.attempts < 2147483647 THEN q.attempts + 1 ELSE q.attempts END";
        const string claimed = $"RETURNING q.id, q.priority, q.attempts, q.history, q.message_id, q.message_type, q.correlation_id, q.causation_id, q.sent_at, q.as_of, q.headers, q.body";
        Claim = $"""
            WITH picked AS (
                SELECT q.id FROM {Queue} q WHERE q.queue = @queue AND q.visible_at <= @now AND {head}
                ORDER BY q.priority DESC, q.visible_at, q.id LIMIT @max FOR UPDATE OF q SKIP LOCKED)
            UPDATE {Queue} q SET visible_at = @until, lease_token = @token, attempts = {countAttempt}
            FROM picked WHERE q.id = picked.id
            {claimed}
            """;
        ClaimOldest = $"""
            WITH picked AS (
                SELECT q.id FROM {Queue} q WHERE q.queue = @queue AND q.visible_at <= @now AND {head}
                ORDER BY q.visible_at, q.id LIMIT @max FOR UPDATE OF q SKIP LOCKED)
            UPDATE {Queue} q SET visible_at = @until, lease_token = @token, attempts = {countAttempt}
            FROM picked WHERE q.id = picked.id
            {claimed}
            """;
        AnyVisible = $"SELECT 1 FROM {Queue} q WHERE q.queue = @queue AND q.visible_at <= @now AND {head} LIMIT 1";
        // Rows a held key or an earlier row of their key keeps waiting are not due: a consumer that woke for them would spin.
        NextVisible = $"SELECT q.visible_at FROM {Queue} q WHERE q.queue = @queue AND {head} ORDER BY q.visible_at LIMIT 1";
        CompleteForDeadLetter = $"DELETE FROM {Queue} WHERE id = @id AND lease_token = @token RETURNING ordering_key, ordering_seq";
        Complete = $"DELETE FROM {Queue} WHERE id = @id AND lease_token = @token";
        CompleteMany = $"DELETE FROM {Queue} q USING unnest(@ids, @tokens) AS done(id, token) WHERE q.id = done.id AND q.lease_token = done.token RETURNING q.id";
        RetryLater = $"UPDATE {Queue} SET visible_at = @due, lease_token = NULL, history = @history WHERE id = @id AND lease_token = @token";
        Release = $"UPDATE {Queue} q SET visible_at = @now, lease_token = NULL, attempts = q.attempts - @uncount FROM unnest(@ids, @tokens) AS r(id, token) WHERE q.id = r.id AND q.lease_token = r.token";
        // Rows another transaction holds are being completed or retried by their own committer: skipping them keeps a
        // renewal from deadlocking with that commit (the lease it would have extended ends with the commit anyway).
        Renew = $"""
            UPDATE {Queue} q SET visible_at = @until
            WHERE q.id IN (SELECT l.id FROM {Queue} l JOIN unnest(@ids, @tokens) AS r(id, token) ON l.id = r.id AND l.lease_token = r.token FOR UPDATE OF l SKIP LOCKED)
            """;
        RecordInbox = $"INSERT INTO {Inbox} (consumer, message_id, handled_at, message_type, correlation_id, causation_id, sent_at, batch_id) VALUES (@consumer, @message_id, @at, @message_type, @correlation_id, @causation_id, @sent_at, @batch_id) ON CONFLICT DO NOTHING";
        ForgetInbox = $"DELETE FROM {Inbox} WHERE consumer = @consumer AND message_id = @message_id";
        PurgeInbox = $"DELETE FROM {Inbox} WHERE ctid IN (SELECT ctid FROM {Inbox} WHERE handled_at < @cutoff LIMIT @chunk)";
        PurgeUniqueKeys = $"DELETE FROM {UniqueKeys} WHERE ctid IN (SELECT ctid FROM {UniqueKeys} WHERE expires_at <= @now LIMIT @chunk)";

        InsertDeadLetter = $"""
            INSERT INTO {DeadLetters} (source, priority, {envelopeColumns}, reason, exception, attempts, history, dead_lettered_at, log_position, ordering_key, ordering_seq)
            VALUES (@source, @priority, {envelopeParameters}, @reason, @exception, @attempts, @history, @at, @log_position, @ordering_key, @ordering_seq)
            """;
        const string deadLetterColumns = "id, source, priority, reason, exception, attempts, history, dead_lettered_at, log_position";
        ListDeadLetters = $"SELECT {deadLetterColumns}, {envelopeColumns}, ordering_key FROM {DeadLetters} WHERE (@source::text IS NULL OR source = @source) ORDER BY id DESC LIMIT @max";
        GetDeadLetter = $"SELECT {deadLetterColumns}, {envelopeColumns}, ordering_key FROM {DeadLetters} WHERE id = @id FOR UPDATE";
        DeleteDeadLetter = $"DELETE FROM {DeadLetters} WHERE id = @id";
        PageDeadLetters = [.. Enumerable.Range(0, 8).Select(filters => $"""
            SELECT {deadLetterColumns}, {envelopeColumns}, ordering_key FROM {DeadLetters}
            WHERE {((filters & 1) != 0 ? "source = @source AND " : "")}{((filters & 2) != 0 ? "reason = @reason AND " : "")}{((filters & 4) != 0 ? "ordering_key = @ordering_key AND " : "")}
                (dead_lettered_at, id) < (@t, @id)
            ORDER BY dead_lettered_at DESC, id DESC LIMIT @max
            """)];
        GetDeadLetterForRead = $"SELECT {deadLetterColumns}, {envelopeColumns}, ordering_key FROM {DeadLetters} WHERE id = @id";
        CountActivity = $"""SELECT queue, sum(handled)::bigint, sum(dead_lettered)::bigint FROM (SELECT consumer AS queue, count(*) AS handled, 0 AS dead_lettered FROM {Inbox} WHERE handled_at >= @since GROUP BY consumer UNION ALL SELECT source, 0, count(*) FROM {DeadLetters} WHERE dead_lettered_at >= @since GROUP BY source) AS activity GROUP BY queue ORDER BY queue COLLATE "C" """;
        GroupDeadLetters = $"""SELECT reason, source, count(*), max(dead_lettered_at) FROM {DeadLetters} GROUP BY reason, source ORDER BY reason COLLATE "C", source COLLATE "C" """;
        RecordOperatorAction = $"INSERT INTO {OperatorLog} (at, actor, action, target, detail) VALUES (@at, @actor, @action, @target, @detail) RETURNING id";
        ListOperatorActions = $"SELECT id, at, actor, action, target, detail FROM {OperatorLog} WHERE id < @before ORDER BY id DESC LIMIT @max";

        StreamVersion = $"SELECT coalesce(max(stream_version), 0) FROM {Log} WHERE stream = @stream";
        Append = $"INSERT INTO {Log} (stream, stream_version, {envelopeColumns}) VALUES (@stream, @stream_version, {envelopeParameters}) RETURNING position";
        ReadLog = $"SELECT position, stream, stream_version, {envelopeColumns} FROM {Log} WHERE position > @after ORDER BY position LIMIT @max";
        ReadStream = $"SELECT position, stream, stream_version, {envelopeColumns} FROM {Log} WHERE stream = @stream AND stream_version >= @from ORDER BY stream_version LIMIT @max";
        GetGroup = $"SELECT name, position, failed_attempts, last_error, updated_at, paused FROM {Groups} WHERE name = @name";
        DeleteGroup = $"DELETE FROM {Groups} WHERE name = @name";
        PauseGroup = $"INSERT INTO {Groups} AS g (name, position, failed_attempts, updated_at, paused) VALUES (@name, 0, 0, @at, @paused) ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at";
        SaveGroup = $"""
            INSERT INTO {Groups} AS g (name, position, failed_attempts, last_error, updated_at) VALUES (@name, @position, @failed_attempts, @last_error, @at)
            ON CONFLICT (name) DO UPDATE SET position = excluded.position, failed_attempts = excluded.failed_attempts, last_error = excluded.last_error, updated_at = excluded.updated_at
            WHERE g.position = @expected
            """;

        QueueStatus = $"""
            SELECT queue,
                   count(*) FILTER (WHERE visible_at <= @now),
                   count(*) FILTER (WHERE lease_token IS NULL AND visible_at > @now AND visible_at <= @stranded_after),
                   count(*) FILTER (WHERE lease_token IS NOT NULL AND visible_at > @now),
                   count(*) FILTER (WHERE visible_at > @stranded_after),
                   min(visible_at) FILTER (WHERE visible_at <= @now)
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
        LoadSaga = $"SELECT {sagaColumns} FROM {Sagas} WHERE transaction_id = @transaction_id";
        InsertSaga = $"""
            INSERT INTO {Sagas} ({sagaColumns})
            VALUES (@transaction_id, @definition, @version, @state, @step_index, @awaiting, @step_attempt, @steps, @data, @failure, @concurrency_version, @started_at, @updated_at, @failed_step, @last_error, @stuck_reason, @timeout_id, @timeout_at, @queue)
            ON CONFLICT (transaction_id) DO NOTHING
            """;
        UpdateSaga = $"""
            UPDATE {Sagas} SET state = @state, step_index = @step_index, awaiting = @awaiting, step_attempt = @step_attempt, data = @data,
                failure = @failure, concurrency_version = @concurrency_version, updated_at = @updated_at, failed_step = @failed_step,
                last_error = @last_error, stuck_reason = @stuck_reason, timeout_id = @timeout_id, timeout_at = @timeout_at, queue = @queue
            WHERE transaction_id = @transaction_id AND concurrency_version = @expected
            """;
        // One statement per combination of filters: "@x IS NULL OR x = @x" would keep the planner from the index that
        // serves the combination. Without a cursor, @t is the largest time and every row passes the keyset condition.
        QuerySagas = [.. Enumerable.Range(0, 8).Select(filters => $"""
            SELECT {sagaColumns} FROM {Sagas}
            WHERE {((filters & 1) != 0 ? "state = @state AND " : "")}{((filters & 2) != 0 ? "definition = @definition AND " : "")}{((filters & 4) != 0 ? "version = @version AND " : "")}
                (started_at, transaction_id) < (@t, @id)
            ORDER BY started_at DESC, transaction_id DESC LIMIT @max
            """)];
        CountSagas = $"SELECT definition, version, state, count(*) FROM {Sagas} GROUP BY definition, version, state ORDER BY definition, version, state";
        AppendSagaLog = $"""
            INSERT INTO {SagaLog} (transaction_id, at, kind, step, message_id, message_type, detail, answers)
            SELECT * FROM unnest(@transaction_ids, @ats, @kinds, @steps, @message_ids, @message_types, @details, @answers)
            """;
        ReadSagaLog = $"SELECT id, transaction_id, at, kind, step, message_id, message_type, detail, answers FROM {SagaLog} WHERE transaction_id = @transaction_id ORDER BY id";
        FlowInbox = $"SELECT message_id, message_type, causation_id, sent_at, consumer, handled_at FROM {Inbox} WHERE correlation_id = @correlation_id";
        FlowQueue = $"SELECT message_id, message_type, causation_id, sent_at, queue FROM {Queue} WHERE correlation_id = @correlation_id";
        FlowDeadLetters = $"SELECT message_id, message_type, causation_id, sent_at, source FROM {DeadLetters} WHERE correlation_id = @correlation_id";
        FlowLog = $"SELECT message_id, message_type, causation_id, sent_at, stream FROM {Log} WHERE correlation_id = @correlation_id";

        CountLiveLeases = $"SELECT count(*) FROM {Queue} WHERE queue = @queue AND lease_token IS NOT NULL AND visible_at > @now";
        GetRateLimit = $"SELECT tokens, refilled_at FROM {RateLimits} WHERE queue = @queue";
        SaveRateLimit = $"""
            INSERT INTO {RateLimits} (queue, tokens, refilled_at) VALUES (@queue, @tokens, @refilled_at)
            ON CONFLICT (queue) DO UPDATE SET tokens = excluded.tokens, refilled_at = excluded.refilled_at
            """;

        ReserveUniqueKey = $"""
            INSERT INTO {UniqueKeys} AS u (key, job_id, expires_at) VALUES (@key, @job_id, @expires_at)
            ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id, expires_at = excluded.expires_at WHERE u.expires_at <= @now
            """;
        UniqueKeyHolder = $"SELECT job_id FROM {UniqueKeys} WHERE key = @key";

        const string batchColumns = "id, description, total, pending, succeeded, failed, sealed, created_at, finished_at, "
            + "on_success_queue, on_success_priority, on_success_message_id, on_success_message_type, on_success_correlation_id, on_success_causation_id, on_success_sent_at, on_success_as_of, on_success_headers, on_success_body, "
            + "on_complete_queue, on_complete_priority, on_complete_message_id, on_complete_message_type, on_complete_correlation_id, on_complete_causation_id, on_complete_sent_at, on_complete_as_of, on_complete_headers, on_complete_body";
        CreateBatch = $"""
            INSERT INTO {Batches} ({batchColumns})
            VALUES (@id, @description, 0, 0, 0, 0, false, @created_at, NULL,
                @on_success_queue, @on_success_priority, @on_success_message_id, @on_success_message_type, @on_success_correlation_id, @on_success_causation_id, @on_success_sent_at, @on_success_as_of, @on_success_headers, @on_success_body,
                @on_complete_queue, @on_complete_priority, @on_complete_message_id, @on_complete_message_type, @on_complete_correlation_id, @on_complete_causation_id, @on_complete_sent_at, @on_complete_as_of, @on_complete_headers, @on_complete_body)
            ON CONFLICT (id) DO NOTHING
            """;
        GetBatch = $"SELECT {batchColumns} FROM {Batches} WHERE id = @id";
        AddToBatch = $"UPDATE {Batches} SET total = total + @count, pending = pending + @count WHERE id = @id AND finished_at IS NULL";
        RecordBatchOutcomes = $"""
            UPDATE {Batches} SET pending = pending - (@succeeded + @failed), succeeded = succeeded + @succeeded, failed = failed + @failed
            WHERE id = @id AND finished_at IS NULL
            """;
        SealBatch = $"UPDATE {Batches} SET sealed = true WHERE id = @id";
        FinishBatch = $"UPDATE {Batches} SET finished_at = @now WHERE id = @id AND sealed AND pending <= 0 AND finished_at IS NULL RETURNING {batchColumns}";
        // Jobs counted in, outcomes counted, and the batch finished if that was the last: one statement, so the batch
        // row, which every job of the batch updates, is held from this statement to the commit and no longer.
        var countBatch = $"""
            UPDATE {Batches} SET total = total + @added,
                pending = pending + @added - (@succeeded + @failed), succeeded = succeeded + @succeeded, failed = failed + @failed,
                finished_at = CASE WHEN sealed AND pending + @added - (@succeeded + @failed) <= 0 THEN @now END
            WHERE id = @id AND finished_at IS NULL
            """;
        CountIntoBatch = $"{countBatch} RETURNING {batchColumns}";

        // The same count, and the batch's callbacks enqueued (and announced) by the statement that finishes it, so that
        // the count can go in one round trip with the commit: the batch row is then held for the commit's flush only.
        // One row: how many batches were counted (0: finished or gone), and a queue a callback went to, if any.
        static string CallbackFrom(string prefix, string condition) => $"""
            SELECT {prefix}_queue, {prefix}_priority, @now, {prefix}_message_id, {prefix}_message_type, {prefix}_correlation_id,
                {prefix}_causation_id, {prefix}_sent_at, {prefix}_as_of, {prefix}_headers, {prefix}_body
            FROM counted WHERE finished_at IS NOT NULL AND {prefix}_queue IS NOT NULL{condition}
            """;
        CountIntoBatchWithCallbacks = $"""
            WITH counted AS ({countBatch} RETURNING *),
            callbacks AS (
                INSERT INTO {Queue} (queue, priority, visible_at, {envelopeColumns})
                {CallbackFrom("on_success", " AND failed = 0")}
                UNION ALL
                {CallbackFrom("on_complete", "")}
                RETURNING queue)
            SELECT c.n, q.queue, CASE WHEN q.queue IS NOT NULL THEN pg_notify(@channel, @prefix || q.queue) END
            FROM (SELECT count(*) AS n FROM counted) c LEFT JOIN (SELECT DISTINCT queue FROM callbacks) q ON true
            """;

        const string recurringColumns = "name, cron, time_zone, queue, message_type, body, priority, misfire, next_at, last_at";
        UpsertRecurring = $"""
            INSERT INTO {Recurring} AS r ({recurringColumns}) VALUES (@name, @cron, @time_zone, @queue, @message_type, @body, @priority, @misfire, @next_at, @last_at)
            ON CONFLICT (name) DO UPDATE SET
                next_at = CASE WHEN r.cron = excluded.cron AND r.time_zone = excluded.time_zone THEN r.next_at ELSE excluded.next_at END,
                cron = excluded.cron, time_zone = excluded.time_zone, queue = excluded.queue, message_type = excluded.message_type,
                body = excluded.body, priority = excluded.priority, misfire = excluded.misfire
            """;
        LoadDueRecurring = $"SELECT {recurringColumns} FROM {Recurring} WHERE next_at <= @now ORDER BY next_at, name";
        ListRecurring = $"SELECT {recurringColumns} FROM {Recurring} ORDER BY name";
        AdvanceRecurring = $"UPDATE {Recurring} SET next_at = @next_at, last_at = coalesce(@last_at, last_at) WHERE name = @name AND next_at = @expected";
        RemoveRecurring = $"DELETE FROM {Recurring} WHERE name = @name";

        SaveProgress = $"""
            INSERT INTO {Progress} (job_id, percent, note, updated_at) VALUES (@job_id, @percent, @note, @at)
            ON CONFLICT (job_id) DO UPDATE SET percent = excluded.percent, note = excluded.note, updated_at = excluded.updated_at
            """;
        GetProgress = $"SELECT percent, note FROM {Progress} WHERE job_id = @job_id";
        ForgetJobState = $"DELETE FROM {Progress} WHERE job_id = ANY(@job_ids); DELETE FROM {Cancellations} WHERE job_id = ANY(@job_ids)";
        RequestCancellation = $"INSERT INTO {Cancellations} (job_id, requested_at) VALUES (@job_id, @at) ON CONFLICT (job_id) DO NOTHING";
        ReadCancellations = $"SELECT job_id FROM {Cancellations} WHERE job_id = ANY(@job_ids)";

        // Jobs are queue messages: a job is read back from the queue, then the inbox, then the dead letters. The queue
        // and the inbox have no index on the message id: every enqueue and every handled message would pay for it,
        // while looking a job up by id is a rare, interactive read that can afford a scan.
        const string queueJobColumns = "id, queue, priority, visible_at, attempts, lease_token, history";
        const string inboxJobColumns = "consumer, handled_at, message_type, correlation_id, sent_at, message_id, batch_id";
        var batchOf = $"(headers::jsonb ->> '{Jobs.JobHeaders.Batch}')";
        JobInQueue = $"SELECT {queueJobColumns}, {envelopeColumns} FROM {Queue} WHERE message_id = @message_id ORDER BY id";
        JobInQueueForUpdate = JobInQueue + " FOR UPDATE";
        JobInInbox = $"SELECT {inboxJobColumns} FROM {Inbox} WHERE message_id = @message_id ORDER BY handled_at DESC LIMIT 1";
        JobInDeadLetters = $"SELECT {deadLetterColumns}, {envelopeColumns} FROM {DeadLetters} WHERE message_id = @message_id AND log_position IS NULL ORDER BY id DESC LIMIT 1";
        ListQueueJobs = $"""
            SELECT {queueJobColumns}, {envelopeColumns} FROM {Queue}
            WHERE (@queue::text IS NULL OR queue = @queue) AND queue IN (SELECT name FROM {JobQueues}) AND (@batch::text IS NULL OR {batchOf} = @batch)
              AND (@state::text IS NULL
                   OR (@state = 'scheduled' AND lease_token IS NULL AND visible_at > @now)
                   OR (@state = 'enqueued' AND visible_at <= @now)
                   OR (@state = 'processing' AND lease_token IS NOT NULL AND visible_at > @now))
              AND (sent_at, id) < (@t, @n)
            ORDER BY sent_at DESC, id DESC LIMIT @max
            """;
        // Succeeded jobs are most of the jobs a store holds (a million is ordinary): each filter has its own statement
        // and index. @tie_all says every row at the cursor's time comes after it (the cursor is a queue or dead-letter job).
        ListInboxJobs = [.. Enumerable.Range(0, 4).Select(filters => $"""
            SELECT {inboxJobColumns} FROM {Inbox}
            WHERE {((filters & 1) != 0 ? "consumer = @queue AND " : "")}{((filters & 2) != 0 ? "batch_id = @batch AND " : "")}consumer IN (SELECT name FROM {JobQueues})
                AND handled_at <= @t AND (handled_at < @t OR @tie_all OR (consumer COLLATE "C", message_id) < (@consumer, @message_id))
            ORDER BY handled_at DESC, consumer COLLATE "C" DESC, message_id DESC LIMIT @max
            """)];
        RegisterJobQueue = $"INSERT INTO {JobQueues} (name) VALUES (@name) ON CONFLICT DO NOTHING";
        ListDeadLetterJobs = $"""
            SELECT {deadLetterColumns}, {envelopeColumns} FROM {DeadLetters}
            WHERE log_position IS NULL AND (@queue::text IS NULL OR source = @queue) AND source IN (SELECT name FROM {JobQueues}) AND (@batch::text IS NULL OR {batchOf} = @batch)
              AND (@cancelled::boolean IS NULL OR (reason = '{Storage.DeadLetterReasons.Cancelled}') = @cancelled)
              AND (dead_lettered_at, id) < (@t, @n)
            ORDER BY dead_lettered_at DESC, id DESC LIMIT @max
            """;
        DeleteQueued = $"DELETE FROM {Queue} WHERE id = @id RETURNING ordering_key, ordering_seq";
        CancelScheduled = $"DELETE FROM {Queue} WHERE queue = @queue AND visible_at = @visible_at AND message_id = @message_id AND lease_token IS NULL";
    }

    /// <summary>The schema name as configured (validated: safe to embed).</summary>
    public string Name { get; }

    /// <summary>The quoted schema name.</summary>
    public string SchemaName { get; }

    /// <summary>The <c>LISTEN/NOTIFY</c> channel of this schema.</summary>
    public string Channel { get; }

    public string Queue { get; }
    public string Inbox { get; }
    public string Log { get; }
    public string Groups { get; }
    public string Projections { get; }
    public string DeadLetters { get; }
    public string Migrations { get; }
    public string Sagas { get; }
    public string SagaLog { get; }
    public string UniqueKeys { get; }
    public string JobQueues { get; }
    public string Batches { get; }
    public string Recurring { get; }
    public string Progress { get; }
    public string Cancellations { get; }
    public string RateLimits { get; }

    /// <summary>Makes the rest of the transaction's statements walk an index in order rather than sort (see ClaimRowsAsync).</summary>
    public static readonly string[] PinClaimPlan = ["SET LOCAL enable_sort = off", "SET LOCAL enable_bitmapscan = off"];

    /// <summary>Undoes <see cref="PinClaimPlan"/> for the statements that follow in the same transaction.</summary>
    public static readonly string[] UnpinClaimPlan = ["SET LOCAL enable_sort TO DEFAULT", "SET LOCAL enable_bitmapscan TO DEFAULT"];

    /// <summary>Migration scripts; index 0 is version 1. Append only: never edit a released version.</summary>
    public IReadOnlyList<string> Versions { get; }

    public string CreateSchema { get; }
    public string CreateMigrations { get; }
    public string CurrentVersion { get; }
    public string RecordVersion { get; }
    public string SetSearchPath { get; }
    public string Enqueue { get; }
    public string EnqueueKeyed { get; }
    public string CompleteForDeadLetter { get; }
    public string HeldKeys { get; }
    public string EnqueueWithHistory { get; }
    public string EnqueueMany { get; }
    public string RecordInboxMany { get; }
    public string Claim { get; }
    public string ClaimOldest { get; }
    public string AnyVisible { get; }
    public string NextVisible { get; }
    public string Complete { get; }
    public string CompleteMany { get; }
    public string RetryLater { get; }
    public string Release { get; }
    public string Renew { get; }
    public string RecordInbox { get; }

    public string ForgetInbox { get; }
    public string PurgeInbox { get; }
    public string PurgeUniqueKeys { get; }
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
    public string LoadSaga { get; }
    public string InsertSaga { get; }
    public string UpdateSaga { get; }
    /// <summary>Saga listings by filter combination: index bit 0 state, bit 1 definition, bit 2 version.</summary>
    public IReadOnlyList<string> QuerySagas { get; }

    /// <summary>Dead-letter pages by filter combination: index bit 0 source, bit 1 reason, bit 2 ordering key.</summary>
    public IReadOnlyList<string> PageDeadLetters { get; }
    public string GetDeadLetterForRead { get; }
    public string GroupDeadLetters { get; }

    public string CountActivity { get; }
    public string OperatorLog { get; }
    public string RecordOperatorAction { get; }
    public string ListOperatorActions { get; }
    public string CountSagas { get; }
    public string AppendSagaLog { get; }
    public string ReadSagaLog { get; }
    public string FlowInbox { get; }
    public string FlowQueue { get; }
    public string FlowDeadLetters { get; }
    public string FlowLog { get; }
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
    public string CountIntoBatch { get; }

    public string CountIntoBatchWithCallbacks { get; }
    public string UpsertRecurring { get; }
    public string LoadDueRecurring { get; }
    public string ListRecurring { get; }
    public string AdvanceRecurring { get; }
    public string RemoveRecurring { get; }
    public string SaveProgress { get; }
    public string GetProgress { get; }
    public string ForgetJobState { get; }
    public string RequestCancellation { get; }
    public string ReadCancellations { get; }
    public string JobInQueue { get; }
    public string JobInQueueForUpdate { get; }
    public string JobInInbox { get; }
    public string JobInDeadLetters { get; }
    public string ListQueueJobs { get; }
    /// <summary>Succeeded-job listings by filter combination: index bit 0 queue, bit 1 batch.</summary>
    public IReadOnlyList<string> ListInboxJobs { get; }
    public string RegisterJobQueue { get; }
    public string ListDeadLetterJobs { get; }
    public string DeleteQueued { get; }
    public string CancelScheduled { get; }

    public const string Savepoint = "SAVEPOINT converge_item";
    public const string RollbackToSavepoint = "ROLLBACK TO SAVEPOINT converge_item; RELEASE SAVEPOINT converge_item";
    public const string ReleaseSavepoint = "RELEASE SAVEPOINT converge_item";

    string Table(string name) => SchemaName + "." + Quote(name);

    /// <summary>A table of the application's beside the store's own: in the same schema, quoted.</summary>
    public string TableName(string name) => Table(name);

    /// <summary>Quotes an identifier; the schema name is validated too, so this is belt and braces.</summary>
    public static string Quote(string identifier) => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";
}
