using Converge.Contracts;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Sqlite;
using Converge.Storage;

namespace Converge.Tests.Sagas;

/// <summary>Instances finish on the definition version they started on; new ones start on the newest.</summary>
public sealed class VersioningTests : IDisposable
{
    readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("converge-versions-");

    string StorePath => Path.Combine(_folder.FullName, "shop.db");

    public void Dispose() => _folder.Delete(recursive: true);

    static void V1(ConvergeOptions o) => o.AddSaga<OrderSaga>();

    static void V2(ConvergeOptions o) => o.AddSaga<OrderSagaV2>();

    static void V1AndV2(ConvergeOptions o) => o.AddSaga<OrderSaga>().AddSaga<OrderSagaV2>();

    /// <summary>Runs a process with version 1 only, whose payments service is down: the instance stops awaiting the charge.</summary>
    async Task<(SagaInstance Instance, int LogLength)> StartOnV1AwaitingChargeAsync(Participants participants, string tx, string order)
    {
        await using var host = await ShopSaga.StartAsync(participants, o => o.UseSqlite(StorePath), sagas: V1, without: ["payments"]);
        Assert.True(await host.Sagas.StartAsync("order", tx, new OrderData { Order = order, Amount = 7 }));
        var instance = await host.WaitForSagaAsync(tx, i => i.StepIndex == 1);
        return (instance, (await ShopSaga.LogAsync(host, tx)).Count);
    }

    [Fact]
    public async Task Instances_started_on_v1_finish_on_v1_after_v2_is_deployed_while_new_ones_start_on_v2()
    {
        var participants = new Participants();
        var (old, _) = await StartOnV1AwaitingChargeAsync(participants, "tx-old", "old");

        await using var host = await ShopSaga.StartAsync(participants, o => o.UseSqlite(StorePath), sagas: V1AndV2);
        Assert.True(await host.Sagas.StartAsync("order", "tx-new", new OrderData { Order = "new", Amount = 8 }));
        var finishedOld = await host.WaitForSagaAsync("tx-old");
        var finishedNew = await host.WaitForSagaAsync("tx-new");

        Assert.Equal((1, SagaState.Running), (old.Version, old.State));
        Assert.Equal((1, SagaState.Completed), (finishedOld.Version, finishedOld.State));
        Assert.Equal(["reserve", "charge", "ship", "notify"], finishedOld.Steps);
        Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("old"));
        Assert.Equal(["completed"], await ShopSaga.OutcomesAsync(host, "tx-old"));

        Assert.Equal((2, SagaState.Completed), (finishedNew.Version, finishedNew.State));
        Assert.Equal(["reserve", "charge", "ship"], finishedNew.Steps);
        Assert.Equal(["reserve", "charge", "ship"], participants.EffectsOf("new"));
        Assert.Equal(["v2-completed"], await ShopSaga.OutcomesAsync(host, "tx-new"));
        Assert.Equal("version 2", (await ShopSaga.LogAsync(host, "tx-new"))[0].Detail);

        Assert.Equal(
            [new SagaCount("order", 1, SagaState.Completed, 1), new SagaCount("order", 2, SagaState.Completed, 1)],
            await host.Store.SagaQueries().CountSagasAsync(CancellationToken.None));
        Assert.Equal(["tx-old"], (await host.Sagas.QueryAsync(new SagaQuery { Definition = "order", Version = 1 })).Select(i => i.TransactionId));
    }

    [Fact]
    public async Task A_reply_for_a_version_no_longer_registered_is_dead_lettered_naming_the_fix_and_the_instance_stays()
    {
        var participants = new Participants();
        var (before, logLength) = await StartOnV1AwaitingChargeAsync(participants, "tx-pinned", "pinned");

        DeadLetter letter;
        await using (var host = await ShopSaga.StartAsync(participants, o => o.UseSqlite(StorePath), sagas: V2))
        {
            await ShopSaga.WaitUntilAsync(async () => (await host.Store.Queries().ListDeadLettersAsync(ShopSaga.Queue, 10, CancellationToken.None)).Count > 0, "the reply to be dead-lettered");
            letter = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(ShopSaga.Queue, 10, CancellationToken.None));
            var after = (await host.Sagas.GetAsync("tx-pinned"))!;

            Assert.Equal(DeadLetterReasons.PermanentFailure, letter.Reason);
            Assert.Equal(1, letter.Attempts);
            Assert.Equal("test.charged@1", letter.Envelope.MessageType);
            Assert.Contains("Saga 'order' version 1 is not registered in this process", letter.Exception, StringComparison.Ordinal);
            Assert.Contains("instance 'tx-pinned'", letter.Exception, StringComparison.Ordinal);
            Assert.Contains("Registered versions: 2.", letter.Exception, StringComparison.Ordinal);
            Assert.Contains("Register the version 1 definition again", letter.Exception, StringComparison.Ordinal);
            Assert.Equal(
                (before.Version, before.State, before.StepIndex, before.Awaiting, before.ConcurrencyVersion),
                (after.Version, after.State, after.StepIndex, after.Awaiting, after.ConcurrencyVersion));
            Assert.Equal(logLength, (await ShopSaga.LogAsync(host, "tx-pinned")).Count);
        }

        // The fix the message names: register version 1 again and retry the dead letter.
        await using var fixedHost = await ShopSaga.StartAsync(participants, o => o.UseSqlite(StorePath), sagas: V1AndV2);
        Assert.True(await fixedHost.Store.RetryDeadLetterAsync(letter.Id, CancellationToken.None));
        var finished = await fixedHost.WaitForSagaAsync("tx-pinned");

        Assert.Equal((1, SagaState.Completed), (finished.Version, finished.State));
        Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("pinned"));
    }

    [Fact]
    public async Task New_instances_start_on_the_highest_version_whatever_the_registration_order()
    {
        await using var host = await ShopSaga.StartAsync(new Participants(), sagas: o => o.AddSaga<OrderSagaV2>().AddSaga<OrderSaga>());

        await host.Sagas.StartAsync("order", "tx-order", new OrderData { Order = "reg", Amount = 1 });
        var instance = await host.WaitForSagaAsync("tx-order");

        Assert.Equal((2, SagaState.Completed), (instance.Version, instance.State));
    }
}
