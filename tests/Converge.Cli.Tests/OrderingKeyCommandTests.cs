using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Data.Sqlite;

namespace Converge.Cli.Tests;

/// <summary><c>status</c> shows keys held by dead letters; <c>dead-letters retry|discard --key</c> releases them.</summary>
public sealed class OrderingKeyCommandTests
{
    [Fact]
    public async Task Status_shows_held_keys_and_retry_by_key_releases_them_in_order()
    {
        using var temp = new TempFolder();
        var db = temp.File("app.db");
        var failSwitch = new FailSwitch { Fail = true };
        await using var host = await StatusTests.StartHostAsync(db, failSwitch);
        for (var n = 1; n <= 3; n++)
        {
            await host.Bus.SendAsync(new Job(n), new SendOptions { OrderingKey = "customer-1" });
        }

        await host.Bus.SendAsync(new Job(10), new SendOptions { OrderingKey = "customer-2" });
        await Eventually.UntilAsync(async () => (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).HeldKeys.Count == 2, "both keys to be held");

        var json = await Cli.RunAsync("status", "--db", db, "--json");
        Assert.True(json.ExitCode == 0, json.ToString());
        var held = json.Json().GetProperty("held_keys").EnumerateArray()
            .Select(h => (h.GetProperty("queue").GetString(), h.GetProperty("key").GetString(), h.GetProperty("dead_letters").GetInt64(), h.GetProperty("waiting").GetInt64()))
            .ToList();
        Assert.Equal([("work", "customer-1", 1L, 2L), ("work", "customer-2", 1L, 0L)], held);

        var text = await Cli.RunAsync("status", "--db", db);
        Assert.True(text.ExitCode == 0, text.ToString());
        Assert.Contains("Held key", text.Out, StringComparison.Ordinal);
        Assert.Contains("customer-1", text.Out, StringComparison.Ordinal);
        Assert.Contains("2 ordering key(s) held by dead letters", text.Out, StringComparison.Ordinal);
        Assert.Contains("converge dead-letters retry --key KEY", text.Out, StringComparison.Ordinal);

        var list = (await Cli.RunAsync("dead-letters", "list", "--db", db, "--json")).Json();
        Assert.Equal(["customer-2", "customer-1"], list.GetProperty("dead_letters").EnumerateArray().Select(l => l.GetProperty("ordering_key").GetString()));

        // After the fix: the key's dead letter goes back ahead of the two it held, and all three run in send order.
        failSwitch.Fail = false;
        var retry = await Cli.RunAsync("dead-letters", "retry", "--db", db, "--key", "customer-1", "--queue", "work", "--json");
        Assert.True(retry.ExitCode == 0, retry.ToString());
        Assert.Equal(1, retry.Json().GetProperty("count").GetInt32());
        Assert.Equal("customer-1", retry.Json().GetProperty("key").GetString());
        // The handled rows are read once committed: the handler's count moves before its transaction commits.
        await Eventually.UntilAsync(() => HandledInOrder(db).Count == 3, () => $"{HandledInOrder(db).Count} of customer-1's 3 jobs committed");
        Assert.Equal([1, 2, 3], HandledInOrder(db));

        var afterRetry = (await Cli.RunAsync("status", "--db", db, "--json")).Json();
        Assert.Equal("customer-2", Assert.Single(afterRetry.GetProperty("held_keys").EnumerateArray()).GetProperty("key").GetString());

        // Discarding by key releases the other key; nothing of it was waiting.
        var discard = await Cli.RunAsync("dead-letters", "discard", "--db", db, "--key", "customer-2");
        Assert.True(discard.ExitCode == 0, discard.ToString());
        Assert.Contains("1 dead letter(s) discarded", discard.Out, StringComparison.Ordinal);
        var none = await Cli.RunAsync("status", "--db", db);
        Assert.DoesNotContain("Held key", none.Out, StringComparison.Ordinal);
        Assert.Empty((await Cli.RunAsync("status", "--db", db, "--json")).Json().GetProperty("held_keys").EnumerateArray());

        var nothing = await Cli.RunAsync("dead-letters", "retry", "--db", db, "--key", "customer-2");
        Assert.True(nothing.ExitCode == 0, nothing.ToString());
        Assert.Contains("No dead letters of key 'customer-2' to retry.", nothing.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Retry_takes_one_of_an_id_all_or_key()
    {
        var both = await Cli.RunAsync("dead-letters", "retry", "--db", "x.db", "--all", "--key", "k");
        Assert.Equal(2, both.ExitCode);
        Assert.Contains("Pass one of an ID, --all or --key, not several.", both.Error, StringComparison.Ordinal);

        var blank = await Cli.RunAsync("dead-letters", "retry", "--db", "x.db", "--key", " ");
        Assert.Equal(2, blank.ExitCode);
        Assert.Contains("--key needs an ordering key", blank.Error, StringComparison.Ordinal);
    }

    static List<long> HandledInOrder(string db)
    {
        using var connection = new SqliteConnection($"Data Source={db};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();

        // The handler creates the table in its first transaction; before that commits nothing was handled.
        command.CommandText = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'";
        if ((long)command.ExecuteScalar()! == 0)
        {
            return [];
        }

        command.CommandText = "SELECT n FROM jobs ORDER BY rowid";
        using var reader = command.ExecuteReader();
        var handled = new List<long>();
        while (reader.Read())
        {
            handled.Add(reader.GetInt64(0));
        }

        return handled;
    }
}
