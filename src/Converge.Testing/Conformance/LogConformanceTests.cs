using System.Text;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// The log (<see cref="ILogStore"/>, <see cref="ILogTransaction"/>), part of the core every store must pass: replay from
/// any position, per-stream reads, expected versions, no event skipped by a reader that checkpoints while appenders
/// are still open, and one consumer group shared by two processes. A store's test project derives one class with its
/// <see cref="ConformanceStore"/>.
/// </summary>
public abstract class LogConformanceTests : StoreConformanceBase
{
    /// <summary>Runs the suite on <paramref name="store"/>.</summary>
    /// <param name="store">The store under test; the suite disposes it.</param>
    protected LogConformanceTests(ConformanceStore store)
        : base(store)
    {
    }

    /// <summary>The log can be read from any position (replay), and per stream in version order.</summary>
    [Fact]
    public async Task Log_can_be_replayed_from_any_position_and_read_per_stream()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await host.Bus.PublishAsync("order-1", new ConformanceEvent("placed"));
        await host.Bus.PublishAsync("order-2", new ConformanceEvent("placed"));
        await host.Bus.PublishAsync("order-1", new ConformanceEvent("paid"));

        var all = await host.Store.ReadLogAsync(0, 100, CancellationToken.None);
        var fromTwo = await host.Store.ReadLogAsync(2, 100, CancellationToken.None);
        var order1 = await host.Store.ReadStreamAsync("order-1", 1, 100, CancellationToken.None);

