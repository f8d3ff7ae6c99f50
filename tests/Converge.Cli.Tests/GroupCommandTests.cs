using System.Collections.Concurrent;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Testing;

namespace Converge.Cli.Tests;

/// <summary>
/// <c>converge groups</c> on a running application: a group rewound to 0 replays every event, one moved to the head
/// skips them, and misuse exits 2 with what to do.
/// </summary>
public sealed class GroupCommandTests
{
    public sealed record Posted(int Number);

    public sealed class Ledger
    {
        public ConcurrentQueue<int> Seen { get; } = new();
    }

    public sealed class LedgerHandler(Ledger ledger) : IHandler<Posted>
    {
        public Task HandleAsync(Posted message, MessageContext context, CancellationToken cancellationToken)
        {
            ledger.Seen.Enqueue(message.Number);
            return Task.CompletedTask;
        }
    }

    [Fact]
    public async Task A_running_group_rewound_to_0_replays_the_log_and_one_moved_to_the_head_skips_it()
    {
        using var temp = new TempFolder();
        var db = temp.File("groups.db");
        var ledger = new Ledger();
        await using var host = await ConvergeTestHost.StartAsync(
            o =>
            {
                o.UseSqlite(db);
                o.PollInterval = TimeSpan.FromMilliseconds(50);
                o.Messages.Register<Posted>("ledger.posted");
                o.Subscribe<Posted, LedgerHandler>("ledger");
            },
            services => Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton(services, ledger));
        for (var i = 1; i <= 5; i++)
        {
            await host.Bus.PublishAsync("account-1", new Posted(i));
        }

        await WaitAsync(() => ledger.Seen.Count == 5);

        // A handler runs before its transaction commits the group's position: each step waits for that commit.
        await WaitForPositionAsync(host, "ledger", 5);
        var listed = await Cli.RunAsync("groups", "list", "--db", db, "--json");
        Assert.True(listed.ExitCode == 0, listed.ToString());
        var group = Assert.Single(listed.Json().GetProperty("groups").EnumerateArray());
        Assert.Equal(("ledger", 5L, 0L), (group.GetProperty("group").GetString(), group.GetProperty("position").GetInt64(), group.GetProperty("lag").GetInt64()));

        var rewound = await Cli.RunAsync("groups", "reset", "ledger", "--to", "0", "--db", db);

        Assert.True(rewound.ExitCode == 0, rewound.ToString());
        Assert.Contains("moved from 5 to 0", rewound.Out, StringComparison.Ordinal);
        await WaitAsync(() => ledger.Seen.Count == 10);
        Assert.Equal([1, 2, 3, 4, 5, 1, 2, 3, 4, 5], ledger.Seen);
        await WaitForPositionAsync(host, "ledger", 5);

        var skipped = await Cli.RunAsync("groups", "reset", "ledger", "--to", "2", "--db", db, "--json");
        Assert.True(skipped.ExitCode == 0, skipped.ToString());
        await WaitAsync(() => ledger.Seen.Count == 13);
        await WaitForPositionAsync(host, "ledger", 5);
        var head = await Cli.RunAsync("groups", "reset", "ledger", "--head", "--db", db, "--json");
        Assert.True(head.ExitCode == 0, head.ToString());
        Assert.Equal((5L, 5L), (head.Json().GetProperty("from").GetInt64(), head.Json().GetProperty("to").GetInt64()));
        await host.Bus.PublishAsync("account-1", new Posted(6));
        await WaitAsync(() => ledger.Seen.Count == 14);
        Assert.Equal([1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 3, 4, 5, 6], ledger.Seen);
    }

    [Fact]
    public async Task A_group_that_never_ran_starts_where_it_is_put()
    {
        using var temp = new TempFolder();
        var db = temp.File("new-group.db");
        await using (var host = await ConvergeTestHost.StartAsync(o => { o.UseSqlite(db); o.Messages.Register<Posted>("ledger.posted"); }))
        {
            for (var i = 1; i <= 4; i++)
            {
                await host.Bus.PublishAsync("account-1", new Posted(i));
            }
        }

        var started = await Cli.RunAsync("groups", "reset", "audit", "--head", "--db", db);
        var ledger = new Ledger();
        await using (var host = await ConvergeTestHost.StartAsync(
            o =>
            {
                o.UseSqlite(db);
                o.Messages.Register<Posted>("ledger.posted");
                o.Subscribe<Posted, LedgerHandler>("audit");
            },
            services => Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton(services, ledger)))
        {
            await host.Bus.PublishAsync("account-1", new Posted(5));
            await WaitAsync(() => !ledger.Seen.IsEmpty);
        }

        Assert.True(started.ExitCode == 0, started.ToString());
        Assert.Contains("'audit' had no checkpoint; it starts after 4", started.Out, StringComparison.Ordinal);
        Assert.Equal([5], ledger.Seen);
    }

