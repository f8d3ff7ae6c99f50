using Microsoft.Data.Sqlite;

namespace Converge.Samples.Billing.Simulation;

/// <summary>
/// A charge request. <paramref name="Reference"/> is the merchant's own reference (the invoice id);
/// <paramref name="AccountId"/> and <paramref name="Period"/> say what the charge is for (the metadata a merchant
/// attaches to a charge), so the ledger can tell two charges for one account and period apart from the keys.
/// </summary>
public sealed record ChargeRequest(string IdempotencyKey, string CardToken, long AmountCents, string Currency, string Reference, long AccountId, string Period);

/// <summary>The provider's answer: <c>succeeded</c> (money moved) or <c>declined</c> (permanently; retrying cannot help).</summary>
/// <param name="Replayed"><c>true</c> when the key was seen before: this is the original answer, nothing happened now.</param>
public sealed record Charge(string Id, string Status, long AmountCents, string? DeclineCode, bool Replayed)
{
    public bool Succeeded => Status == "succeeded";
}

/// <summary>HTTP 429: too many calls this second. Try again after <see cref="RetryAfter"/>.</summary>
public sealed class ProviderThrottledException : Exception
{
    public ProviderThrottledException(TimeSpan retryAfter)
        : base($"429 Too Many Requests: retry after {retryAfter.TotalMilliseconds:0} ms.") => RetryAfter = retryAfter;

    public ProviderThrottledException() : this(TimeSpan.FromSeconds(1)) { }

    public ProviderThrottledException(string message) : base(message) { }

    public ProviderThrottledException(string message, Exception innerException) : base(message, innerException) { }

    public TimeSpan RetryAfter { get; }
}

/// <summary>HTTP 503: the provider is briefly unavailable. Transient; nothing was charged.</summary>
public sealed class ProviderUnavailableException : Exception
{
    public ProviderUnavailableException() : base("503 Service Unavailable: the payment provider is having a short outage.") { }

    public ProviderUnavailableException(string message) : base(message) { }

    public ProviderUnavailableException(string message, Exception innerException) : base(message, innerException) { }
}

/// <summary>Settings of the simulated provider.</summary>
public sealed class PaymentProviderOptions
{
    /// <summary>Its ledger: a SQLite file of its own, not the store's.</summary>
    public required string LedgerPath { get; init; }

    /// <summary>Time per call; each call adds a seeded jitter of up to half of it either way.</summary>
    public TimeSpan Latency { get; init; } = TimeSpan.FromMilliseconds(20);

    /// <summary>More calls than this within one second are refused with <see cref="ProviderThrottledException"/>.</summary>
    public int CallsPerSecond { get; init; } = 2000;

    /// <summary>Every this long the provider is down for <see cref="OutageLength"/>; <see cref="TimeSpan.Zero"/> for never.</summary>
    public TimeSpan OutageEvery { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>How long each outage lasts.</summary>
    public TimeSpan OutageLength { get; init; } = TimeSpan.FromMilliseconds(300);

    /// <summary>Seeds the jitter and where in each period the outage falls.</summary>
    public int Seed { get; init; } = 42;
}

/// <summary>What the provider's ledger holds, read from its file.</summary>
/// <param name="DoubleCharges">
/// Accounts charged successfully more than once for one period, whatever the keys and references: must be 0.
/// </param>
/// <param name="Replays">Calls answered from an earlier call with the same idempotency key.</param>
/// <param name="Throttled">Calls refused with 429, by every instance that used the ledger.</param>
/// <param name="Unavailable">Calls refused with 503, by every instance that used the ledger.</param>
public sealed record LedgerSummary(long Charges, long CollectedCents, long Declines, long DoubleCharges, long Replays, long Throttled, long Unavailable);

/// <summary>
/// A simulated card payment provider outside the store: it keeps its own ledger in its own SQLite file and honours
/// idempotency keys (a repeated key returns the first answer and moves no money), as real providers do. It answers
/// after a latency, throttles with 429 above <see cref="PaymentProviderOptions.CallsPerSecond"/>, has short outages
/// (503) at fixed moments, and permanently declines cards whose token starts with <c>tok_declined_</c>. Its ledger
/// writes go through one <see cref="SerialWriter{TState}"/>, so thousands of concurrent charges a second commit in
/// a few transactions.
/// </summary>
public sealed class PaymentProvider : IAsyncDisposable, IDisposable
{
    static readonly string[] Schema =
    [
        """
        CREATE TABLE IF NOT EXISTS charges (
            id TEXT PRIMARY KEY,
            idempotency_key TEXT NOT NULL UNIQUE,
            reference TEXT NOT NULL,
            account_id INTEGER NOT NULL,
            period TEXT NOT NULL,
            card_token TEXT NOT NULL,
            amount_cents INTEGER NOT NULL,
            currency TEXT NOT NULL,
            status TEXT NOT NULL,
            decline_code TEXT,
            created_at INTEGER NOT NULL,
            replays INTEGER NOT NULL DEFAULT 0)
        """,
        "CREATE INDEX IF NOT EXISTS charges_reference ON charges (reference)",
        "CREATE INDEX IF NOT EXISTS charges_subject ON charges (period, account_id)",

        // Calls refused with 429 or 503, per status: several processes may serve the provider's callers, and their
        // counts add up here.
        "CREATE TABLE IF NOT EXISTS refusals (status INTEGER PRIMARY KEY, calls INTEGER NOT NULL)",
    ];

