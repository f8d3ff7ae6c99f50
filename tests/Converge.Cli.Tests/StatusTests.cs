using System.Text.Json;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Cli.Tests;

public sealed class StatusTests
{
    [Fact]
    public async Task Status_of_a_missing_file_exits_2_names_the_fix_and_does_not_create_it()
    {
        using var temp = new TempFolder();
        var db = temp.File("missing.db");

        var result = await Cli.RunAsync("status", "--db", db);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains(db, result.Error, StringComparison.Ordinal);
        Assert.Contains($"options.UseSqlite(\"{db}\")", result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
        Assert.False(File.Exists(db), "status must never create the store file");
        Assert.Empty(Directory.EnumerateFileSystemEntries(temp.Path));
    }

    [Fact]
    public async Task Status_of_a_sqlite_file_without_converge_tables_exits_2_and_leaves_it_alone()
    {
        using var temp = new TempFolder();
        var db = temp.File("other.db");
        await using (var connection = new SqliteConnection($"Data Source={db};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = "CREATE TABLE customers (id INTEGER)";
            await command.ExecuteNonQueryAsync();
        }

        var before = await File.ReadAllBytesAsync(db);

        var result = await Cli.RunAsync("status", "--db", db, "--json");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("is not a Converge store: no Converge tables", result.Error, StringComparison.Ordinal);
        Assert.Contains($"Start an application with options.UseSqlite(\"{db}\") first", result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
        Assert.Equal(before, await File.ReadAllBytesAsync(db));
    }

    [Theory]
    [InlineData("sqlite_", "TablePrefix 'sqlite_' is reserved: SQLite keeps table names starting with 'sqlite_' for itself")]
    [InlineData("app_\n", "TablePrefix 'app_\n' is not valid: use lower-case letters, digits and '_'")]
    public async Task A_table_prefix_that_is_not_a_usable_name_exits_2_with_the_fix(string prefix, string expected)
    {
        using var temp = new TempFolder();
        var db = temp.File("app.db");
        await using (var store = new SqliteMessageStore(new SqliteStoreOptions { Path = db }, TimeProvider.System))
        {
            await store.MigrateAsync(CancellationToken.None);
        }

        var result = await Cli.RunAsync("status", "--db", db, "--table-prefix", prefix);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains(expected, result.Error, StringComparison.Ordinal);
        Assert.Contains("(for example 'converge_')", result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
    }

    [Fact]
    public async Task Status_json_reports_queued_messages_and_a_dead_letter()
    {
        using var temp = new TempFolder();
        var db = temp.File("app.db");
        await using (var host = await StartHostAsync(db))
        {
            // A message of a type no process knows: the consumer of "work" dead-letters it.
            var unknown = Guid.CreateVersion7();
            host.Tracker.Track(unknown, "work");
            await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
            {
                await transaction.EnqueueAsync(
                    new OutgoingMessage("work", new Envelope
                    {
                        MessageId = unknown,
                        MessageType = "nope@1",
                        SentAt = TimeProvider.System.GetUtcNow(),
                        Body = "{}"u8.ToArray(),
                    }),
                    CancellationToken.None);
                await transaction.CommitAsync(CancellationToken.None);
            }

            await host.WaitForQuiescenceAsync();

            // Three messages on a queue nobody consumes in this process.
            for (var i = 0; i < 3; i++)
            {
                await host.Bus.SendAsync(new Job(i), new SendOptions { Queue = "later" });
            }

            await host.Bus.SendAsync(new Job(9), new SendOptions { Queue = "later", Delay = TimeSpan.FromHours(1) });
        }

        var result = await Cli.RunAsync("status", "--db", db, "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(Path.GetFullPath(db), json.GetProperty("db").GetString());
        await using (var store = new SqliteMessageStore(new SqliteStoreOptions { Path = db }, TimeProvider.System))
        {
            Assert.Equal(store.GetSchemaVersion(), json.GetProperty("schema_version").GetInt32());
        }

        Assert.Equal(1, json.GetProperty("dead_letters").GetInt64());
        Assert.Equal(0, json.GetProperty("log_position").GetInt64());
        Assert.Equal(0, json.GetProperty("inbox_records").GetInt64());
        Assert.Equal(JsonValueKind.Array, json.GetProperty("consumer_groups").ValueKind);
        var queues = json.GetProperty("queues").EnumerateArray().ToDictionary(q => q.GetProperty("queue").GetString()!);
        Assert.Equal(3, queues["later"].GetProperty("ready").GetInt64());
        Assert.Equal(1, queues["later"].GetProperty("scheduled").GetInt64());
        Assert.Equal(0, queues["later"].GetProperty("in_flight").GetInt64());
        Assert.Equal(0, queues["later"].GetProperty("dead_letters").GetInt64());
        Assert.Equal(0, queues["work"].GetProperty("ready").GetInt64());
        Assert.Equal(1, queues["work"].GetProperty("dead_letters").GetInt64());
    }

    [Fact]
    public async Task Status_names_the_queue_and_count_of_rows_no_consumer_will_reach()
    {
        using var temp = new TempFolder();
        var db = temp.File("app.db");
        await using (var host = await StartHostAsync(db))
        {
            for (var i = 0; i < 4; i++)
            {
                await host.Bus.SendAsync(new Job(i), new SendOptions { Queue = "later", Delay = TimeSpan.FromHours(1) });
            }
        }

        // Written by something other than Converge: 200 years ahead, beyond .NET's last tick, and not a number at all.
        await using (var connection = new SqliteConnection($"Data Source={db};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = """
                UPDATE converge_queue SET visible_at = CASE id - (SELECT min(id) FROM converge_queue)
                    WHEN 0 THEN $far WHEN 1 THEN 9223372036854775807 WHEN 2 THEN 'next tuesday' ELSE visible_at END
                """;
            command.Parameters.AddWithValue("$far", TimeProvider.System.GetUtcNow().AddYears(200).UtcTicks);
            Assert.Equal(4, await command.ExecuteNonQueryAsync());
        }

        var json = await Cli.RunAsync("status", "--db", db, "--json");
        var table = await Cli.RunAsync("status", "--db", db);

        Assert.True(json.ExitCode == 0, json.ToString());
        var later = json.Json().GetProperty("queues").EnumerateArray().Single(q => q.GetProperty("queue").GetString() == "later");
        Assert.Equal(3, later.GetProperty("stranded").GetInt64());
        Assert.Equal(1, later.GetProperty("scheduled").GetInt64());
        Assert.True(table.ExitCode == 0, table.ToString());
        Assert.Contains("Stranded: queue 'later' holds 3 row(s) no consumer will ever claim", table.Out, StringComparison.Ordinal);
        Assert.Contains("then fix their visible_at or delete them", table.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Status_table_shows_the_queues()
    {
        using var temp = new TempFolder();
        var db = temp.File("app.db");
        await using (var host = await StartHostAsync(db))
        {
            await host.Bus.SendAsync(new Job(1), new SendOptions { Queue = "later" });
        }

        var result = await Cli.RunAsync("status", "--db", db);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("later", result.Out, StringComparison.Ordinal);
        Assert.Contains("Ready", result.Out, StringComparison.Ordinal);
        Assert.Contains("Inbox records", result.Out, StringComparison.Ordinal);
    }

    internal static Task<ConvergeTestHost> StartHostAsync(string db, FailSwitch? failSwitch = null) =>
        ConvergeTestHost.StartAsync(
            o =>
            {
                o.UseSqlite(db);
                o.PollInterval = TimeSpan.FromMilliseconds(50);
                o.Messages.Register<Job>("test.job");
                o.Handle<Job, JobHandler>("work");
            },
            services => services.AddSingleton(failSwitch ?? new FailSwitch()));
}
