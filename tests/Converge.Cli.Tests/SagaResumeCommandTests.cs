using System.Collections.Concurrent;
using Converge.PostgreSql;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Cli.Tests;

/// <summary>Which bank commands fail (throw) for now; the test fixes them by taking them out.</summary>
public sealed class BrokenBank
{
    public ConcurrentDictionary<string, bool> Broken { get; } = new();
}

/// <summary>Like <see cref="Bank"/>, but the commands named in <see cref="BrokenBank"/> throw, so they are dead-lettered.</summary>
public sealed class FlakyBank(BrokenBank broken) : IHandler<Debit>, IHandler<Undebit>, IHandler<Credit>
{
    void ThrowIfBroken(string command)
    {
        if (broken.Broken.ContainsKey(command))
        {
            throw new InvalidOperationException($"{command} is down");
        }
    }

    public async Task HandleAsync(Debit message, MessageContext context, CancellationToken cancellationToken)
    {
        ThrowIfBroken("debit");
        await context.ReplyAsync(new Debited(message.Account), cancellationToken);
    }

    public async Task HandleAsync(Undebit message, MessageContext context, CancellationToken cancellationToken)
    {
        ThrowIfBroken("undebit");
        await context.ReplyAsync(new Undebited(message.Account), cancellationToken);
    }

    public async Task HandleAsync(Credit message, MessageContext context, CancellationToken cancellationToken) =>
        await context.ReplyFailureAsync("account closed", cancellationToken);
}

/// <summary><c>converge sagas list --state stuck</c> and <c>converge sagas resume</c> against a running application.</summary>
public sealed class SagaResumeCommandTests : IDisposable
{
    readonly TempFolder _folder = new();
    readonly BrokenBank _bank = new();

    string Db => _folder.File("app.db");

    public void Dispose() => _folder.Dispose();

    Task<ConvergeTestHost> StartAsync(Action<ConvergeOptions>? store = null) => ConvergeTestHost.StartAsync(
        o =>
        {
            if (store is null)
            {
                o.UseSqlite(Db);
            }
            else
            {
                store(o);
            }

            o.PollInterval = TimeSpan.FromMilliseconds(50);
            o.Retry.MaxAttempts = 1;
            o.SagaRetry.MaxAttempts = 3;
            o.SagaRetry.InitialDelay = TimeSpan.Zero;
            o.SagaRetry.MaxDelay = TimeSpan.Zero;
            o.Messages.Register<Debit>("cli.debit").Register<Debited>("cli.debited").Register<Undebit>("cli.undebit")
                .Register<Undebited>("cli.undebited").Register<Credit>("cli.credit").Register<Credited>("cli.credited");
            o.Handle<Debit, FlakyBank>("accounts").Handle<Undebit, FlakyBank>("accounts").Handle<Credit, FlakyBank>("accounts");
            o.AddSaga<TransferSaga>();
        },
        s => s.AddSingleton(_bank).AddSingleton<FlakyBank>());

