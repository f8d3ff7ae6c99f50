using Converge.Samples.Billing;
using Converge.Samples.Shop;
using Microsoft.Data.Sqlite;

namespace Converge.Cli.Tests;

/// <summary>
/// The demos' checks catch what they claim to: a finished run is copied, a fault is planted in the copy (a second
/// charge under another key, a lost charge, a duplicate email, credit out of step) and the check must report it.
/// </summary>
[Collection(WorkerProcessRuns.Name)]
public sealed class ShopCheckTests(ShopRunFixture run) : IClassFixture<ShopRunFixture>
{
    [Fact]
    public async Task The_finished_run_checks_clean()
    {
        var check = await ShopDemo.CheckAsync(run.Copy(), ShopStyle.Orchestrated, CancellationToken.None);

        Assert.Empty(check.Violations);
        Assert.Equal((0, 0), (check.DoubleCharges, check.LostCharges));
    }

    [Fact]
    public async Task A_second_charge_of_a_completed_order_under_another_key_is_a_double_charge()
    {
        var db = run.Copy();
        var (order, amount) = await CompletedOrderAsync(db);
        await Sql.ExecuteAsync(
            ShopSetup.LedgerPath(db),
            "INSERT INTO ledger (idempotency_key, order_id, kind, amount, reference) VALUES ('retry-7f3a', @order, 'charge', @amount, 'ch_planted')",
            ("@order", order), ("@amount", amount));

        var check = await ShopDemo.CheckAsync(db, ShopStyle.Orchestrated, CancellationToken.None);

        Assert.Equal(1, check.DoubleCharges);
        Assert.Contains(check.Violations, v => v.StartsWith(order + ": the provider's ledger shows 2 charges", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_completed_order_the_ledger_holds_no_charge_for_is_a_lost_charge()
    {
        var db = run.Copy();
        var (order, _) = await CompletedOrderAsync(db);
        await Sql.ExecuteAsync(ShopSetup.LedgerPath(db), "DELETE FROM ledger WHERE order_id = @order", ("@order", order));

        var check = await ShopDemo.CheckAsync(db, ShopStyle.Orchestrated, CancellationToken.None);

        Assert.Equal((0, 1), (check.DoubleCharges, check.LostCharges));
        Assert.Contains(check.Violations, v => v.StartsWith(order + ": completed but charged 0 time(s)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_charge_for_an_order_the_shop_does_not_have_is_reported()
    {
        var db = run.Copy();
        await Sql.ExecuteAsync(ShopSetup.LedgerPath(db), "INSERT INTO ledger (idempotency_key, order_id, kind, amount, reference) VALUES ('k', 'o-999999', 'charge', 500, 'ch_planted')");

        var check = await ShopDemo.CheckAsync(db, ShopStyle.Orchestrated, CancellationToken.None);

        Assert.Contains(check.Violations, v => v.StartsWith("o-999999: the provider's ledger shows 1 charge(s), net 500, but the shop has no such order", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Credit_reserved_out_of_step_with_the_reservations_is_reported()
    {
        var db = run.Copy();
        await Sql.ExecuteAsync(db, "UPDATE shop_customers SET reserved = reserved + 100 WHERE id = 'c-3'");

        var check = await ShopDemo.CheckAsync(db, ShopStyle.Orchestrated, CancellationToken.None);

        Assert.Contains(check.Violations, v => v.StartsWith("c-3: credit reserved 100, reservations held 0", StringComparison.Ordinal));
    }

    static async Task<(string Order, long Amount)> CompletedOrderAsync(string db) =>
        await Sql.ReadOneAsync(db, "SELECT id, amount FROM shop_orders WHERE status = 'completed' ORDER BY id LIMIT 1", r => (r.GetString(0), r.GetInt64(1)));
}

[Collection(WorkerProcessRuns.Name)]
public sealed class MonthCloseCheckTests(MonthCloseRunFixture run) : IClassFixture<MonthCloseRunFixture>
{
    const string Period = MonthCloseRunFixture.Period;

    [Fact]
    public async Task The_finished_close_checks_clean()
    {
        var outcome = await MonthCloseDemo.CheckAsync(run.Copy(), Period, CancellationToken.None);

        Assert.Empty(outcome.Violations);
        Assert.Equal((0L, 0L, 0L), (outcome.DoubleCharges, outcome.LostCharges, outcome.DuplicateEmails));
        Assert.True(outcome.Charged > 0 && outcome.Credited > 0, "The close charged or credited nothing to plant faults on.");
    }

    [Fact]
    public async Task An_account_charged_again_for_the_period_under_another_key_and_invoice_id_is_a_double_charge()
    {
        var db = run.Copy();
        var (invoice, account, cents) = await ChargedInvoiceAsync(db);

        // The invoice created twice: another id, so another key and reference, for the same account and period.
        await Sql.ExecuteAsync(
            BillingFiles.Beside(db).ProviderLedger,
            """
            INSERT INTO charges (id, idempotency_key, reference, account_id, period, card_token, amount_cents, currency, status, created_at)
            VALUES ('ch_planted', 'INV-again', 'INV-again', @account, @period, 'tok_planted', @cents, 'EUR', 'succeeded', 0)
            """,
            ("@account", account), ("@period", Period), ("@cents", cents));

        var outcome = await MonthCloseDemo.CheckAsync(db, Period, CancellationToken.None);

        Assert.Equal((1L, 0L), (outcome.DoubleCharges, outcome.LostCharges));
        Assert.Contains(outcome.Violations, v => v.StartsWith(invoice + ": charged with " + cents + " charged, but the provider's ledger holds 2 charge(s)", StringComparison.Ordinal));
        Assert.Contains(outcome.Violations, v => v.Contains("1 account(s) charged more than once", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_charged_invoice_the_ledger_holds_no_charge_for_is_a_lost_charge()
    {
        var db = run.Copy();
        var (invoice, account, _) = await ChargedInvoiceAsync(db);
        await Sql.ExecuteAsync(BillingFiles.Beside(db).ProviderLedger, "DELETE FROM charges WHERE account_id = @account", ("@account", account));

        var outcome = await MonthCloseDemo.CheckAsync(db, Period, CancellationToken.None);

        Assert.Equal((0L, 1L), (outcome.DoubleCharges, outcome.LostCharges));
        Assert.Contains(outcome.Violations, v => v.StartsWith(invoice + ": charged", StringComparison.Ordinal) && v.Contains("holds 0 charge(s)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_second_receipt_for_an_invoice_under_another_key_is_a_duplicate_email()
    {
        var db = run.Copy();
        var (invoice, _, _) = await ChargedInvoiceAsync(db);
        await Sql.ExecuteAsync(
            BillingFiles.Beside(db).Mailbox,
            """
            INSERT INTO emails (id, idempotency_key, reference, recipient, language, subject, body, sent_at)
            SELECT 'msg_planted', 'another-key', reference, recipient, language, subject, body, sent_at FROM emails WHERE reference = @invoice
            """,
            ("@invoice", invoice));

        var outcome = await MonthCloseDemo.CheckAsync(db, Period, CancellationToken.None);

        Assert.Equal(1L, outcome.DuplicateEmails);
        Assert.Contains(outcome.Violations, v => v == invoice + ": charged with 2 receipt(s) sent");
        Assert.Contains(outcome.Violations, v => v.Contains("1 duplicate email(s)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Credit_below_zero_or_a_credited_invoice_that_does_not_add_up_is_reported()
    {
        var db = run.Copy();
        var credited = await Sql.ReadOneAsync(db, "SELECT id FROM billing_invoices WHERE status = 'credited' ORDER BY id LIMIT 1", r => r.GetString(0));
        await Sql.ExecuteAsync(db, "UPDATE billing_accounts SET credit_cents = -1 WHERE id = 7");
        await Sql.ExecuteAsync(db, "UPDATE billing_invoices SET credit_applied_cents = credit_applied_cents + 1 WHERE id = @id", ("@id", credited));

        var outcome = await MonthCloseDemo.CheckAsync(db, Period, CancellationToken.None);

        Assert.Contains("account 7: credit -1 below zero", outcome.Violations);
        Assert.Contains(outcome.Violations, v => v.StartsWith(credited + ": credited but charged", StringComparison.Ordinal));
    }

    static async Task<(string Invoice, long Account, long Cents)> ChargedInvoiceAsync(string db) =>
        await Sql.ReadOneAsync(
            db,
            "SELECT id, account_id, charged_cents FROM billing_invoices WHERE status = 'charged' AND charged_cents > 0 AND receipt_id IS NOT NULL ORDER BY id LIMIT 1",
            r => (r.GetString(0), r.GetInt64(1), r.GetInt64(2)));
}

/// <summary>One small Shop run without faults, kept for the checks' tests to copy and break.</summary>
public sealed class ShopRunFixture : RunFixture
{
    public ShopRunFixture()
        : base("shop.db", db => ["demo", "shop", "--orders", "60", "--fail-rate", "0", "--db", db, "--json"])
    {
    }
}

/// <summary>One small month close, kept for the checks' tests to copy and break.</summary>
public sealed class MonthCloseRunFixture : RunFixture
{
    public const string Period = "2026-11";

    public MonthCloseRunFixture()
        : base("billing.db", db => ["demo", "month-close", "--accounts", "200", "--latency", "0", "--period", Period, "--db", db, "--json"])
    {
    }
}

/// <summary>Runs a demo once into a folder; <see cref="Copy"/> gives each test its own copy of every file it left.</summary>
public abstract class RunFixture : IAsyncLifetime, IDisposable
{
    readonly TempFolder _folder = new();
    readonly string _name;
    readonly Func<string, string[]> _arguments;
    int _copies;

    protected RunFixture(string name, Func<string, string[]> arguments)
    {
        _name = name;
        _arguments = arguments;
    }

    string Original => Path.Combine(_folder.Path, "run", _name);

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Original)!);
        var result = await Cli.RunAsync(_arguments(Original));
        Assert.True(result.ExitCode == 0, result.ToString());
    }

    /// <summary>A copy of the run's database and the simulated services' files beside it; returns the database's path.</summary>
    public string Copy()
    {
        var folder = Path.Combine(_folder.Path, "copy-" + Interlocked.Increment(ref _copies));
        Directory.CreateDirectory(folder);
        foreach (var file in Directory.GetFiles(Path.GetDirectoryName(Original)!))
        {
            File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        }

        return Path.Combine(folder, _name);
    }

    public Task DisposeAsync() => Task.CompletedTask;

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        _folder.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>Plain SQL on a SQLite file, for planting faults.</summary>
static class Sql
{
    public static async Task ExecuteAsync(string path, string sql, params (string Name, object Value)[] parameters)
    {
        await using var connection = Open(path);
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        foreach (var (name, value) in parameters)
        {
            command.Parameters.AddWithValue(name, value);
        }

        Assert.True(await command.ExecuteNonQueryAsync() > 0, $"Planting the fault changed nothing: {sql}");
    }

    public static async Task<T> ReadOneAsync<T>(string path, string sql, Func<SqliteDataReader, T> read)
    {
        await using var connection = Open(path);
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        await using var reader = await command.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync(), $"Nothing to plant a fault on: {sql}");
        return read(reader);
    }

    static SqliteConnection Open(string path)
    {
        Assert.True(File.Exists(path), path + " does not exist.");
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        connection.Open();
        return connection;
    }
}