    readonly PaymentProviderOptions _options;
    readonly TimeProvider _clock;
    readonly SerialWriter<Commands> _writer;
    readonly Random _jitter;
    readonly Lock _gate = new();
    readonly long _outageOffset;
    long _windowSecond;
    int _windowCalls;
    long _throttled;
    long _unavailable;

    public PaymentProvider(PaymentProviderOptions options, TimeProvider clock)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        _clock = clock;
        _jitter = new Random(options.Seed);
        _outageOffset = options.OutageEvery > TimeSpan.Zero ? new Random(options.Seed ^ 0x0FF).NextInt64((long)options.OutageEvery.TotalMilliseconds) : 0;
        _writer = new SerialWriter<Commands>(options.LedgerPath, Schema, connection => new Commands(connection));
    }

    /// <summary>Calls refused with 429 by this instance (<see cref="ReadSummary"/> counts those of every instance).</summary>
    public long Throttled => Interlocked.Read(ref _throttled);

    /// <summary>Calls refused with 503 by this instance (<see cref="ReadSummary"/> counts those of every instance).</summary>
    public long Unavailable => Interlocked.Read(ref _unavailable);

    /// <summary>Charges the card, or returns the answer already given for the same idempotency key.</summary>
    /// <exception cref="ProviderThrottledException">More than the allowed calls arrived this second.</exception>
    /// <exception cref="ProviderUnavailableException">An outage: nothing was charged; try again shortly.</exception>
    public async Task<Charge> ChargeAsync(ChargeRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        await Task.Delay(NextLatency(), _clock, cancellationToken);
        var now = _clock.GetUtcNow().ToUnixTimeMilliseconds();
        if (InOutage(now))
        {
            Interlocked.Increment(ref _unavailable);
            await _writer.WriteAsync((commands, transaction) => commands.CountRefusal(transaction, 503), cancellationToken);
            throw new ProviderUnavailableException();
        }

        if (Throttle(now) is { } retryAfter)
        {
            Interlocked.Increment(ref _throttled);
            await _writer.WriteAsync((commands, transaction) => commands.CountRefusal(transaction, 429), cancellationToken);
            throw new ProviderThrottledException(retryAfter);
        }

        return await _writer.WriteAsync((commands, transaction) => commands.Charge(transaction, request, now), cancellationToken);
    }

    TimeSpan NextLatency()
    {
        if (_options.Latency <= TimeSpan.Zero)
        {
            return TimeSpan.Zero;
        }

        double factor;
        lock (_gate)
        {
            factor = 0.5 + _jitter.NextDouble();
        }

        return _options.Latency * factor;
    }

    bool InOutage(long nowMs)
    {
        var every = (long)_options.OutageEvery.TotalMilliseconds;
        return every > 0 && (nowMs + _outageOffset) % every < (long)_options.OutageLength.TotalMilliseconds;
    }

    /// <summary>Counts the call in the current second; returns how long to wait when it is one too many.</summary>
    TimeSpan? Throttle(long nowMs)
    {
        var second = nowMs / 1000;
        lock (_gate)
        {
            if (second != _windowSecond)
            {
                _windowSecond = second;
                _windowCalls = 0;
            }

            if (++_windowCalls <= _options.CallsPerSecond)
            {
                return null;
            }
        }

        return TimeSpan.FromMilliseconds(((second + 1) * 1000) - nowMs);
    }