        Assert.Equal([1L, 2L, 3L], all.Select(e => e.Position));
        Assert.Equal([3L], fromTwo.Select(e => e.Position));
        Assert.Equal([1L, 2L], order1.Select(e => e.StreamVersion));
    }

    /// <summary>
    /// The sequence-gap problem: a transaction that appends while another appending transaction is still open must
    /// not make a larger position visible before the smaller one commits, or a reader that checkpoints the larger
    /// position never sees the smaller. Either the second append waits for the first transaction, or its position
    /// is larger and visible only after it; in both cases a reader that moves its checkpoint misses nothing.
    /// </summary>
    [Fact]
    public async Task A_reader_never_skips_an_event_that_commits_after_a_later_position()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var store = host.Store;
        Envelope EventEnvelope(string label) => RawEnvelope("conformance.event", Encoding.UTF8.GetBytes($$"""{"label":"{{label}}"}"""));

        var first = await store.BeginAsync(CancellationToken.None);
        await first.AppendAsync("gap-a", null, [EventEnvelope("first")], CancellationToken.None);
        var second = Task.Run(() => InTransactionAsync(store, async t => await t.AppendAsync("gap-b", null, [EventEnvelope("second")], CancellationToken.None)));

        // A store without turns lets the second commit now; give it the chance before reading.
        await Task.WhenAny(second, Task.Delay(TimeSpan.FromMilliseconds(500)));
        var checkpoint = 0L;
        var seen = new List<LogEvent>();
        foreach (var e in await store.ReadLogAsync(checkpoint, 100, CancellationToken.None))
        {
            seen.Add(e);
            checkpoint = e.Position;
        }

        await first.CommitAsync(CancellationToken.None);
        await first.DisposeAsync();
        await second.WaitAsync(TimeSpan.FromSeconds(30));
        seen.AddRange(await store.ReadLogAsync(checkpoint, 100, CancellationToken.None));

        Assert.Equal(["gap-a", "gap-b"], seen.Select(e => e.Stream).Order());
        Assert.True(seen.Zip(seen.Skip(1)).All(pair => pair.First.Position < pair.Second.Position), "positions must rise in reading order");
    }

    /// <summary>Many appenders at once and a reader that checkpoints as it goes: the reader sees every event, in rising positions.</summary>
    [Fact]
    public async Task Concurrent_appenders_and_a_checkpointing_reader_lose_nothing()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var store = host.Store;
        const int appenders = 6;
        const int transactionsEach = 20;
        var appended = new System.Collections.Concurrent.ConcurrentBag<Guid>();
        var writers = Enumerable.Range(0, appenders).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < transactionsEach; i++)
            {
                await InTransactionAsync(store, async t =>
                {
                    var envelopes = Enumerable.Range(0, 1 + (i % 3)).Select(k => RawEnvelope("conformance.event", Encoding.UTF8.GetBytes($$"""{"label":"w{{w}}-{{i}}-{{k}}"}"""))).ToList();
                    await t.AppendAsync($"writer-{w}", null, envelopes, CancellationToken.None);

                    // More work after the append keeps transactions open across each other's appends.
                    await t.TryRecordInboxAsync("gap-probe", envelopes[0], CancellationToken.None);
                    envelopes.ForEach(e => appended.Add(e.MessageId));
                });
            }
        })).ToArray();

        var seen = new List<LogEvent>();
        var checkpoint = 0L;
        var writing = Task.WhenAll(writers);
        while (true)
        {
            var done = writing.IsCompleted;
            var read = await store.ReadLogAsync(checkpoint, 50, CancellationToken.None);
            foreach (var e in read)
            {
                Assert.True(e.Position > checkpoint, $"position {e.Position} after checkpoint {checkpoint}");
                seen.Add(e);
                checkpoint = e.Position;
            }

            if (done && read.Count == 0)
            {
                break;
            }

            await Task.Yield();
        }

        await writing;
        Assert.Equal(appended.Order(), seen.Select(e => e.Envelope.MessageId).Order());
    }

    /// <summary>An append with a stale expected version fails and writes nothing.</summary>
    [Fact]
    public async Task Append_with_a_stale_expected_version_is_refused()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await host.Bus.PublishAsync("account-9", new ConformanceEvent("opened"), new PublishOptions { ExpectedVersion = 0 });

        var conflict = await Assert.ThrowsAsync<StreamVersionConflictException>(async () =>
            await host.Bus.PublishAsync("account-9", new ConformanceEvent("opened-again"), new PublishOptions { ExpectedVersion = 0 }));
        await host.Bus.PublishAsync("account-9", new ConformanceEvent("credited"), new PublishOptions { ExpectedVersion = 1 });

        Assert.Equal(1, conflict.Actual);
        Assert.Equal(2, (await host.Store.ReadStreamAsync("account-9", 1, 10, CancellationToken.None)).Count);
    }

    /// <summary>Two processes running the same consumer group never both apply an event.</summary>
    [Fact]
    public async Task Two_processes_in_one_consumer_group_apply_each_event_once()
    {
        await using var first = await StartAsync("shared", o => o.ConsumerGroup(Group, g => g.BatchSize = 3));
        await using var second = await StartAsync("shared", o => o.ConsumerGroup(Group, g => g.BatchSize = 4));
        for (var i = 0; i < 60; i++)
        {
            await first.Bus.PublishAsync("s-" + (i % 4), new ConformanceEvent("e" + i));
        }

        await WaitForAsync(async () => (await first.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 60);
        Assert.Equal(60, await CountEffectsAsync(first));
    }

    /// <summary>A consumer group resumes at its checkpoint: events it handled are not handled again by a new process.</summary>
    [Fact]
    public async Task Consumer_group_resumes_at_its_checkpoint()
    {
        await using (var first = await StartAsync("shared"))
        {
            for (var i = 0; i < 3; i++)
            {
                await first.Bus.PublishAsync("stream-a", new ConformanceEvent("before-" + i));
            }

            await WaitForAsync(async () => (await first.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 3);
        }

        await using var sender = await StartAsync("shared", o => o.RunConsumers = false);
        await sender.Bus.PublishAsync("stream-a", new ConformanceEvent("after-0"));
        await sender.Bus.PublishAsync("stream-b", new ConformanceEvent("after-1"));

        await using var second = await StartAsync("shared");
        await WaitForAsync(async () => (await second.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 5);
        Assert.Equal(5, await CountEffectsAsync(second));
        var status = await StatusAsync(second);
        Assert.Equal(5, status.LogPosition);
        Assert.Equal(0, Assert.Single(status.ConsumerGroups).Lag);
    }

    /// <summary>A failing event stops its group (no event is skipped unless the group is told to park poison events).</summary>
    [Fact]
    public async Task Poison_event_stalls_its_group_unless_parking_is_enabled()
    {
        await using (var stalled = await StartAsync("stall", o => o.Retry.MaxAttempts = 2))
        {
            await stalled.Bus.PublishAsync("s", new ConformanceEvent("bad", "transient"));
            await stalled.Bus.PublishAsync("s", new ConformanceEvent("good"));
            await WaitForAsync(async () => (await stalled.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.FailedAttempts >= 2);
            var state = await stalled.Store.GetConsumerGroupAsync(Group, CancellationToken.None);
            Assert.Equal(0, state!.Position);
            Assert.Contains("TimeoutException", state.LastError, StringComparison.Ordinal);
            Assert.Equal(0, await CountEffectsAsync(stalled));
        }

        await using var parking = await StartAsync("park", o =>
        {
            o.Retry.MaxAttempts = 2;
            o.ConsumerGroup(Group, g => g.ParkPoisonEvents = true);
        });
        await parking.Bus.PublishAsync("s", new ConformanceEvent("bad", "transient"));
        await parking.Bus.PublishAsync("s", new ConformanceEvent("good"));
        await WaitForAsync(async () => (await parking.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 2);
        var parked = Assert.Single(await parking.Store.Queries().ListDeadLettersAsync("log:" + Group, 10, CancellationToken.None));
        Assert.Equal(DeadLetterReasons.PoisonEvent, parked.Reason);
        Assert.Equal(1, parked.LogPosition);
        Assert.Equal(1, await CountEffectsAsync(parking, "good"));
        Assert.Equal(0, await CountEffectsAsync(parking, "bad"));
    }

    /// <summary>
    /// The log's head, and a paused consumer group: the flag is kept when the group saves a checkpoint, shows in the
    /// status, and a group that never ran gets a checkpoint at 0 when it is paused.
    /// </summary>
    [Fact]
    public async Task Pausing_a_group_keeps_its_checkpoint_and_saving_a_checkpoint_keeps_the_pause()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        Assert.Equal(0, await host.Store.GetLogHeadAsync(CancellationToken.None));
        for (var i = 0; i < 3; i++)
        {
            await host.Bus.PublishAsync("s", new ConformanceEvent("e" + i));
        }

        Assert.Equal(3, await host.Store.GetLogHeadAsync(CancellationToken.None));
        await InTransactionAsync(host.Store, t => t.ConsumerGroups().SetConsumerGroupPausedAsync("never-ran", true, CancellationToken.None));
        var created = await host.Store.GetConsumerGroupAsync("never-ran", CancellationToken.None);
        Assert.True(created is { Position: 0, Paused: true }, $"a group paused before it ran gets a paused checkpoint at 0, not {created}");

        await InTransactionAsync(host.Store, async t => Assert.True(await t.SaveConsumerGroupAsync(Group, 0, 2, 0, null, CancellationToken.None)));
        await InTransactionAsync(host.Store, t => t.ConsumerGroups().SetConsumerGroupPausedAsync(Group, true, CancellationToken.None));
        Assert.True((await host.Store.GetConsumerGroupAsync(Group, CancellationToken.None)) is { Position: 2, Paused: true });
        await InTransactionAsync(host.Store, async t => Assert.True(await t.SaveConsumerGroupAsync(Group, 2, 3, 1, "failed", CancellationToken.None)));
        Assert.True((await host.Store.GetConsumerGroupAsync(Group, CancellationToken.None)) is { Position: 3, Paused: true, FailedAttempts: 1 });
        Assert.True(Assert.Single((await StatusAsync(host)).ConsumerGroups, g => g.Group == Group).Paused);

        await InTransactionAsync(host.Store, t => t.ConsumerGroups().SetConsumerGroupPausedAsync(Group, false, CancellationToken.None));
        Assert.True((await host.Store.GetConsumerGroupAsync(Group, CancellationToken.None)) is { Position: 3, Paused: false });
    }

    /// <summary>A paused group's runner handles nothing, and goes on from its checkpoint once resumed.</summary>
    [Fact]
    public async Task A_paused_group_handles_nothing_until_it_is_resumed()
    {
        await using (var sender = await StartAsync("shared", o => o.RunConsumers = false))
        {
            for (var i = 0; i < 4; i++)
            {
                await sender.Bus.PublishAsync("s", new ConformanceEvent("e" + i));
            }

            await InTransactionAsync(sender.Store, t => t.ConsumerGroups().SetConsumerGroupPausedAsync(Group, true, CancellationToken.None));
        }

        await using var host = await StartAsync("shared", o => o.PollInterval = TimeSpan.FromMilliseconds(20));
        Assert.Equal(0, await host.Tracker.WhenGroupPausedAsync(Group).WaitAsync(ConvergeTestHost.DefaultTimeout));
        Assert.Equal(0, await CountEffectsAsync(host));
        Assert.Equal(0, (await host.Store.GetConsumerGroupAsync(Group, CancellationToken.None))!.Position);

        await InTransactionAsync(host.Store, t => t.ConsumerGroups().SetConsumerGroupPausedAsync(Group, false, CancellationToken.None));
        await WaitForAsync(async () => (await host.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 4);
        Assert.Equal(4, await CountEffectsAsync(host));
    }

    /// <summary>A new group configured to start at the head handles only what is appended after it first ran; one started after a position, only what follows it.</summary>
    [Fact]
    public async Task A_new_group_starts_at_the_head_or_after_a_position_when_told()
    {
        await using (var sender = await StartAsync("shared", o => o.RunConsumers = false))
        {
            for (var i = 0; i < 3; i++)
            {
                await sender.Bus.PublishAsync("s", new ConformanceEvent("before-" + i));
            }
        }

        await using (var atHead = await StartAsync("shared", o => o.ConsumerGroup(Group, g => g.StartAt = GroupStart.Head)))
        {
            await WaitForAsync(async () => (await atHead.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 3);
            await atHead.Bus.PublishAsync("s", new ConformanceEvent("after-0"));
            await atHead.Bus.PublishAsync("s", new ConformanceEvent("after-1"));
            await WaitForAsync(async () => (await atHead.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 5);
            Assert.Equal(2, await CountEffectsAsync(atHead));
            Assert.Equal(0, await CountEffectsAsync(atHead, "before-0"));
        }

        await using var afterTwo = await StartAsync("other", o => o.ConsumerGroup(Group, g => g.StartAt = GroupStart.After(2)));
        for (var i = 0; i < 4; i++)
        {
            await afterTwo.Bus.PublishAsync("s", new ConformanceEvent("e" + i));
        }

        await WaitForAsync(async () => (await afterTwo.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 4);
        Assert.Equal(2, await CountEffectsAsync(afterTwo));
        Assert.Equal(1, await CountEffectsAsync(afterTwo, "e3"));
        Assert.Equal(0, await CountEffectsAsync(afterTwo, "e1"));
    }
}
