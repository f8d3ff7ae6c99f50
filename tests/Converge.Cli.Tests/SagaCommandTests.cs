using System.Text.Json;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Testing;

namespace Converge.Cli.Tests;

public sealed record Debit(string Account, decimal Amount);
public sealed record Debited(string Account);
public sealed record Undebit(string Account);
public sealed record Undebited(string Account);
public sealed record Credit(string Account, decimal Amount);
public sealed record Credited(string Account);
public sealed record Pay(string Account);
public sealed record Paid(string Account);

public sealed class TransferData
{
    public string From { get; set; } = "";
    public string To { get; set; } = "";
    public decimal Amount { get; set; }
}

/// <summary>debit (compensatable) -> credit (pivot).</summary>
public sealed class TransferSaga : SagaDefinition<TransferData>
{
    public override string Name => "transfer";

    protected override void Define(SagaBuilder<TransferData> saga)
    {
        saga.Compensatable("debit")
            .Send(d => new Debit(d.From, d.Amount))
            .OnReply<Debited>()
            .CompensateWith(d => new Undebit(d.From))
            .OnCompensated<Undebited>();
        saga.Pivot("credit")
            .Send(d => new Credit(d.To, d.Amount))
            .OnReply<Credited>();
    }
}

/// <summary>One step, on version 2.</summary>
public sealed class PayoutSaga : SagaDefinition<TransferData>
{
    public override string Name => "payout";

    public override int Version => 2;

    protected override void Define(SagaBuilder<TransferData> saga) =>
        saga.Pivot("pay").Send(d => new Pay(d.To)).OnReply<Paid>();
}

/// <summary>Answers every command, except that it refuses credits to "closed" and never answers debits of "slow".</summary>
public sealed class Bank : IHandler<Debit>, IHandler<Undebit>, IHandler<Credit>, IHandler<Pay>
{
    public async Task HandleAsync(Debit message, MessageContext context, CancellationToken cancellationToken)
    {
        if (message.Account != "slow")
        {
            await context.ReplyAsync(new Debited(message.Account), cancellationToken);
        }
    }

    public async Task HandleAsync(Undebit message, MessageContext context, CancellationToken cancellationToken) =>
        await context.ReplyAsync(new Undebited(message.Account), cancellationToken);

    public async Task HandleAsync(Credit message, MessageContext context, CancellationToken cancellationToken)
    {
        if (message.Account == "closed")
        {
            await context.ReplyFailureAsync("account closed", cancellationToken);
            return;
        }

        await context.ReplyAsync(new Credited(message.Account), cancellationToken);
    }

    public async Task HandleAsync(Pay message, MessageContext context, CancellationToken cancellationToken) =>
        await context.ReplyAsync(new Paid(message.Account), cancellationToken);
}

/// <summary>
/// A store file holding four saga instances, made by running them: tx-ok (transfer@1, completed), tx-comp
/// (transfer@1, compensated: the credit was refused), tx-run (transfer@1, running: its debit is never answered)
/// and tx-pay (payout@2, completed).
/// </summary>
public sealed class SagaStoreFixture : IAsyncLifetime, IDisposable
{
    readonly TempFolder _folder = new();

    public string Db => _folder.File("app.db");

    public void Dispose() => _folder.Dispose();

    public async Task InitializeAsync()
    {
        await using var host = await ConvergeTestHost.StartAsync(o =>
        {
            o.UseSqlite(Db);
            o.PollInterval = TimeSpan.FromMilliseconds(50);
            o.Messages.Register<Debit>("cli.debit").Register<Debited>("cli.debited").Register<Undebit>("cli.undebit")
                .Register<Undebited>("cli.undebited").Register<Credit>("cli.credit").Register<Credited>("cli.credited")
                .Register<Pay>("cli.pay").Register<Paid>("cli.paid");
            o.Handle<Debit, Bank>("accounts").Handle<Undebit, Bank>("accounts").Handle<Credit, Bank>("accounts").Handle<Pay, Bank>("payouts");
            o.AddSaga<TransferSaga>().AddSaga<PayoutSaga>();
        });

        await host.Sagas.StartAsync("transfer", "tx-ok", new TransferData { From = "alice", To = "bob", Amount = 10 });
        Assert.Equal(SagaState.Completed, (await host.WaitForSagaAsync("tx-ok")).State);
        await host.Sagas.StartAsync("transfer", "tx-comp", new TransferData { From = "alice", To = "closed", Amount = 20 });
        Assert.Equal(SagaState.Compensated, (await host.WaitForSagaAsync("tx-comp")).State);
        await host.Sagas.StartAsync("transfer", "tx-run", new TransferData { From = "slow", To = "bob", Amount = 30 });
        await host.WaitForSagaAsync("tx-run", s => s.StepAttempt == 1);
        await host.Sagas.StartAsync("payout", "tx-pay", new TransferData { To = "carol", Amount = 40 });
        Assert.Equal(SagaState.Completed, (await host.WaitForSagaAsync("tx-pay")).State);
        await host.WaitForQuiescenceAsync();
    }