    [Fact]
    public async Task A_paused_group_stops_until_it_is_resumed()
    {
        using var temp = new TempFolder();
        var db = temp.File("paused.db");
        var ledger = new Ledger();
        await using var host = await ConvergeTestHost.StartAsync(
            o =>
            {
                o.UseSqlite(db);
                o.PollInterval = TimeSpan.FromMilliseconds(20);
                o.Messages.Register<Posted>("ledger.posted");
                o.Subscribe<Posted, LedgerHandler>("ledger");
            },
            services => Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton(services, ledger));
        await host.Bus.PublishAsync("account-1", new Posted(1));
        await WaitForPositionAsync(host, "ledger", 1);

        var paused = await Cli.RunAsync("groups", "pause", "ledger", "--db", db);
        Assert.True(paused.ExitCode == 0, paused.ToString());
        Assert.Contains("paused at position 1", paused.Out, StringComparison.Ordinal);
        Assert.Equal(1, await host.Tracker.WhenGroupPausedAsync("ledger").WaitAsync(TimeSpan.FromSeconds(30)));
        await host.Bus.PublishAsync("account-1", new Posted(2));
        await host.Bus.PublishAsync("account-1", new Posted(3));
        var listed = await Cli.RunAsync("groups", "list", "--db", db, "--json");
        var group = Assert.Single(listed.Json().GetProperty("groups").EnumerateArray());
        Assert.Equal((1L, 2L, true), (group.GetProperty("position").GetInt64(), group.GetProperty("lag").GetInt64(), group.GetProperty("paused").GetBoolean()));
        Assert.Equal([1], ledger.Seen);
        Assert.Contains("paused", (await Cli.RunAsync("groups", "list", "--db", db)).Out, StringComparison.Ordinal);

        var resumed = await Cli.RunAsync("groups", "resume", "ledger", "--db", db);
        Assert.True(resumed.ExitCode == 0, resumed.ToString());
        Assert.Contains("resumed from position 1", resumed.Out, StringComparison.Ordinal);
        await WaitForPositionAsync(host, "ledger", 3);
        Assert.Equal([1, 2, 3], ledger.Seen);

        var unknown = await Cli.RunAsync("groups", "resume", "nobody", "--db", db);
        Assert.True(unknown.ExitCode == 1, unknown.ToString());
        Assert.Contains("has no checkpoint", unknown.Error, StringComparison.Ordinal);

        var typo = await Cli.RunAsync("groups", "pause", "ledgr", "--db", db);
        Assert.True(typo.ExitCode == 1, typo.ToString());
        Assert.Contains("never ran, or the name is mistyped", typo.Error, StringComparison.Ordinal);
        var created = await Cli.RunAsync("groups", "pause", "ledgr", "--create", "--db", db);
        Assert.True(created.ExitCode == 0, created.ToString());
        Assert.Contains("it now has one at position 0, paused", created.Out, StringComparison.Ordinal);
        var deleted = await Cli.RunAsync("groups", "delete", "ledgr", "--db", db);
        Assert.True(deleted.ExitCode == 0, deleted.ToString());
        Assert.Null(await host.Store.GetConsumerGroupAsync("ledgr", CancellationToken.None));
        Assert.Equal(1, (await Cli.RunAsync("groups", "delete", "ledgr", "--db", db)).ExitCode);
        Assert.Equal(2, (await Cli.RunAsync("groups", "delete", "projection:x@1", "--db", db)).ExitCode);
    }

    [Theory]
    [InlineData(new[] { "groups", "pause" }, "Required argument missing")]
    [InlineData(new[] { "groups", "reset", "ledger" }, "Give either --to POSITION or --head")]
    [InlineData(new[] { "groups", "reset", "ledger", "--to", "1", "--head" }, "Give either --to POSITION or --head")]
    [InlineData(new[] { "groups", "reset", "ledger", "--to", "-1" }, "--to must be 0 or more")]
    [InlineData(new[] { "groups", "reset", "ledger", "--to", "99" }, "beyond the log's head (0)")]
    public async Task Misuse_exits_2_with_what_to_do(string[] args, string expected)
    {
        using var temp = new TempFolder();
        var db = temp.File("empty.db");
        await using (var host = await ConvergeTestHost.StartAsync(o => o.UseSqlite(db)))
        {
        }

        var result = await Cli.RunAsync([.. args, "--db", db]);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains(expected, result.Error, StringComparison.Ordinal);
    }

    static async Task WaitForPositionAsync(ConvergeTestHost host, string group, long position)
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while ((await host.Store.GetConsumerGroupAsync(group, deadline.Token))?.Position != position)
        {
            await Task.Delay(10, deadline.Token);
        }
    }

    static async Task WaitAsync(Func<bool> condition)
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (!condition())
        {
            await Task.Delay(10, deadline.Token);
        }
    }
}
