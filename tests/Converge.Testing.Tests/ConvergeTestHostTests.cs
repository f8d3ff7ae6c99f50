using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing.InMemory;

namespace Converge.Testing.Tests;

public sealed record Start(string Key);

public sealed record Next(string Key);

public sealed record Happened(string Key);

public sealed class StartHandler : IHandler<Start>
{
    public async Task HandleAsync(Start message, MessageContext context, CancellationToken cancellationToken)
    {
        await context.SendAsync(new Next(message.Key), cancellationToken: cancellationToken);
        await context.PublishAsync("s-" + message.Key, new Happened(message.Key), cancellationToken: cancellationToken);
    }
}

public sealed class NextHandler : IHandler<Next>
{
    public Task HandleAsync(Next message, MessageContext context, CancellationToken cancellationToken) => Task.CompletedTask;
}

public sealed class HappenedHandler : IHandler<Happened>
{
    public Task HandleAsync(Happened message, MessageContext context, CancellationToken cancellationToken) => Task.CompletedTask;
}

public sealed class ConvergeTestHostTests
{
    public static TheoryData<bool> Stores => [false, true];

    /// <summary>Registers the test's messages and handlers; on the in-memory store when <paramref name="inMemory"/>, else on the default (a throw-away SQLite file).</summary>
    static void Register(Runtime.ConvergeOptions o, bool inMemory)
    {
        if (inMemory)
        {
            o.UseInMemory();
        }

        o.Messages.Register<Start>("t.start").Register<Next>("t.next").Register<Happened>("t.happened");
        o.Handle<Start, StartHandler>("starts");
        o.Subscribe<Happened, HappenedHandler>("watchers");
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task SendAndWait_returns_only_after_everything_the_message_caused_has_finished(bool inMemory)
    {
        await using var host = await ConvergeTestHost.StartAsync(o =>
        {
            Register(o, inMemory);
            o.Handle<Next, NextHandler>("nexts");
        });

        var history = await host.SendAndWaitAsync(new Start("a"));

        Assert.Contains(history, h => h.Envelope.MessageType == "t.next@1" && h.What == "completed");
        Assert.Contains(history, h => h.Where == "log:watchers" && h.What == "completed");
        Assert.Equal(history.Count(h => h.What == "sent"), history.Count(h => h.What == "completed" && !h.Where.StartsWith("log:", StringComparison.Ordinal)));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task SendAndWait_names_what_is_still_pending_when_it_times_out(bool inMemory)
    {
        await using var host = await ConvergeTestHost.StartAsync(o =>
        {
            Register(o, inMemory);
            o.Route<Next>("nobody-listens");
        });

        // Next is pending only once Start was handled, so the time allowed must cover that, on a busy machine too.
        var timeout = await Assert.ThrowsAsync<TimeoutException>(() => host.SendAndWaitAsync(new Start("b"), timeout: TimeSpan.FromSeconds(5)));

        Assert.Contains("at nobody-listens", timeout.Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Each_host_gets_its_own_throw_away_store(bool inMemory)
    {
        await using var first = await ConvergeTestHost.StartAsync(o => Register(o, inMemory));
        await using var second = await ConvergeTestHost.StartAsync(o => Register(o, inMemory));
        await first.Bus.PublishAsync("only-in-first", new Happened("x"));

        Assert.Equal(1, (await first.Store.Queries().GetStatusAsync(CancellationToken.None)).LogPosition);
        Assert.Equal(0, (await second.Store.Queries().GetStatusAsync(CancellationToken.None)).LogPosition);
    }
}
