using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Converge.Storage;

namespace Converge.Samples.Billing;

/// <summary>
/// The billing tables in the store's own database (so a job's writes commit with its completion), created
/// idempotently, and the seeding of accounts. The same statements run on SQLite and PostgreSQL: amounts and times
/// are BIGINT (SQLite reads that as INTEGER); only an account's id is INTEGER, the type that makes it SQLite's
/// rowid (on PostgreSQL a 32-bit integer, room for two billion accounts).
/// </summary>
public static class BillingTables
{
    static readonly string[] Schema =
    [
        // usage_units is the usage of the period being closed; credit_cents a balance support granted, drawn by invoices.
        """
        CREATE TABLE IF NOT EXISTS billing_accounts (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            email TEXT NOT NULL,
            language TEXT NOT NULL,
            usage_units BIGINT NOT NULL,
            unit_price_cents BIGINT NOT NULL,
            credit_cents BIGINT NOT NULL DEFAULT 0,
            card_token TEXT,
            card_last4 TEXT,
            status TEXT NOT NULL DEFAULT 'active',
            updated_at BIGINT NOT NULL)
        """,
        """
        CREATE TABLE IF NOT EXISTS billing_invoices (
            id TEXT PRIMARY KEY,
            account_id BIGINT NOT NULL,
            period TEXT NOT NULL,
            amount_cents BIGINT NOT NULL,
            as_of BIGINT NOT NULL,
            status TEXT NOT NULL,
            paid_cents BIGINT NOT NULL DEFAULT 0,
            credit_applied_cents BIGINT NOT NULL DEFAULT 0,
            charged_cents BIGINT NOT NULL DEFAULT 0,
            charge_id TEXT,
            balance_cents BIGINT,
            hold_reason TEXT,
            changed_after_as_of BIGINT NOT NULL DEFAULT 0,
            charged_as_of BIGINT,
            settled_at BIGINT,
            receipt_id TEXT,
            receipt_sent_at BIGINT,
            UNIQUE (account_id, period))
        """,
        "CREATE INDEX IF NOT EXISTS billing_invoices_period_status ON billing_invoices (period, status)",
        "CREATE TABLE IF NOT EXISTS billing_payments (invoice_id TEXT PRIMARY KEY, account_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL, method TEXT NOT NULL, paid_at BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS billing_credits (invoice_id TEXT PRIMARY KEY, account_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL, reason TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS billing_holds (invoice_id TEXT PRIMARY KEY, account_id BIGINT NOT NULL, reason TEXT NOT NULL, held_at BIGINT NOT NULL)",
        """
        CREATE TABLE IF NOT EXISTS billing_finance_reports (
            period TEXT PRIMARY KEY,
            invoices BIGINT NOT NULL,
            invoiced_cents BIGINT NOT NULL,
            charged BIGINT NOT NULL,
            credited BIGINT NOT NULL,
            collected_cents BIGINT NOT NULL,
            credit_applied_cents BIGINT NOT NULL,
            skipped BIGINT NOT NULL,
            skipped_cents BIGINT NOT NULL,
            held BIGINT NOT NULL,
            held_cents BIGINT NOT NULL,
            still_open BIGINT NOT NULL,
            failed_jobs BIGINT NOT NULL,
            created_at BIGINT NOT NULL)
        """,
    ];

