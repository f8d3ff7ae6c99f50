using System.Text.Json;
using Converge.Contracts;
using Converge.Jobs;
using Converge.PostgreSql;
using Converge.Storage;
using Npgsql;

namespace Converge.Cli.Tests;

/// <summary>
/// A Converge store in a schema of its own on the server <c>CONVERGE_TEST_POSTGRES</c> names, made the way an
/// application makes one (<see cref="PostgreSqlMessageStore.MigrateAsync"/>); the schema is dropped on dispose.
/// </summary>
public sealed class PostgresStore : IAsyncDisposable
{
    public const string Variable = "CONVERGE_TEST_POSTGRES";

    PostgresStore(string schema, PostgreSqlMessageStore store)
    {
        Schema = schema;
        Store = store;
    }

    /// <summary>The server to test against; a missing variable fails the test rather than skipping it, so a run without PostgreSQL cannot pass unnoticed.</summary>
    public static string ConnectionString =>
        Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } value
            ? value
            : throw new InvalidOperationException($"{Variable} is not set, and the CLI's PostgreSQL tests need a server. Run ./test.sh, which starts PostgreSQL and sets it.");

    public string Schema { get; }

    public PostgreSqlMessageStore Store { get; }

    /// <summary>The store options to pass to the CLI.</summary>
    public string[] Arguments => ["--postgres", ConnectionString, "--schema", Schema];

    /// <summary>A schema name no other test uses, that nothing has created yet.</summary>
    public static string UniqueSchema() => "cli_" + Guid.NewGuid().ToString("N")[..16];

    public static async Task<PostgresStore> CreateAsync()
    {
        var schema = UniqueSchema();
        var store = new PostgreSqlMessageStore(new PostgreSqlStoreOptions { ConnectionString = ConnectionString, Schema = schema }, TimeProvider.System);
        try
        {
            await store.MigrateAsync(CancellationToken.None);
        }
        catch
        {
            await store.DisposeAsync();
            await DropAsync(schema);
            throw;
        }

        return new PostgresStore(schema, store);
    }

    /// <summary>Runs the CLI with <paramref name="args"/> followed by this store's options.</summary>
    public Task<CliResult> RunAsync(params string[] args) => Cli.RunAsync([.. args, .. Arguments]);

    public static async Task<bool> SchemaExistsAsync(string schema)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT count(*) FROM pg_namespace WHERE nspname = @schema", connection);
        command.Parameters.AddWithValue("schema", schema);
        return Convert.ToInt64(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture) > 0;
    }

    public async ValueTask DisposeAsync()
    {
        await Store.DisposeAsync();
        await DropAsync(Schema);
    }

    static async Task DropAsync(string schema)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var drop = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", connection);
        await drop.ExecuteNonQueryAsync();
    }
}

/// <summary>The inspection commands on a PostgreSQL store, named with --postgres and --schema.</summary>
public sealed class PostgreSqlTests
{
    const string JobQueue = "mail";