    public Task DisposeAsync() => Task.CompletedTask;
}

public sealed class SagaCommandTests(SagaStoreFixture store) : IClassFixture<SagaStoreFixture>
{
    static readonly string[] CompensatedKinds =
    [
        "started", "command-sent", "reply-received", "command-sent", "reply-received", "step-failed", "state-changed",
        "compensation-sent", "reply-received", "state-changed",
    ];

    async Task<CliResult> RunAsync(params string[] args)
    {
        var result = await Cli.RunAsync([.. args, "--db", store.Db]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("", result.Error);
        return result;
    }

    static List<string> Ids(JsonElement list) => [.. list.GetProperty("sagas").EnumerateArray().Select(s => s.GetProperty("transaction_id").GetString()!)];

    [Fact]
    public async Task List_json_has_every_instance_newest_first_and_counts_per_definition_version_and_state()
    {
        var list = (await RunAsync("sagas", "list", "--json")).Json();

        Assert.Equal(["tx-pay", "tx-run", "tx-comp", "tx-ok"], Ids(list));
        Assert.Equal(4, list.GetProperty("count").GetInt32());
        Assert.Equal(4, list.GetProperty("total").GetInt64());
        var counts = list.GetProperty("counts").EnumerateArray()
            .Select(c => $"{c.GetProperty("definition").GetString()}@{c.GetProperty("version").GetInt32()} {c.GetProperty("state").GetString()} {c.GetProperty("count").GetInt64()}");
        Assert.Equal(["payout@2 completed 1", "transfer@1 running 1", "transfer@1 completed 1", "transfer@1 compensated 1"], counts);

        var sagas = list.GetProperty("sagas").EnumerateArray().ToDictionary(s => s.GetProperty("transaction_id").GetString()!);
        Assert.Equal("running", sagas["tx-run"].GetProperty("state").GetString());
        Assert.Equal("debit", sagas["tx-run"].GetProperty("current_step").GetString());
        Assert.Equal(JsonValueKind.Null, sagas["tx-ok"].GetProperty("current_step").ValueKind);
        Assert.Equal("transfer", sagas["tx-comp"].GetProperty("definition").GetString());
        Assert.Equal(1, sagas["tx-comp"].GetProperty("version").GetInt32());
        Assert.Equal(("credit", "account closed"), (sagas["tx-comp"].GetProperty("failed_step").GetString(), sagas["tx-comp"].GetProperty("failure").GetString()));
        Assert.Equal(2, sagas["tx-pay"].GetProperty("version").GetInt32());
        Assert.True(sagas["tx-ok"].GetProperty("updated_at").GetDateTimeOffset() >= sagas["tx-ok"].GetProperty("started_at").GetDateTimeOffset());
    }

    [Fact]
    public async Task List_table_shows_instances_and_totals()
    {
        var table = (await RunAsync("sagas", "list")).Out;

        foreach (var expected in new[] { "Transaction id", "tx-ok", "tx-comp", "tx-run", "tx-pay", "transfer@1", "payout@2", "compensated", "debit", "Compensating", "Total" })
        {
            Assert.Contains(expected, table, StringComparison.Ordinal);
        }

        Assert.Contains("4 saga instance(s). Show one with: converge sagas show", table, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("tx-pay,tx-ok", "--state", "completed")]
    [InlineData("tx-comp", "--state", "COMPENSATED")]
    [InlineData("tx-run,tx-comp,tx-ok", "--definition", "transfer")]
    [InlineData("tx-pay", "--version", "2")]
    [InlineData("tx-ok", "--definition", "transfer", "--state", "completed", "--version", "1")]
    [InlineData("", "--definition", "refund")]
    public async Task List_filters_by_state_definition_and_version_and_counts_only_what_matches(string expected, params string[] filters)
    {
        var list = (await RunAsync(["sagas", "list", "--json", .. filters])).Json();

        var ids = expected.Length == 0 ? [] : expected.Split(',');
        Assert.Equal(ids, Ids(list));
        Assert.Equal(ids.Length, list.GetProperty("total").GetInt64());
    }

    [Fact]
    public async Task List_max_shows_the_newest_and_says_how_many_there_are()
    {
        var json = (await RunAsync("sagas", "list", "--max", "1", "--json")).Json();
        Assert.Equal(["tx-pay"], Ids(json));
        Assert.Equal(4, json.GetProperty("total").GetInt64());

        var table = (await RunAsync("sagas", "list", "--max", "1")).Out;
        Assert.Contains("Showing the newest 1 of 4; pass --max to see more.", table, StringComparison.Ordinal);

        var none = (await RunAsync("sagas", "list", "--definition", "refund")).Out;
        Assert.Contains("No saga instances match.", none, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Show_json_has_the_instance_and_its_log_in_order()
    {
        var show = (await RunAsync("sagas", "show", "tx-comp", "--json")).Json();

        Assert.Equal("tx-comp", show.GetProperty("transaction_id").GetString());
        Assert.Equal("transfer", show.GetProperty("definition").GetString());
        Assert.Equal(1, show.GetProperty("version").GetInt32());
        Assert.Equal("compensated", show.GetProperty("state").GetString());
        Assert.Equal(JsonValueKind.Null, show.GetProperty("current_step").ValueKind);
        Assert.Equal(["debit", "credit"], show.GetProperty("steps").EnumerateArray().Select(s => s.GetString()));
        Assert.Empty(show.GetProperty("remaining_steps").EnumerateArray());
        Assert.Equal(("credit", "account closed"), (show.GetProperty("failed_step").GetString(), show.GetProperty("failure").GetString()));
        Assert.Equal("closed", show.GetProperty("data").GetProperty("to").GetString());
        Assert.True(show.GetProperty("concurrency_version").GetInt64() > 1);

        var log = show.GetProperty("log").EnumerateArray().ToList();
        Assert.Equal(CompensatedKinds, log.Select(e => e.GetProperty("kind").GetString()));
        Assert.Equal(log.Count, show.GetProperty("count").GetInt32());
        Assert.Equal(0, log[0].GetProperty("offset_ms").GetInt64());
        Assert.All(log.Zip(log.Skip(1)), pair => Assert.True(pair.First.GetProperty("offset_ms").GetInt64() <= pair.Second.GetProperty("offset_ms").GetInt64()));
        Assert.Equal("cli.undebit@1", log[7].GetProperty("message_type").GetString());
        Assert.Equal("debit", log[7].GetProperty("step").GetString());
        Assert.True(log[7].GetProperty("message_id").TryGetGuid(out _));

        var running = (await RunAsync("sagas", "show", "tx-run", "--json")).Json();
        Assert.Equal("debit", running.GetProperty("current_step").GetString());
        Assert.Equal(["debit", "credit"], running.GetProperty("remaining_steps").EnumerateArray().Select(s => s.GetString()));
        Assert.True(running.GetProperty("awaiting").TryGetGuid(out _));
    }

    [Fact]
    public async Task Show_table_has_the_fields_and_the_timeline()
    {
        var show = (await RunAsync("sagas", "show", "tx-comp")).Out;

        foreach (var expected in new[] { "Saga tx-comp: transfer@1, compensated", "Failure", "step 'credit': account closed", "Concurrency version", "\"to\":\"closed\"", "+ms", "compensation-sent", "cli.undebit@1", "running -> compensating" })
        {
            Assert.Contains(expected, show, StringComparison.Ordinal);
        }

        var kinds = CompensatedKinds.Select(k => show.IndexOf(k, StringComparison.Ordinal)).ToList();
        Assert.DoesNotContain(-1, kinds);
        var timeline = show[show.IndexOf("+ms", StringComparison.Ordinal)..];
        Assert.True(timeline.IndexOf("step-failed", StringComparison.Ordinal) < timeline.IndexOf("compensation-sent", StringComparison.Ordinal));
        Assert.DoesNotMatch("[0-9a-f]{32}", show);
    }

    [Fact]
    public async Task Show_of_an_unknown_transaction_exits_1_and_says_how_to_list_them()
    {
        var result = await Cli.RunAsync("sagas", "show", "nope", "--db", store.Db);

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("no saga instance has transaction id 'nope'", result.Error, StringComparison.Ordinal);
        Assert.Contains($"converge sagas list --db {store.Db}", result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
    }

    [Fact]
    public async Task Flow_json_is_the_causal_tree_of_the_transaction_with_the_saga_log_on_its_rows()
    {
        var flow = (await RunAsync("flow", "tx-comp", "--json")).Json();

        Assert.Equal("compensated", flow.GetProperty("saga").GetProperty("state").GetString());
        var steps = flow.GetProperty("steps").EnumerateArray().ToList();
        Assert.Equal(
            [
                "0 cli.debit@1 queue:accounts handled started,command-sent",
                "1 cli.debited@1 saga-log received reply-received",
                "2 cli.credit@1 queue:accounts handled command-sent",
                "3 converge.saga-step-failed@1 saga-log received reply-received,step-failed,state-changed",
                "4 cli.undebit@1 queue:accounts handled compensation-sent",
                "5 cli.undebited@1 saga-log received reply-received,state-changed",
            ],
            steps.Select(s => string.Join(' ',
                s.GetProperty("depth").GetInt32(),
                s.GetProperty("message_type").GetString(),
                s.GetProperty("where").GetString(),
                s.GetProperty("status").GetString(),
                string.Join(',', s.GetProperty("saga").EnumerateArray().Select(e => e.GetProperty("kind").GetString())))));
        Assert.Equal(steps[0].GetProperty("message_id").GetGuid(), steps[1].GetProperty("causation_id").GetGuid());
        Assert.Equal(steps.Count, flow.GetProperty("count").GetInt32());
    }

    [Fact]
    public async Task Flow_table_indents_each_message_under_its_cause()
    {
        var flow = (await RunAsync("flow", "tx-comp")).Out;

        Assert.Contains("Flow of tx-comp: 6 message(s) from ", flow, StringComparison.Ordinal);
        Assert.Contains("saga transfer@1 compensated (step 'credit' failed: account closed)", flow, StringComparison.Ordinal);
        var lines = flow.Split('\n').Select(l => l.TrimEnd()).ToList();
        var tree = lines.SkipWhile(l => !l.StartsWith(" Message", StringComparison.Ordinal)).Skip(2).TakeWhile(l => l.Length > 0)
            .Select(l => System.Text.RegularExpressions.Regex.Match(l, "^ *\\S.*?(?=  |$)").Value).ToList();
        Assert.Equal(
            [
                " cli.debit@1", " · started", " · command-sent debit",
                " └ cli.debited@1", "   · reply-received debit",
                "   └ cli.credit@1", "     · command-sent credit",
                "     └ converge.saga-step-failed@1", "       · reply-received credit", "       · step-failed credit", "       · state-changed credit",
                "       └ cli.undebit@1", "         · compensation-sent debit",
                "         └ cli.undebited@1", "           · reply-received debit", "           · state-changed",
            ],
            tree);
        Assert.Contains("saga-log", flow, StringComparison.Ordinal);
        Assert.DoesNotMatch("[0-9a-f]{32}", flow);
    }

    [Fact]
    public async Task Flow_of_an_unknown_transaction_exits_1()
    {
        var result = await Cli.RunAsync("flow", "nope", "--db", store.Db);

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("nothing in", result.Error, StringComparison.Ordinal);
        Assert.Contains("transaction id 'nope'", result.Error, StringComparison.Ordinal);
        Assert.Contains("converge sagas list", result.Error, StringComparison.Ordinal);
    }
}