    /// <summary>Creates the billing tables unless they exist.</summary>
    public static async Task CreateAsync(IMessageStore store, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        await using var transaction = await store.BeginAsync(cancellationToken);
        foreach (var statement in Schema)
        {
            await transaction.Database().ExecuteAsync(statement, [], cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
    }

    const int RowsPerStatement = 1000;
    const int RowsPerTransaction = 100_000;

    /// <summary>
    /// One statement inserts many rows passed as one JSON array parameter: SQLite unpacks it with json_each. (A
    /// VALUES list with a parameter per field gets slower per row as it grows, because each parameter is bound by
    /// name.)
    /// </summary>
    const string InsertRows = """
        INSERT INTO billing_accounts (id, name, email, language, usage_units, unit_price_cents, credit_cents, card_token, card_last4, status, updated_at)
        SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, 0, value ->> 6, value ->> 7, 'active', @updatedAt
        FROM json_each(@rows)
        """;

    /// <summary>
    /// The same on PostgreSQL, which has no json_each: the rows as one typed array per column, unpacked side by side
    /// by unnest. The only statement of the sample that differs between the stores; it seeds, no job runs it.
    /// </summary>
    const string InsertRowsPostgreSql = """
        INSERT INTO billing_accounts (id, name, email, language, usage_units, unit_price_cents, credit_cents, card_token, card_last4, status, updated_at)
        SELECT id, name, email, language, usage_units, unit_price_cents, 0, card_token, card_last4, 'active', @updatedAt
        FROM unnest(@ids, @names, @emails, @languages, @usage, @prices, @tokens, @last4s)
            AS rows (id, name, email, language, usage_units, unit_price_cents, card_token, card_last4)
        """;

    /// <summary>
    /// Adds accounts until there are <paramref name="count"/> (ids 1 to <paramref name="count"/>), each derived from
    /// <paramref name="seed"/> and its id alone, so an interrupted seeding continues where it stopped and gives the
    /// same accounts. Multi-row inserts of <see cref="RowsPerStatement"/> rows, <see cref="RowsPerTransaction"/>
    /// rows per transaction: a million accounts take ten commits.
    /// </summary>
    /// <returns>How many accounts were added.</returns>
    public static async Task<long> SeedAccountsAsync(IMessageStore store, long count, int seed, DateTimeOffset now, Action<long>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        long first;
        await using (var transaction = await store.BeginAsync(cancellationToken))
        {
            await using var command = transaction.Transaction.Connection!.Command("SELECT coalesce(max(id), 0) FROM billing_accounts");
            command.Transaction = transaction.Transaction;
            first = Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), CultureInfo.InvariantCulture) + 1;
        }

        var postgres = store.Name.StartsWith("postgresql", StringComparison.Ordinal);
        var buffer = new ArrayBufferWriter<byte>(RowsPerStatement * 160);
        for (var from = first; from <= count; from += RowsPerTransaction)
        {
            var to = Math.Min(count, from + RowsPerTransaction - 1);
            await using var transaction = await store.BeginAsync(cancellationToken);
            await using var insert = postgres
                ? transaction.Transaction.Connection!.Command(
                    InsertRowsPostgreSql,
                    ("@updatedAt", now.ToUnixTimeMilliseconds()), ("@ids", null), ("@names", null), ("@emails", null), ("@languages", null),
                    ("@usage", null), ("@prices", null), ("@tokens", null), ("@last4s", null))
                : transaction.Transaction.Connection!.Command(InsertRows, ("@updatedAt", now.ToUnixTimeMilliseconds()), ("@rows", ""));
            insert.Transaction = transaction.Transaction;
            for (var start = from; start <= to; start += RowsPerStatement)
            {
                var accounts = new List<SeedAccount>(RowsPerStatement);
                for (var id = start; id <= Math.Min(to, start + RowsPerStatement - 1); id++)
                {
                    accounts.Add(SeedAccount.Create(seed, id));
                }

                if (postgres)
                {
                    var values = insert.Parameters;
                    values[1].Value = accounts.Select(a => a.Id).ToArray();
                    values[2].Value = accounts.Select(a => a.Name).ToArray();
                    values[3].Value = accounts.Select(a => a.Email).ToArray();
                    values[4].Value = accounts.Select(a => a.Language).ToArray();
                    values[5].Value = accounts.Select(a => a.UsageUnits).ToArray();
                    values[6].Value = accounts.Select(a => a.UnitPriceCents).ToArray();
                    values[7].Value = accounts.Select(a => a.CardToken).ToArray();
                    values[8].Value = accounts.Select(a => a.CardLast4).ToArray();
                }
                else
                {
                    insert.Parameters[1].Value = Json(accounts, buffer);
                }

                await insert.ExecuteNonQueryAsync(cancellationToken);
            }

            await transaction.CommitAsync(cancellationToken);
            progress?.Invoke(to);
        }

        return Math.Max(0, count - first + 1);
    }