    /// <summary>
    /// One message ready on "work", one dead-lettered from it (an unknown type), and one job enqueued on "mail".
    /// Returns the dead letter's message id and the job's id.
    /// </summary>
    static async Task<(Guid DeadMessage, Guid Job)> FillAsync(PostgresStore postgres)
    {
        var store = postgres.Store;
        var dead = Guid.CreateVersion7();
        await EnqueueAsync(store, "work", Envelope(dead, "nope@1", "{}"));
        var claimed = Assert.Single(await store.ClaimAsync("work", 1, TimeSpan.FromMinutes(5), CancellationToken.None));
        await using (var transaction = await store.BeginAsync(CancellationToken.None))
        {
            Assert.True(await transaction.DeadLetterAsync(claimed, DeadLetterReasons.UnknownType, "no process knows nope@1", null, CancellationToken.None));
            await transaction.CommitAsync(CancellationToken.None);
        }

        await EnqueueAsync(store, "work", Envelope(Guid.CreateVersion7(), "test.job@1", "{\"number\":1}"));

        var job = Guid.CreateVersion7();
        await using (var transaction = await store.BeginAsync(CancellationToken.None))
        {
            await transaction.Jobs().RegisterJobQueueAsync(JobQueue, CancellationToken.None);
            await transaction.EnqueueAsync(new OutgoingMessage(JobQueue, Envelope(job, "cli.job@1", "{\"name\":\"ann\"}")), CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        return (dead, job);
    }

    static async Task EnqueueAsync(PostgreSqlMessageStore store, string queue, Envelope envelope)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        await transaction.EnqueueAsync(new OutgoingMessage(queue, envelope), CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
    }

    static Envelope Envelope(Guid id, string type, string body) => new()
    {
        MessageId = id,
        MessageType = type,
        SentAt = TimeProvider.System.GetUtcNow(),
        Body = System.Text.Encoding.UTF8.GetBytes(body),
    };

    /// <summary>How the hints must name the store: the same options, quoted for a shell.</summary>
    /// <summary>The console wraps long lines (a hint with a long connection string): compare text with every run of whitespace as one space.</summary>
    static string Unwrapped(string text) => System.Text.RegularExpressions.Regex.Replace(text, @"\s+", " ");

    static string StoreArguments(PostgresStore postgres) => $"--postgres {ShellQuote.Quote(PostgresStore.ConnectionString)} --schema {postgres.Schema}";

    [Fact]
    public async Task Status_json_reports_queues_dead_letters_and_the_schema_version()
    {
        await using var postgres = await PostgresStore.CreateAsync();
        await FillAsync(postgres);

        var result = await postgres.RunAsync("status", "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        var name = json.GetProperty("db").GetString()!;
        Assert.Contains($"schema {postgres.Schema}", name, StringComparison.Ordinal);
        Assert.DoesNotContain("password", name, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(await postgres.Store.GetSchemaVersionAsync(), json.GetProperty("schema_version").GetInt32());
        Assert.Equal(1, json.GetProperty("dead_letters").GetInt64());
        var queues = json.GetProperty("queues").EnumerateArray().ToDictionary(q => q.GetProperty("queue").GetString()!);
        Assert.Equal(1, queues["work"].GetProperty("ready").GetInt64());
        Assert.Equal(1, queues["work"].GetProperty("dead_letters").GetInt64());
        Assert.Equal(1, queues[JobQueue].GetProperty("ready").GetInt64());
    }

    [Fact]
    public async Task Status_table_names_the_schema_and_shows_the_queues()
    {
        await using var postgres = await PostgresStore.CreateAsync();
        await FillAsync(postgres);

        var result = await postgres.RunAsync("status");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains($"schema {postgres.Schema} (schema version", result.Out, StringComparison.Ordinal);
        Assert.Contains("work", result.Out, StringComparison.Ordinal);
        Assert.Contains(JobQueue, result.Out, StringComparison.Ordinal);
        Assert.Equal("", result.Error);
    }

    [Fact]
    public async Task Dead_letters_list_shows_the_letter_and_a_retry_hint_with_the_same_store_options()
    {
        await using var postgres = await PostgresStore.CreateAsync();
        var (dead, _) = await FillAsync(postgres);

        var json = await postgres.RunAsync("dead-letters", "list", "--json");
        var table = await postgres.RunAsync("dead-letters", "list");

        Assert.True(json.ExitCode == 0, json.ToString());
        var letter = Assert.Single(json.Json().GetProperty("dead_letters").EnumerateArray());
        Assert.Equal(dead, letter.GetProperty("message_id").GetGuid());
        Assert.Equal("work", letter.GetProperty("source").GetString());
        Assert.Equal(DeadLetterReasons.UnknownType, letter.GetProperty("reason").GetString());
        Assert.Equal("nope@1", letter.GetProperty("message_type").GetString());

        Assert.True(table.ExitCode == 0, table.ToString());
        Assert.Contains("nope@1", table.Out, StringComparison.Ordinal);
        Assert.Contains(Unwrapped($"Retry with: converge dead-letters retry {StoreArguments(postgres)} ID (or --all)"), Unwrapped(table.Out), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dead_letters_retry_puts_the_letter_back_on_its_queue()
    {
        await using var postgres = await PostgresStore.CreateAsync();
        await FillAsync(postgres);
        var letter = Assert.Single(await postgres.Store.ListDeadLettersAsync(null, 10, CancellationToken.None));

        var result = await postgres.RunAsync("dead-letters", "retry", letter.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(1, result.Json().GetProperty("count").GetInt32());
        Assert.Empty(await postgres.Store.ListDeadLettersAsync(null, 10, CancellationToken.None));
        var work = Assert.Single((await postgres.Store.GetStatusAsync(CancellationToken.None)).Queues, q => q.Queue == "work");
        Assert.Equal(2, work.Ready);
    }

    [Fact]
    public async Task Jobs_list_shows_the_job_and_a_show_hint_with_the_same_store_options()
    {
        await using var postgres = await PostgresStore.CreateAsync();
        var (_, job) = await FillAsync(postgres);

        var json = await postgres.RunAsync("jobs", "list", "--json");
        var table = await postgres.RunAsync("jobs", "list");

        Assert.True(json.ExitCode == 0, json.ToString());
        var listed = Assert.Single(json.Json().GetProperty("jobs").EnumerateArray());
        Assert.Equal(job, listed.GetProperty("id").GetGuid());
        Assert.Equal(JobQueue, listed.GetProperty("queue").GetString());
        Assert.Equal("cli.job@1", listed.GetProperty("type").GetString());
        Assert.Equal("enqueued", listed.GetProperty("state").GetString());

        Assert.True(table.ExitCode == 0, table.ToString());
        Assert.Contains(job.ToString(), table.Out, StringComparison.Ordinal);
        Assert.Contains(Unwrapped($"Show one with: converge jobs show {StoreArguments(postgres)} ID"), Unwrapped(table.Out), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Jobs_show_prints_the_body_and_a_cancel_hint_with_the_same_store_options()
    {
        await using var postgres = await PostgresStore.CreateAsync();
        var (_, job) = await FillAsync(postgres);

        var result = await postgres.RunAsync("jobs", "show", job.ToString());

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("\"ann\"", result.Out, StringComparison.Ordinal);
        Assert.Contains(Unwrapped($"Cancel it with: converge jobs cancel {StoreArguments(postgres)} {job}"), Unwrapped(result.Out), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unknown_job_fails_and_the_hint_repeats_the_store_options()
    {
        await using var postgres = await PostgresStore.CreateAsync();
        var unknown = Guid.CreateVersion7();

        var result = await postgres.RunAsync("jobs", "show", unknown.ToString());

        Assert.Equal(1, result.ExitCode);
        Assert.Contains($"no job has id {unknown}", result.Error, StringComparison.Ordinal);
        Assert.Contains(Unwrapped($"converge jobs list {StoreArguments(postgres)}"), Unwrapped(result.Error), StringComparison.Ordinal);
        Assert.Equal("", result.Out);
    }

    [Fact]
    public async Task A_schema_that_was_never_migrated_is_not_a_store_and_is_not_created()
    {
        var schema = PostgresStore.UniqueSchema();

        var result = await Cli.RunAsync("status", "--postgres", PostgresStore.ConnectionString, "--schema", schema);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"is not a Converge store: schema '{schema}' has no Converge tables", result.Error, StringComparison.Ordinal);
        Assert.Contains("options.UsePostgreSql(...)", result.Error, StringComparison.Ordinal);
        Assert.Contains("--schema", result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
        Assert.False(await PostgresStore.SchemaExistsAsync(schema), "an inspection command must never create the schema");
    }
}

/// <summary>PostgreSQL mistakes the CLI reports without needing a server.</summary>
public sealed class PostgreSqlMisuseTests
{
    [Theory]
    [InlineData("Bad-Name")]
    [InlineData("1converge")]
    [InlineData("converge; DROP TABLE x")]
    [InlineData("converge\n")]
    public async Task An_invalid_schema_exits_2_with_the_rule(string schema)
    {
        // Port 1: nothing listens there, so reaching the server would fail differently; the name is checked first.
        var result = await Cli.RunAsync("status", "--postgres", "Host=127.0.0.1;Port=1;Username=u;Database=d", "--schema", schema);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"Schema '{schema}' is not valid: use lower-case letters, digits and '_'", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("(Parameter", result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
    }

    [Theory]
    [InlineData("pg_catalog", "is reserved: PostgreSQL keeps schema names starting with 'pg_'")]
    [InlineData("information_schema", "holds PostgreSQL's catalog views, not application tables")]
    public async Task A_schema_postgresql_keeps_for_itself_exits_2_with_the_fix(string schema, string expected)
    {
        var result = await Cli.RunAsync("status", "--postgres", "Host=127.0.0.1;Port=1;Username=u;Database=d", "--schema", schema);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"Schema '{schema}' {expected}", result.Error, StringComparison.Ordinal);
        Assert.Contains("Choose a schema of your own", result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
    }

    [Fact]
    public async Task An_invalid_connection_string_exits_2()
    {
        var result = await Cli.RunAsync("jobs", "list", "--postgres", "Hots=127.0.0.1");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("The PostgreSQL connection string is not valid", result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
    }

    [Fact]
    public async Task An_empty_connection_string_exits_2()
    {
        var result = await Cli.RunAsync("status", "--postgres", "");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("needs a connection string", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unreachable_server_exits_1_with_the_reason_and_no_password()
    {
        var result = await Cli.RunAsync("dead-letters", "list", "--postgres", "Host=127.0.0.1;Port=1;Username=u;Password=hunter2;Database=d;Timeout=5");

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("PostgreSQL error: Failed to connect to 127.0.0.1:1", result.Error, StringComparison.Ordinal);
        Assert.Contains("Check the --postgres connection string", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("hunter2", result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
    }

    [Theory]
    [InlineData("app.db", "app.db")]
    [InlineData("/tmp/x/app-1.db", "/tmp/x/app-1.db")]
    [InlineData("my store.db", "\"my store.db\"")]
    [InlineData("Host=db;Database=app", "\"Host=db;Database=app\"")]
    [InlineData("Host=db;Password=a$b", "'Host=db;Password=a$b'")]
    [InlineData("it's", "\"it's\"")]
    [InlineData("it's $HOME", "'it'\\''s $HOME'")]
    [InlineData("", "\"\"")]
    public void Hints_quote_arguments_for_a_shell(string value, string quoted) =>
        Assert.Equal(quoted, ShellQuote.Quote(value));
}