    /// <summary>Reads the summary of the ledger at <paramref name="ledgerPath"/> (after the provider stopped, or beside it).</summary>
    public static LedgerSummary ReadSummary(string ledgerPath)
    {
        if (!File.Exists(ledgerPath))
        {
            return new LedgerSummary(0, 0, 0, 0, 0, 0, 0);
        }

        using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = ledgerPath, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString());
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = """
            SELECT
                (SELECT count(*) FROM charges WHERE status = 'succeeded'),
                (SELECT coalesce(sum(amount_cents), 0) FROM charges WHERE status = 'succeeded'),
                (SELECT count(*) FROM charges WHERE status = 'declined'),
                (SELECT count(*) FROM (SELECT 1 FROM charges WHERE status = 'succeeded' GROUP BY account_id, period HAVING count(*) > 1)),
                (SELECT coalesce(sum(replays), 0) FROM charges),
                (SELECT coalesce(sum(calls), 0) FROM refusals WHERE status = 429),
                (SELECT coalesce(sum(calls), 0) FROM refusals WHERE status = 503)
            """;
        using var reader = command.ExecuteReader();
        reader.Read();
        return new LedgerSummary(reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetInt64(4), reader.GetInt64(5), reader.GetInt64(6));
    }

    public ValueTask DisposeAsync() => _writer.DisposeAsync();

    /// <summary>For hosts disposed synchronously: waits for the queued writes, then closes the file.</summary>
    public void Dispose() => _writer.Dispose();

    /// <summary>The ledger's prepared statements; used only by the writer loop.</summary>
    sealed class Commands : IDisposable
    {
        readonly SqliteCommand _find;
        readonly SqliteCommand _replay;
        readonly SqliteCommand _insert;
        readonly SqliteCommand _refusal;

        public Commands(SqliteConnection connection)
        {
            _refusal = Prepare(connection, "INSERT INTO refusals (status, calls) VALUES ($status, 1) ON CONFLICT (status) DO UPDATE SET calls = calls + 1", "$status");
            _find = Prepare(connection, "SELECT id, status, amount_cents, decline_code FROM charges WHERE idempotency_key = $key", "$key");
            _replay = Prepare(connection, "UPDATE charges SET replays = replays + 1 WHERE idempotency_key = $key", "$key");
            _insert = Prepare(
                connection,
                "INSERT INTO charges (id, idempotency_key, reference, account_id, period, card_token, amount_cents, currency, status, decline_code, created_at) VALUES ($id, $key, $reference, $account, $period, $card, $amount, $currency, $status, $decline, $at)",
                "$id", "$key", "$reference", "$account", "$period", "$card", "$amount", "$currency", "$status", "$decline", "$at");
        }

        public Charge Charge(SqliteTransaction transaction, ChargeRequest request, long now)
        {
            _find.Transaction = transaction;
            _find.Parameters["$key"].Value = request.IdempotencyKey;
            using (var reader = _find.ExecuteReader())
            {
                if (reader.Read())
                {
                    var earlier = new Charge(reader.GetString(0), reader.GetString(1), reader.GetInt64(2), reader.IsDBNull(3) ? null : reader.GetString(3), Replayed: true);
                    reader.Close();
                    _replay.Transaction = transaction;
                    _replay.Parameters["$key"].Value = request.IdempotencyKey;
                    _replay.ExecuteNonQuery();
                    return earlier;
                }
            }

            var declined = request.CardToken.StartsWith("tok_declined_", StringComparison.Ordinal);
            var charge = new Charge(
                (declined ? "dc_" : "ch_") + Guid.NewGuid().ToString("N")[..20],
                declined ? "declined" : "succeeded",
                declined ? 0 : request.AmountCents,
                declined ? "card_declined" : null,
                Replayed: false);
            _insert.Transaction = transaction;
            var p = _insert.Parameters;
            p["$id"].Value = charge.Id;
            p["$key"].Value = request.IdempotencyKey;
            p["$reference"].Value = request.Reference;
            p["$account"].Value = request.AccountId;
            p["$period"].Value = request.Period;
            p["$card"].Value = request.CardToken;
            p["$amount"].Value = charge.AmountCents;
            p["$currency"].Value = request.Currency;
            p["$status"].Value = charge.Status;
            p["$decline"].Value = (object?)charge.DeclineCode ?? DBNull.Value;
            p["$at"].Value = now;
            _insert.ExecuteNonQuery();
            return charge;
        }

        public bool CountRefusal(SqliteTransaction transaction, int status)
        {
            _refusal.Transaction = transaction;
            _refusal.Parameters["$status"].Value = status;
            _refusal.ExecuteNonQuery();
            return true;
        }

        static SqliteCommand Prepare(SqliteConnection connection, string sql, params string[] parameters)
        {
            var command = connection.CreateCommand();
            command.CommandText = sql;
            foreach (var name in parameters)
            {
                command.Parameters.Add(new SqliteParameter { ParameterName = name });
            }

            return command;
        }

        public void Dispose()
        {
            _find.Dispose();
            _replay.Dispose();
            _insert.Dispose();
            _refusal.Dispose();
        }
    }
}
