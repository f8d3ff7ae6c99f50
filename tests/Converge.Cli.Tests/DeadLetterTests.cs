using Converge.Contracts;
using Converge.Storage;

namespace Converge.Cli.Tests;

public sealed class DeadLetterTests
{
    [Fact]
    public async Task A_dead_letter_can_be_listed_retried_after_the_fix_and_another_discarded()
    {
        using var temp = new TempFolder();
        var db = temp.File("app.db");
        var failSwitch = new FailSwitch { Fail = true };
        await using var host = await StatusTests.StartHostAsync(db, failSwitch);

        var history = await host.SendAndWaitAsync(new Job(1));
        Assert.Contains(history, h => h.What == "deadlettered");
        var messageId = history[0].Envelope.MessageId;

        // list
        var list = await Cli.RunAsync("dead-letters", "list", "--db", db, "--json");
        Assert.True(list.ExitCode == 0, list.ToString());
        var letters = list.Json().GetProperty("dead_letters").EnumerateArray().ToList();
        var letter = Assert.Single(letters);
        var id = letter.GetProperty("id").GetInt64();
        Assert.Equal("work", letter.GetProperty("source").GetString());
        Assert.Equal("test.job@1", letter.GetProperty("message_type").GetString());
        Assert.Equal("permanent-failure", letter.GetProperty("reason").GetString());
        Assert.Equal(1, letter.GetProperty("attempts").GetInt32());
        Assert.Equal(messageId, letter.GetProperty("message_id").GetGuid());
        Assert.Equal("HandlerFailureException: x", letter.GetProperty("last_error").GetString());
        Assert.True(letter.TryGetProperty("dead_lettered_at", out _));
        Assert.True(letter.TryGetProperty("correlation_id", out _));

        var table = await Cli.RunAsync("dead-letters", "list", "--db", db);
        Assert.True(table.ExitCode == 0, table.ToString());
        Assert.Contains("permanent-failure", table.Out, StringComparison.Ordinal);
        Assert.Contains("HandlerFailureException: x", table.Out, StringComparison.Ordinal);

        // retry, after "deploying the fix", while the application runs
        failSwitch.Fail = false;
        host.Tracker.Track(messageId, "work");
        var retry = await Cli.RunAsync("dead-letters", "retry", "--db", db, id.ToString(System.Globalization.CultureInfo.InvariantCulture), "--json");
        Assert.True(retry.ExitCode == 0, retry.ToString());
        var retried = Assert.Single(retry.Json().GetProperty("letters").EnumerateArray());
        Assert.Equal(id, retried.GetProperty("id").GetInt64());
        Assert.Equal("work", retried.GetProperty("source").GetString());
        await host.WaitForQuiescenceAsync();
        Assert.Equal(1, failSwitch.Handled);

        var afterRetry = (await Cli.RunAsync("status", "--db", db, "--json")).Json();
        Assert.Equal(0, afterRetry.GetProperty("dead_letters").GetInt64());
        Assert.Equal(1, afterRetry.GetProperty("inbox_records").GetInt64());

        // the same id again: gone
        var again = await Cli.RunAsync("dead-letters", "retry", "--db", db, id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(1, again.ExitCode);
        Assert.Contains($"No dead letter has id {id}", again.Error, StringComparison.Ordinal);
        Assert.Contains("converge dead-letters list", again.Error, StringComparison.Ordinal);

        // discard another one
        failSwitch.Fail = true;
        Assert.Contains(await host.SendAndWaitAsync(new Job(2)), h => h.What == "deadlettered");
        var discard = await Cli.RunAsync("dead-letters", "discard", "--db", db, "--all", "--json");
        Assert.True(discard.ExitCode == 0, discard.ToString());
        Assert.Equal(1, discard.Json().GetProperty("count").GetInt32());

        var empty = await Cli.RunAsync("dead-letters", "list", "--db", db, "--json");
        Assert.Equal(0, empty.Json().GetProperty("count").GetInt32());
        var status = (await Cli.RunAsync("status", "--db", db, "--json")).Json();
        Assert.Equal(0, status.GetProperty("dead_letters").GetInt64());
        Assert.Equal(1, failSwitch.Handled);

        // Both actions are in the store's operator log, newest first; the failed second retry did nothing and is not.
        var actions = (await host.Store.OperatorLog().ListAsync(null, 10, CancellationToken.None)).Items;
        Assert.Equal(
            [(OperatorActions.DiscardDeadLetters, "dead-letters:*"), (OperatorActions.RetryDeadLetters, "dead-letter:" + id.ToString(System.Globalization.CultureInfo.InvariantCulture))],
            actions.Select(a => (a.Action, a.Target)));
        Assert.All(actions, a => Assert.Equal(Environment.UserName, a.Actor));
    }

    [Fact]
    public async Task Retry_all_moves_every_dead_letter_of_a_queue_back()
    {
        using var temp = new TempFolder();
        var db = temp.File("app.db");
        var failSwitch = new FailSwitch { Fail = true };
        await using var host = await StatusTests.StartHostAsync(db, failSwitch);
        var ids = new List<Guid>();
        for (var i = 0; i < 3; i++)
        {
            ids.Add((await host.SendAndWaitAsync(new Job(i)))[0].Envelope.MessageId);
        }

        failSwitch.Fail = false;
        ids.ForEach(id => host.Tracker.Track(id, "work"));
        var retry = await Cli.RunAsync("dead-letters", "retry", "--db", db, "--all", "--source", "work");
        Assert.True(retry.ExitCode == 0, retry.ToString());
        Assert.Contains("3 dead letter(s) retried", retry.Out, StringComparison.Ordinal);
        await host.WaitForQuiescenceAsync();
        Assert.Equal(3, failSwitch.Handled);
    }

    [Fact]
    public async Task Discarding_an_unknown_id_exits_1_and_says_how_to_find_ids()
    {
        using var temp = new TempFolder();
        var db = temp.File("app.db");
        await using (await StatusTests.StartHostAsync(db))
        {
        }

        var result = await Cli.RunAsync("dead-letters", "discard", "--db", db, "42");

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("No dead letter has id 42", result.Error, StringComparison.Ordinal);
        Assert.Contains($"converge dead-letters list --db {db}", result.Error, StringComparison.Ordinal);
    }
}
