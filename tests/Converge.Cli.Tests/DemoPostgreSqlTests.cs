using Npgsql;

namespace Converge.Cli.Tests;

/// <summary>
/// Both demos on PostgreSQL (<c>CONVERGE_TEST_POSTGRES</c>; without it these tests fail and say to run ./test.sh)
/// with worker processes, one of which is killed with SIGKILL while the run is under way. Each test runs in a new
/// schema, dropped afterwards, and keeps the simulated services' files in a temporary folder. Kept small, so CI
/// stays fast: the point is the store and the kill, not the volume.
/// </summary>
[Collection(WorkerProcessRuns.Name)]
public sealed class DemoPostgreSqlTests
{
    [Fact]
    public async Task The_shop_on_PostgreSQL_with_a_process_per_service_one_killed_settles_every_order_without_violations()
    {
        await using var schema = await DemoSchema.CreateAsync();
        using var folder = new TempFolder();

        var result = await Cli.RunAsync(
            "demo", "shop", "--orders", "300", "--fail-rate", "0.3", "--processes", "--kill", "1",
            "--step-timeout", "10", "--postgres", PostgresStore.ConnectionString, "--schema", schema.Name, "--sim-dir", folder.Path, "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var report = result.Json();
        Assert.Equal("postgresql", report.GetProperty("store").GetString());
        Assert.Contains("schema " + schema.Name, report.GetProperty("db").GetString(), StringComparison.Ordinal);
        Assert.Equal(0, report.GetProperty("violations").GetInt32());
        Assert.Equal(0, report.GetProperty("double_charges").GetInt32());
        Assert.Equal(0, report.GetProperty("in_flight").GetInt32());
        Assert.Equal(300, report.GetProperty("completed").GetInt32() + report.GetProperty("compensated").GetInt32() + report.GetProperty("rejected").GetInt32());

        // Some orders got their credit reserved. The step timeout outlasts a worker's restart even on a busy machine: with
        // the default 2 s, a kill of the customers' worker early in the run let every credit step time out, and every
        // order ended rejected (correctly, but then the run showed nothing of the other services).
        Assert.True(report.GetProperty("completed").GetInt32() + report.GetProperty("compensated").GetInt32() > 0, result.ToString());
        Assert.Equal(3, report.GetProperty("processes").GetInt32());
        Assert.Equal(1, report.GetProperty("kills").GetInt32());
        Assert.Contains("kill 1: ", result.Error, StringComparison.Ordinal);
        Assert.Contains("exit code 137", result.Error, StringComparison.Ordinal);

        // The shop's tables sit beside Converge's in the schema (found through the search path), not in public.
        Assert.Equal(["sagas", "shop_orders", "shop_payments"], await schema.TablesAsync("sagas", "shop_orders", "shop_payments"));
        Assert.True(File.Exists(Path.Combine(folder.Path, "shop-provider-ledger.db")), "The provider's ledger is not in --sim-dir.");
    }

    [Fact]
    public async Task The_month_close_on_PostgreSQL_with_three_worker_processes_one_killed_settles_every_account_exactly_once()
    {
        await using var schema = await DemoSchema.CreateAsync();
        using var folder = new TempFolder();

        var result = await Cli.RunAsync(
            "demo", "month-close", "--accounts", "2000", "--latency", "1", "--period", "2026-11", "--processes", "3", "--kill", "1",
            "--postgres", PostgresStore.ConnectionString, "--schema", schema.Name, "--sim-dir", folder.Path, "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var report = result.Json();
        Assert.Equal("postgresql", report.GetProperty("store").GetString());
        Assert.Equal(0, report.GetProperty("violations").GetInt64());
        Assert.Equal(0, report.GetProperty("double_charges").GetInt64());
        Assert.Equal(0, report.GetProperty("duplicate_emails").GetInt64());
        Assert.Equal(2000, report.GetProperty("invoiced").GetInt64());
        Assert.Equal(0, report.GetProperty("still_open").GetInt64());
        Assert.True(report.GetProperty("finished").GetBoolean(), result.ToString());
        Assert.True(report.GetProperty("finance_report").GetBoolean(), result.ToString());
        Assert.Equal(
            2000,
            report.GetProperty("charged").GetInt64() + report.GetProperty("credited").GetInt64()
                + report.GetProperty("skipped_already_paid").GetInt64() + report.GetProperty("held").GetInt64());
        Assert.Equal(report.GetProperty("charged").GetInt64() + report.GetProperty("credited").GetInt64(), report.GetProperty("emails").GetInt64());
        Assert.Equal(3, report.GetProperty("processes").GetInt32());
        Assert.Equal(1, report.GetProperty("kills").GetInt32());
        Assert.Contains("exit code 137", result.Error, StringComparison.Ordinal);
        Assert.Equal(["billing_invoices", "job_batches"], await schema.TablesAsync("billing_invoices", "job_batches"));
    }

    [Fact]
    public async Task A_schema_that_already_holds_a_shop_is_refused_with_the_fix_and_left_as_it_was()
    {
        await using var schema = await DemoSchema.CreateAsync();
        using var folder = new TempFolder();
        string[] arguments = ["demo", "shop", "--orders", "20", "--postgres", PostgresStore.ConnectionString, "--schema", schema.Name, "--sim-dir", folder.Path, "--json"];
        var first = await Cli.RunAsync(arguments);
        Assert.True(first.ExitCode == 0, first.ToString());

        var second = await Cli.RunAsync(arguments);

        Assert.Equal(2, second.ExitCode);
        Assert.Contains($"Schema {schema.Name} already holds a shop", second.Error, StringComparison.Ordinal);
        Assert.Contains($"DROP SCHEMA {schema.Name} CASCADE", second.Error, StringComparison.Ordinal);
        Assert.Equal(20, await schema.CountAsync("shop_orders"));
    }
}

/// <summary>The store options of the demos, checked before anything connects (no server needed).</summary>
public sealed class DemoStoreMisuseTests
{
    [Theory]
    [InlineData("shop")]
    [InlineData("month-close")]
    public async Task Both_stores_at_once_are_refused_with_the_choice(string demo)
    {
        var result = await Cli.RunAsync("demo", demo, "--db", "x.db", "--postgres", "Host=127.0.0.1;Port=1;Username=u;Database=d");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("Pass one store, not both: --db FILE (SQLite) or --postgres CONN (PostgreSQL)", result.Error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("shop")]
    [InlineData("month-close")]
    public async Task A_schema_without_postgres_is_refused_with_the_fix(string demo)
    {
        var result = await Cli.RunAsync("demo", demo, "--schema", "mine");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--schema is for a PostgreSQL run: add --postgres CONN", result.Error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("shop")]
    [InlineData("month-close")]
    public async Task An_invalid_schema_is_refused_before_connecting(string demo)
    {
        // Port 1: nothing listens there, so a connection attempt would fail differently; the name is checked first.
        var result = await Cli.RunAsync("demo", demo, "--postgres", "Host=127.0.0.1;Port=1;Username=u;Database=d", "--schema", "Bad-Name");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("Schema 'Bad-Name' is not valid", result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
    }

    [Fact]
    public async Task Killing_month_close_workers_without_worker_processes_is_refused_with_the_fix()
    {
        var result = await Cli.RunAsync("demo", "month-close", "--kill", "1");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--kill needs --processes N of 1 or more", result.Error, StringComparison.Ordinal);
    }
}

/// <summary>A schema name no other test uses, for one demo run; the schema is dropped on dispose whatever the run left.</summary>
internal sealed class DemoSchema : IAsyncDisposable
{
    DemoSchema(string name) => Name = name;

    public string Name { get; }

    /// <summary>Reads the connection string first, so a run without a server fails here with the ./test.sh hint.</summary>
    public static Task<DemoSchema> CreateAsync()
    {
        _ = PostgresStore.ConnectionString;
        return Task.FromResult(new DemoSchema("cli_demo_" + Guid.NewGuid().ToString("N")[..16]));
    }

    /// <summary>Which of <paramref name="tables"/> exist in the schema, in order.</summary>
    public async Task<string[]> TablesAsync(params string[] tables)
    {
        await using var connection = await OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = @schema AND table_name = ANY(@tables) ORDER BY table_name", connection);
        command.Parameters.AddWithValue("schema", Name);
        command.Parameters.AddWithValue("tables", tables);
        var found = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            found.Add(reader.GetString(0));
        }

        return [.. found];
    }

    public async Task<long> CountAsync(string table)
    {
        await using var connection = await OpenAsync();
        await using var command = new NpgsqlCommand($"SELECT count(*) FROM \"{Name}\".{table}", connection);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    public async ValueTask DisposeAsync()
    {
        await using var connection = await OpenAsync();
        await using var drop = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{Name}\" CASCADE", connection);
        await drop.ExecuteNonQueryAsync();
    }

    static async Task<NpgsqlConnection> OpenAsync()
    {
        var connection = new NpgsqlConnection(PostgresStore.ConnectionString);
        await connection.OpenAsync();
        return connection;
    }
}
