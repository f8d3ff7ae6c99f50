using Microsoft.Data.Sqlite;

namespace Converge.Samples.Shop.Payments;

/// <summary>
/// A simulated payment provider outside the shop's database: it keeps its own ledger in its own SQLite file and
/// honours idempotency keys (a repeated key returns the first result and moves no money), as real providers do.
/// Cards of customers whose number is a multiple of 13 are declined. Each call looks its key up and records its
/// answer in one write transaction, so the keys hold across every process that opens the same ledger file.
/// </summary>
public sealed class PaymentProvider : IDisposable
{
    readonly SqliteConnection _connection;
    readonly object _lock = new();

    public PaymentProvider(string ledgerPath)
    {
        _connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = ledgerPath, Pooling = false }.ToString());
        _connection.Open();
        Execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;");
        Execute("CREATE TABLE IF NOT EXISTS ledger (idempotency_key TEXT PRIMARY KEY, order_id TEXT NOT NULL, kind TEXT NOT NULL, amount INTEGER NOT NULL, reference TEXT NOT NULL)");
    }

    /// <summary>Charges <paramref name="cents"/>; returns the charge reference, or <c>null</c> when the card is declined.</summary>
    public string? Charge(string idempotencyKey, string orderId, string customerId, long cents)
    {
        lock (_lock)
        {
            // BEGIN IMMEDIATE takes the file's write lock before the lookup: another process with the same key
            // waits here and then finds this answer.
            using var transaction = _connection.BeginTransaction(deferred: false);
            if (Lookup(transaction, idempotencyKey) is { } earlier)
            {
                return earlier;
            }

            if (int.TryParse(customerId.AsSpan(customerId.LastIndexOf('-') + 1), out var number) && number % 13 == 0)
            {
                return null;
            }

            var reference = "ch_" + Guid.NewGuid().ToString("N")[..12];
            Insert(transaction, idempotencyKey, orderId, "charge", cents, reference);
            transaction.Commit();
            return reference;
        }
    }

    /// <summary>Refunds whatever is charged and not yet refunded for the order; idempotent per key.</summary>
    public void Refund(string idempotencyKey, string orderId)
    {
        lock (_lock)
        {
            using var transaction = _connection.BeginTransaction(deferred: false);
            if (Lookup(transaction, idempotencyKey) is not null)
            {
                return;
            }

            using var command = _connection.CreateCommand();
            command.Transaction = transaction;
            command.CommandText = "SELECT coalesce(sum(amount), 0) FROM ledger WHERE order_id = $order";
            command.Parameters.AddWithValue("$order", orderId);
            var net = (long)command.ExecuteScalar()!;
            if (net > 0)
            {
                Insert(transaction, idempotencyKey, orderId, "refund", -net, "re_" + Guid.NewGuid().ToString("N")[..12]);
            }

            transaction.Commit();
        }
    }

    /// <summary>
    /// The ledger at <paramref name="ledgerPath"/> per order: the number of charges and the net amount in cents
    /// (charges less refunds), counted per order whatever idempotency keys the calls came with. Empty when the
    /// provider never ran.
    /// </summary>
    public static Dictionary<string, (int Charges, long Net)> ReadLedger(string ledgerPath)
    {
        var result = new Dictionary<string, (int, long)>(StringComparer.Ordinal);
        if (!File.Exists(ledgerPath))
        {
            return result;
        }

        using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = ledgerPath, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString());
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT order_id, sum(kind = 'charge'), sum(amount) FROM ledger GROUP BY order_id";
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            result[reader.GetString(0)] = (reader.GetInt32(1), reader.GetInt64(2));
        }

        return result;
    }

    string? Lookup(SqliteTransaction transaction, string key)
    {
        using var command = _connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "SELECT reference FROM ledger WHERE idempotency_key = $key";
        command.Parameters.AddWithValue("$key", key);
        return command.ExecuteScalar() as string;
    }

    void Insert(SqliteTransaction transaction, string key, string orderId, string kind, long amount, string reference)
    {
        using var command = _connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "INSERT INTO ledger (idempotency_key, order_id, kind, amount, reference) VALUES ($key, $order, $kind, $amount, $reference)";
        command.Parameters.AddWithValue("$key", key);
        command.Parameters.AddWithValue("$order", orderId);
        command.Parameters.AddWithValue("$kind", kind);
        command.Parameters.AddWithValue("$amount", amount);
        command.Parameters.AddWithValue("$reference", reference);
        command.ExecuteNonQuery();
    }

    void Execute(string sql)
    {
        using var command = _connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    public void Dispose() => _connection.Dispose();
}
