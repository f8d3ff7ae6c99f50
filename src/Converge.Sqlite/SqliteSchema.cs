namespace Converge.Sqlite;

/// <summary>Table names and every statement, built once from the validated prefix.</summary>
internal sealed class SqliteSchema
{
    public SqliteSchema(string prefix)
    {
        Queue = Quote(prefix + "queue");
        Inbox = Quote(prefix + "inbox");
        Log = Quote(prefix + "log");
        Groups = Quote(prefix + "consumer_groups");
        DeadLetters = Quote(prefix + "dead_letters");
        Migrations = Quote(prefix + "schema_migrations");
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
        ];

        CreateMigrations = $"CREATE TABLE IF NOT EXISTS {Migrations} (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)";
        CurrentVersion = $"SELECT coalesce(max(version), 0) FROM {Migrations}";
        RecordVersion = $"INSERT INTO {Migrations} (version, applied_at) VALUES ($version, $at)";

        Enqueue = $"INSERT INTO {Queue} (queue, priority, visible_at, {envelopeColumns}) VALUES ($queue, $priority, $visible_at, $message_id, $message_type, $correlation_id, $causation_id, $sent_at, $as_of, $headers, $body)";
        Claim = $"""
            UPDATE {Queue} SET visible_at = $until, lease_token = $token, attempts = attempts + 1
            WHERE id IN (SELECT id FROM {Queue} WHERE queue = $queue AND visible_at <= $now ORDER BY priority DESC, visible_at LIMIT $max)
            RETURNING id, priority, attempts, history, {envelopeColumns}
            """;
        AnyVisible = $"SELECT 1 FROM {Queue} WHERE queue = $queue AND visible_at <= $now LIMIT 1";
        NextVisible = $"SELECT min(visible_at) FROM {Queue} WHERE queue = $queue";
        Complete = $"DELETE FROM {Queue} WHERE id = $id AND lease_token = $token";
        RetryLater = $"UPDATE {Queue} SET visible_at = $due, lease_token = NULL, history = $history WHERE id = $id AND lease_token = $token";
        Release = $"UPDATE {Queue} SET visible_at = $now, lease_token = NULL, attempts = attempts - $uncount WHERE id = $id AND lease_token = $token";
        Renew = $"UPDATE {Queue} SET visible_at = $until WHERE id = $id AND lease_token = $token";
        RecordInbox = $"INSERT INTO {Inbox} (consumer, message_id, handled_at) VALUES ($consumer, $message_id, $at) ON CONFLICT DO NOTHING";
        PurgeInbox = $"DELETE FROM {Inbox} WHERE (consumer, message_id) IN (SELECT consumer, message_id FROM {Inbox} WHERE handled_at < $cutoff LIMIT $chunk)";

        InsertDeadLetter = $"""
            INSERT INTO {DeadLetters} (source, priority, {envelopeColumns}, reason, exception, attempts, history, dead_lettered_at, log_position)
            VALUES ($source, $priority, $message_id, $message_type, $correlation_id, $causation_id, $sent_at, $as_of, $headers, $body, $reason, $exception, $attempts, $history, $at, $log_position)
            """;
        ListDeadLetters = $"SELECT id, source, priority, reason, exception, attempts, history, dead_lettered_at, log_position, {envelopeColumns} FROM {DeadLetters} WHERE ($source IS NULL OR source = $source) ORDER BY id DESC LIMIT $max";
        GetDeadLetter = $"SELECT id, source, priority, reason, exception, attempts, history, dead_lettered_at, log_position, {envelopeColumns} FROM {DeadLetters} WHERE id = $id";
        DeleteDeadLetter = $"DELETE FROM {DeadLetters} WHERE id = $id";

        StreamVersion = $"SELECT coalesce(max(stream_version), 0) FROM {Log} WHERE stream = $stream";
        Append = $"INSERT INTO {Log} (stream, stream_version, {envelopeColumns}) VALUES ($stream, $stream_version, $message_id, $message_type, $correlation_id, $causation_id, $sent_at, $as_of, $headers, $body) RETURNING position";
        ReadLog = $"SELECT position, stream, stream_version, {envelopeColumns} FROM {Log} WHERE position > $after ORDER BY position LIMIT $max";
        ReadStream = $"SELECT position, stream, stream_version, {envelopeColumns} FROM {Log} WHERE stream = $stream AND stream_version >= $from ORDER BY stream_version LIMIT $max";
        GetGroup = $"SELECT name, position, failed_attempts, last_error, updated_at FROM {Groups} WHERE name = $name";
        SaveGroup = $"""
            INSERT INTO {Groups} (name, position, failed_attempts, last_error, updated_at) VALUES ($name, $position, $failed_attempts, $last_error, $at)
            ON CONFLICT (name) DO UPDATE SET position = excluded.position, failed_attempts = excluded.failed_attempts, last_error = excluded.last_error, updated_at = excluded.updated_at
            WHERE position = $expected
            """;

        QueueStatus = $"""
            SELECT queue,
                   sum(visible_at <= $now),
                   sum(lease_token IS NULL AND visible_at > $now),
                   sum(lease_token IS NOT NULL AND visible_at > $now)
            FROM {Queue} GROUP BY queue
            """;
        DeadLetterCounts = $"SELECT source, count(*) FROM {DeadLetters} GROUP BY source";
        LogHead = $"SELECT coalesce(max(position), 0) FROM {Log}";
        GroupStatus = $"SELECT name, position, failed_attempts, last_error FROM {Groups} ORDER BY name";
        InboxCount = $"SELECT count(*) FROM {Inbox}";
    }

    public const string Savepoint = "SAVEPOINT converge_item";
    public const string RollbackToSavepoint = "ROLLBACK TO converge_item";
    public const string ReleaseSavepoint = "RELEASE converge_item";

    public string Queue { get; }
    public string Inbox { get; }
    public string Log { get; }
    public string Groups { get; }
    public string DeadLetters { get; }
    public string Migrations { get; }

    /// <summary>Migration scripts; index 0 is version 1. Append only: never edit a released version.</summary>
    public IReadOnlyList<string> Versions { get; }

    public string CreateMigrations { get; }
    public string CurrentVersion { get; }
    public string RecordVersion { get; }
    public string Enqueue { get; }
    public string Claim { get; }
    public string AnyVisible { get; }
    public string NextVisible { get; }
    public string Complete { get; }
    public string RetryLater { get; }
    public string Release { get; }
    public string Renew { get; }
    public string RecordInbox { get; }
    public string PurgeInbox { get; }
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
    public string QueueStatus { get; }
    public string DeadLetterCounts { get; }
    public string LogHead { get; }
    public string GroupStatus { get; }
    public string InboxCount { get; }

    static string Quote(string identifier) => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";
}