    /// <summary>The rows as the JSON array of arrays <see cref="InsertRows"/> unpacks.</summary>
    static string Json(List<SeedAccount> accounts, ArrayBufferWriter<byte> buffer)
    {
        buffer.ResetWrittenCount();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartArray();
            foreach (var account in accounts)
            {
                json.WriteStartArray();
                json.WriteNumberValue(account.Id);
                json.WriteStringValue(account.Name);
                json.WriteStringValue(account.Email);
                json.WriteStringValue(account.Language);
                json.WriteNumberValue(account.UsageUnits);
                json.WriteNumberValue(account.UnitPriceCents);
                WriteNullable(json, account.CardToken);
                WriteNullable(json, account.CardLast4);
                json.WriteEndArray();
            }

            json.WriteEndArray();
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    static void WriteNullable(Utf8JsonWriter json, string? value)
    {
        if (value is null)
        {
            json.WriteNullValue();
        }
        else
        {
            json.WriteStringValue(value);
        }
    }
}

/// <summary>One seeded account: every field follows from the seed and the id.</summary>
public sealed record SeedAccount(long Id, string Name, string Email, string Language, long UsageUnits, long UnitPriceCents, string? CardToken, string? CardLast4)
{
    const ulong LanguageSalt = 0x4C414E47, NameSalt = 0x4E414D45, UsageSalt = 0x55534147, PriceSalt = 0x50524943, CardSalt = 0x43415244, DigitsSalt = 0x44494749;

    static readonly long[] UnitPrices = [1, 2, 3, 5, 8, 12];

    static readonly Dictionary<string, (string[] First, string[] Last)> Names = new(StringComparer.Ordinal)
    {
        ["en"] = (["Olivia", "James", "Amelia", "Noah", "Isla", "George", "Ava", "Oliver", "Grace", "Harry"], ["Smith", "Jones", "Taylor", "Brown", "Wilson", "Evans", "Walker", "Wright"]),
        ["de"] = (["Anna", "Lukas", "Mia", "Felix", "Lea", "Jonas", "Emma", "Paul", "Hannah", "Leon"], ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker"]),
        ["fr"] = (["Camille", "Louis", "Chloé", "Hugo", "Léa", "Jules", "Manon", "Gabriel", "Inès", "Arthur"], ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand"]),
    };

    /// <summary>
    /// About half the accounts write in English, a third in German, the rest in French; 2 % have no card and 1 %
    /// a card the provider declines (tokens starting <c>tok_declined_</c>).
    /// </summary>
    public static SeedAccount Create(int seed, long id)
    {
        var languageRoll = Seeded.Unit(seed, LanguageSalt, id);
        var language = languageRoll < 0.5 ? "en" : languageRoll < 0.85 ? "de" : "fr";
        var (first, last) = Names[language];
        var nameHash = Seeded.Hash(seed, NameSalt, id);
        var name = first[(int)(nameHash % (ulong)first.Length)] + " " + last[(int)(nameHash / 16 % (ulong)last.Length)];
        var cardRoll = Seeded.Unit(seed, CardSalt, id);
        var digits = Seeded.Hash(seed, DigitsSalt, id);
        string? token = cardRoll < 0.02 ? null
            : (cardRoll < 0.03 ? "tok_declined_" : "tok_") + digits.ToString("x16", CultureInfo.InvariantCulture);
        var last4 = token is null ? null : (digits % 10_000).ToString("D4", CultureInfo.InvariantCulture);
        return new SeedAccount(
            id,
            name,
            "account" + id.ToString(CultureInfo.InvariantCulture) + "@example.com",
            language,
            Seeded.Between(seed, UsageSalt, id, 100, 20_000),
            UnitPrices[Seeded.Between(seed, PriceSalt, id, 0, UnitPrices.Length)],
            token,
            last4);
    }
}
