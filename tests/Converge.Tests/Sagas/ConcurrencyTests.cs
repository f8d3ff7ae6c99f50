using System.Collections.Concurrent;
using Converge.Faults;
using Converge.Sagas;
using Converge.Sqlite;
using Converge.Storage;

namespace Converge.Tests.Sagas;

/// <summary>Two replies for one instance handled at once cannot both apply.</summary>
public sealed class ConcurrencyTests
{
    static readonly string[] ParticipantQueues = ["credit", "payments", "shipping", "notify"];

    [Fact]
    public async Task The_second_of_two_saves_from_the_same_version_is_refused_and_the_first_stays()
    {
        await using var host = await ShopSaga.StartAsync(new Participants(), o => o.RunConsumers = false);
        await host.Sagas.StartAsync("order", "tx-c1", new OrderData { Order = "c1", Amount = 1 });
        SagaInstance first;
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            first = (await transaction.Sagas().LoadSagaAsync("tx-c1", CancellationToken.None))!;
            await transaction.CommitAsync();
        }

        var second = (await host.Store.SagaQueries().GetSagaAsync("tx-c1", CancellationToken.None))!;
        var firstCommand = Guid.CreateVersion7();
        var secondCommand = Guid.CreateVersion7();
        Assert.Equal(first.ConcurrencyVersion, second.ConcurrencyVersion);

        first.StepIndex = 1;
        first.Awaiting = firstCommand;
        bool firstSaved;
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            firstSaved = await transaction.Sagas().UpdateSagaAsync(first, 1, CancellationToken.None);
            await transaction.CommitAsync();
        }

        second.StepIndex = 2;
        second.Awaiting = secondCommand;
        second.State = SagaState.Compensating;
        bool secondSaved;
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            secondSaved = await transaction.Sagas().UpdateSagaAsync(second, 1, CancellationToken.None);
            await transaction.CommitAsync();
        }

        Assert.True(firstSaved);
        Assert.False(secondSaved);
        Assert.Equal(2, first.ConcurrencyVersion);
        Assert.Equal(1, second.ConcurrencyVersion);
        var stored = (await host.Store.SagaQueries().GetSagaAsync("tx-c1", CancellationToken.None))!;
        Assert.Equal((SagaState.Running, 1, firstCommand, 2L), (stored.State, stored.StepIndex, stored.Awaiting, stored.ConcurrencyVersion));
    }

    [Fact]
    public async Task A_reply_whose_save_loses_the_race_is_retried_against_the_new_state_and_applies_once()
    {
        var folder = Directory.CreateTempSubdirectory("converge-race-");
        try
        {
            var lost = new ConcurrentDictionary<string, bool>();
            RacingStore? racing = null;
            var participants = new Participants();
            await using var host = await ShopSaga.StartAsync(participants, o =>
            {
                o.UseSqlite(Path.Combine(folder.FullName, "race.db"));
                var sqlite = o.StoreFactory!;
                o.StoreFactory = context => racing = new RacingStore(sqlite(context), instance => lost.TryAdd(instance.TransactionId, true));
                o.Retry.InitialDelay = TimeSpan.FromMilliseconds(1);
            });

            await host.Sagas.StartAsync("order", "tx-c2", new OrderData { Order = "c2", Amount = 1 });
            var instance = await host.WaitForSagaAsync("tx-c2");

            Assert.Equal(SagaState.Completed, instance.State);
            Assert.Equal([("tx-c2", 1L)], racing!.Lost);
            Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("c2"));
            Assert.Equal(
                ["started", "command-sent:reserve", "reply-received:reserve", "command-sent:charge", "reply-received:charge",
                 "command-sent:ship", "reply-received:ship", "command-sent:notify", "reply-received:notify", "state-changed"],
                await ShopSaga.KindsAsync(host, "tx-c2"));
            Assert.Equal(0, (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).DeadLetters);
            Assert.Equal(["completed"], await ShopSaga.OutcomesAsync(host, "tx-c2"));
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Duplicated_replies_handled_by_four_consumers_at_once_complete_each_saga_exactly_once()
    {
        const int count = 24;
        var participants = new Participants();
        await using var host = await ShopSaga.StartAsync(participants, o =>
        {
            o.Queue(ShopSaga.Queue, q => { q.Concurrency = 4; q.BatchSize = 1; });
            foreach (var queue in ParticipantQueues)
            {
                o.Queue(queue, q => { q.Concurrency = 2; q.BatchSize = 1; });
            }

            o.Faults.Enabled = true;
            o.Faults.Rules.Add(new FaultRule { Action = FaultAction.DuplicateReply });
        });

        var ids = Enumerable.Range(0, count).Select(i => "tx-many-" + i).ToList();
        await Task.WhenAll(ids.Select((tx, i) => host.Sagas.StartAsync("order", tx, new OrderData { Order = "m" + i, Amount = i }).AsTask()));
        foreach (var tx in ids)
        {
            Assert.Equal(SagaState.Completed, (await host.WaitForSagaAsync(tx)).State);
        }

        foreach (var tx in ids)
        {
            await ShopSaga.WaitUntilAsync(async () => (await ShopSaga.LogAsync(host, tx)).Count(e => e.Kind == SagaLogKinds.ReplyIgnored) == 4, $"the four copies of '{tx}' to be ignored");
        }

        for (var i = 0; i < count; i++)
        {
            var tx = ids[i];
            Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("m" + i));
            Assert.Equal(["completed"], await ShopSaga.OutcomesAsync(host, tx));
            var log = await ShopSaga.LogAsync(host, tx);
            Assert.Equal(["reserve", "charge", "ship", "notify"], log.Where(e => e.Kind == SagaLogKinds.ReplyReceived).Select(e => e.Step));
            Assert.Equal(["reserve", "charge", "ship", "notify"], log.Where(e => e.Kind == SagaLogKinds.CommandSent).Select(e => e.Step));
            Assert.All(log.Where(e => e.Kind == SagaLogKinds.ReplyIgnored), e => Assert.StartsWith("duplicate:", e.Detail, StringComparison.Ordinal));
            Assert.Single(log, e => e.Kind == SagaLogKinds.StateChanged);
        }

        Assert.Equal(0, (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).DeadLetters);
    }
}
