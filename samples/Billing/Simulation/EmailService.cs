using Microsoft.Data.Sqlite;

namespace Converge.Samples.Billing.Simulation;

/// <summary>An email to send. <paramref name="Reference"/> is what it is about (the invoice id), for counting duplicates.</summary>
public sealed record OutgoingEmail(string IdempotencyKey, string To, string Language, string Subject, string Body, string Reference);

/// <summary>The service's answer: the message id, and whether the key had been sent before (nothing was sent now).</summary>
public sealed record SentEmail(string Id, bool Replayed);

/// <summary>What the email service's store holds.</summary>
/// <param name="DuplicateEmails">Emails beyond the first about the same reference: must be 0.</param>
public sealed record MailboxSummary(long Emails, IReadOnlyDictionary<string, long> ByLanguage, long DuplicateEmails, long Replays);

/// <summary>
/// A simulated transactional email service outside the store: it records every email it sends in its own SQLite
/// file, so duplicates can be counted, and honours idempotency keys (a repeated key sends nothing and returns the
/// first message id).
/// </summary>
public sealed class EmailService : IAsyncDisposable, IDisposable
{
    static readonly string[] Schema =
    [
        """
        CREATE TABLE IF NOT EXISTS emails (
            id TEXT PRIMARY KEY,
            idempotency_key TEXT NOT NULL UNIQUE,
            reference TEXT NOT NULL,
            recipient TEXT NOT NULL,
            language TEXT NOT NULL,
            subject TEXT NOT NULL,
            body TEXT NOT NULL,
            sent_at INTEGER NOT NULL,
            replays INTEGER NOT NULL DEFAULT 0)
        """,
        "CREATE INDEX IF NOT EXISTS emails_reference ON emails (reference)",
    ];

    readonly TimeSpan _latency;
    readonly TimeProvider _clock;
    readonly SerialWriter<Commands> _writer;

    public EmailService(string path, TimeSpan latency, TimeProvider clock)
    {
        _latency = latency;
        _clock = clock;
        _writer = new SerialWriter<Commands>(path, Schema, connection => new Commands(connection));
    }

    /// <summary>Sends <paramref name="email"/> unless its idempotency key was sent before.</summary>
    public async Task<SentEmail> SendAsync(OutgoingEmail email, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(email);
        if (_latency > TimeSpan.Zero)
        {
            await Task.Delay(_latency, _clock, cancellationToken);
        }

        var now = _clock.GetUtcNow().ToUnixTimeMilliseconds();
        return await _writer.WriteAsync((commands, transaction) => commands.Send(transaction, email, now), cancellationToken);
    }

    /// <summary>Reads the summary of the store at <paramref name="path"/>.</summary>
    public static MailboxSummary ReadSummary(string path)
    {
        if (!File.Exists(path))
        {
            return new MailboxSummary(0, new Dictionary<string, long>(), 0, 0);
        }

        using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString());
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT language, count(*) FROM emails GROUP BY language ORDER BY language";
        var byLanguage = new SortedDictionary<string, long>(StringComparer.Ordinal);
        using (var reader = command.ExecuteReader())
        {
            while (reader.Read())
            {
                byLanguage[reader.GetString(0)] = reader.GetInt64(1);
            }
        }

        command.CommandText = """
            SELECT
                (SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM emails GROUP BY reference HAVING count(*) > 1)),
                (SELECT coalesce(sum(replays), 0) FROM emails)
            """;
        using var totals = command.ExecuteReader();
        totals.Read();
        return new MailboxSummary(byLanguage.Values.Sum(), byLanguage, totals.GetInt64(0), totals.GetInt64(1));
    }

    public ValueTask DisposeAsync() => _writer.DisposeAsync();

    /// <summary>For hosts disposed synchronously: waits for the queued writes, then closes the file.</summary>
    public void Dispose() => _writer.Dispose();

    sealed class Commands : IDisposable
    {
        readonly SqliteCommand _find;
        readonly SqliteCommand _replay;
        readonly SqliteCommand _insert;

        public Commands(SqliteConnection connection)
        {
            _find = connection.CreateCommand();
            _find.CommandText = "SELECT id FROM emails WHERE idempotency_key = $key";
            _find.Parameters.Add(new SqliteParameter { ParameterName = "$key" });
            _replay = connection.CreateCommand();
            _replay.CommandText = "UPDATE emails SET replays = replays + 1 WHERE idempotency_key = $key";
            _replay.Parameters.Add(new SqliteParameter { ParameterName = "$key" });
            _insert = connection.CreateCommand();
            _insert.CommandText = "INSERT INTO emails (id, idempotency_key, reference, recipient, language, subject, body, sent_at) VALUES ($id, $key, $reference, $to, $language, $subject, $body, $at)";
            foreach (var name in new[] { "$id", "$key", "$reference", "$to", "$language", "$subject", "$body", "$at" })
            {
                _insert.Parameters.Add(new SqliteParameter { ParameterName = name });
            }
        }

        public SentEmail Send(SqliteTransaction transaction, OutgoingEmail email, long now)
        {
            _find.Transaction = transaction;
            _find.Parameters["$key"].Value = email.IdempotencyKey;
            if (_find.ExecuteScalar() is string earlier)
            {
                _replay.Transaction = transaction;
                _replay.Parameters["$key"].Value = email.IdempotencyKey;
                _replay.ExecuteNonQuery();
                return new SentEmail(earlier, Replayed: true);
            }

            var id = "msg_" + Guid.NewGuid().ToString("N")[..20];
            _insert.Transaction = transaction;
            var p = _insert.Parameters;
            p["$id"].Value = id;
            p["$key"].Value = email.IdempotencyKey;
            p["$reference"].Value = email.Reference;
            p["$to"].Value = email.To;
            p["$language"].Value = email.Language;
            p["$subject"].Value = email.Subject;
            p["$body"].Value = email.Body;
            p["$at"].Value = now;
            _insert.ExecuteNonQuery();
            return new SentEmail(id, Replayed: false);
        }

        public void Dispose()
        {
            _find.Dispose();
            _replay.Dispose();
            _insert.Dispose();
        }
    }
}