    [Fact]
    public async Task A_stuck_saga_is_listed_and_resumed_from_the_command_line_once_the_participant_works()
    {
        _bank.Broken["undebit"] = true;
        await using var host = await StartAsync();
        await host.Sagas.StartAsync("transfer", "tx-stuck", new TransferData { From = "alice", To = "closed", Amount = 5 });
        await host.Sagas.StartAsync("transfer", "tx-fine", new TransferData { From = "bob", To = "closed", Amount = 5 });
        await host.WaitForSagaAsync("tx-stuck", s => s.State == SagaState.Stuck);
        await host.WaitForSagaAsync("tx-fine", s => s.State == SagaState.Stuck);

        var list = await Cli.RunAsync("sagas", "list", "--state", "stuck", "--db", Db, "--json");
        Assert.True(list.ExitCode == 0, list.ToString());
        var stuck = list.Json().GetProperty("sagas").EnumerateArray().Single(s => s.GetProperty("transaction_id").GetString() == "tx-stuck");
        Assert.Equal("stuck", stuck.GetProperty("state").GetString());
        Assert.Equal("debit", stuck.GetProperty("current_step").GetString());
        Assert.Contains("compensation of step 'debit' failed 3 time(s)", stuck.GetProperty("stuck_reason").GetString(), StringComparison.Ordinal);
        Assert.Contains("undebit is down", stuck.GetProperty("last_error").GetString(), StringComparison.Ordinal);
        var table = await Cli.RunAsync("sagas", "list", "--state", "stuck", "--db", Db);
        Assert.Contains("Stuck instances wait for an operator", table.Out, StringComparison.Ordinal);
        var show = await Cli.RunAsync("sagas", "show", "tx-stuck", "--db", Db);
        Assert.Contains("Last error", show.Out, StringComparison.Ordinal);
        Assert.Contains("-> stuck", show.Out, StringComparison.Ordinal);
        Assert.Equal(6, (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).DeadLetters); // 3 attempts of each compensation

        _bank.Broken.TryRemove("undebit", out _);
        var resume = await Cli.RunAsync("sagas", "resume", "tx-stuck", "--db", Db);
        Assert.True(resume.ExitCode == 0, resume.ToString());
        Assert.Contains("Resume of saga tx-stuck (transfer@1) requested", resume.Out, StringComparison.Ordinal);
        var done = await host.WaitForSagaAsync("tx-stuck");

        Assert.Equal(SagaState.Compensated, done.State);
        Assert.Contains(await host.Sagas.ReadLogAsync("tx-stuck"), e => e.Detail == "stuck -> compensating: resumed by converge sagas resume");
        Assert.Equal(SagaState.Stuck, (await host.Sagas.GetAsync("tx-fine"))!.State);

        var again = await Cli.RunAsync("sagas", "resume", "tx-stuck", "--db", Db);
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("saga 'tx-stuck' is compensated, not stuck, so there is nothing to resume", again.Error, StringComparison.Ordinal);

        var unknown = await Cli.RunAsync("sagas", "resume", "tx-none", "--db", Db);
        Assert.Equal(1, unknown.ExitCode);
        Assert.Contains("no saga instance has transaction id 'tx-none'", unknown.Error, StringComparison.Ordinal);
        Assert.Contains("converge sagas list --state stuck", unknown.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_resume_request_for_a_saga_that_is_no_longer_stuck_is_logged_and_ignored()
    {
        _bank.Broken["undebit"] = true;
        await using (var host = await StartAsync())
        {
            await host.Sagas.StartAsync("transfer", "tx-twice", new TransferData { From = "carol", To = "closed", Amount = 5 });
            await host.WaitForSagaAsync("tx-twice", s => s.State == SagaState.Stuck);
        }

        // Two requests while the application is down: the first resumes, the second finds it no longer stuck.
        _bank.Broken.TryRemove("undebit", out _);
        Assert.Equal(0, (await Cli.RunAsync("sagas", "resume", "tx-twice", "--db", Db)).ExitCode);
        Assert.Equal(0, (await Cli.RunAsync("sagas", "resume", "tx-twice", "--db", Db)).ExitCode);
        await using var restarted = await StartAsync();
        Assert.Equal(SagaState.Compensated, (await restarted.WaitForSagaAsync("tx-twice")).State);
        await restarted.WaitForQuiescenceAsync();

        var log = await restarted.Sagas.ReadLogAsync("tx-twice");
        Assert.Single(log, e => e.Detail == "stuck -> compensating: resumed by converge sagas resume");
        var ignored = Assert.Single(log, e => e.Kind == SagaLogKinds.ReplyIgnored);
        Assert.StartsWith("resume requested by converge sagas resume, but the saga is compensat", ignored.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Resume_works_on_a_postgresql_store()
    {
        await using var postgres = await PostgresStore.CreateAsync();
        _bank.Broken["undebit"] = true;
        await using var host = await StartAsync(o => o.UsePostgreSql(PostgresStore.ConnectionString, p => p.Schema = postgres.Schema));
        await host.Sagas.StartAsync("transfer", "tx-pg", new TransferData { From = "dave", To = "closed", Amount = 5 });
        await host.WaitForSagaAsync("tx-pg", s => s.State == SagaState.Stuck);

        var list = await postgres.RunAsync("sagas", "list", "--state", "stuck", "--json");
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.Equal(["tx-pg"], list.Json().GetProperty("sagas").EnumerateArray().Select(e => e.GetProperty("transaction_id").GetString()));

        _bank.Broken.TryRemove("undebit", out _);
        var resume = await postgres.RunAsync("sagas", "resume", "tx-pg");
        Assert.True(resume.ExitCode == 0, resume.ToString());
        Assert.Equal(SagaState.Compensated, (await host.WaitForSagaAsync("tx-pg")).State);
        Assert.Equal(1, (await postgres.RunAsync("sagas", "resume", "tx-pg")).ExitCode);
    }
}
