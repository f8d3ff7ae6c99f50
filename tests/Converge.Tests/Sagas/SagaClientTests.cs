using Converge.Sagas;
using Converge.Sqlite;
using Converge.Storage;

namespace Converge.Tests.Sagas;

/// <summary>Starting sagas and reading what is left to do.</summary>
public sealed class SagaClientTests
{
    static SagaInstance Instance(SagaState state, int stepIndex) => new()
    {
        TransactionId = "tx",
        Definition = "order",
        Version = 1,
        State = state,
        StepIndex = stepIndex,
        Steps = ["reserve", "charge", "ship", "notify"],
        Data = "{}"u8.ToArray(),
        StartedAt = DateTimeOffset.UnixEpoch,
    };

    [Theory]
    [InlineData(0, new[] { "reserve", "charge", "ship", "notify" })]
    [InlineData(1, new[] { "charge", "ship", "notify" })]
    [InlineData(3, new[] { "notify" })]
    public void Remaining_steps_of_a_running_instance_start_with_the_one_in_progress(int stepIndex, string[] remaining) =>
        Assert.Equal(remaining, Instance(SagaState.Running, stepIndex).RemainingSteps());

    [Theory]
    [InlineData(1, new[] { "compensate charge", "compensate reserve" })]
    [InlineData(0, new[] { "compensate reserve" })]
    public void Remaining_steps_of_a_compensating_instance_are_the_compensations_in_reverse(int stepIndex, string[] remaining) =>
        Assert.Equal(remaining, Instance(SagaState.Compensating, stepIndex).RemainingSteps());

    [Fact]
    public void An_ended_instance_has_no_remaining_steps()
    {
        Assert.Empty(Instance(SagaState.Completed, 4).RemainingSteps());
        Assert.Empty(Instance(SagaState.Compensated, -1).RemainingSteps());
        Assert.Throws<ArgumentNullException>(() => SagaProgress.RemainingSteps(null!));
    }

    [Fact]
    public async Task Remaining_steps_of_real_instances_going_forward_and_compensating()
    {
        var participants = new Participants().Silence("p1", "ship").Refuse("p2", "ship").Silence("p2", "refund");
        await using var host = await ShopSaga.StartAsync(participants);

        await host.Sagas.StartAsync("order", "tx-p1", new OrderData { Order = "p1", Amount = 1 });
        await host.Sagas.StartAsync("order", "tx-p2", new OrderData { Order = "p2", Amount = 1 });
        var forward = await host.WaitForSagaAsync("tx-p1", i => i.StepIndex == 2);
        var compensating = await host.WaitForSagaAsync("tx-p2", i => i.State == SagaState.Compensating);

        Assert.Equal(["ship", "notify"], forward.RemainingSteps());
        Assert.Equal(["compensate charge", "compensate reserve"], compensating.RemainingSteps());
    }

    [Fact]
    public async Task Starting_twice_with_one_transaction_id_makes_one_instance()
    {
        var participants = new Participants();
        await using var host = await ShopSaga.StartAsync(participants);

        var first = await host.Sagas.StartAsync("order", "tx-once", new OrderData { Order = "once", Amount = 1 });
        var second = await host.Sagas.StartAsync("order", "tx-once", new OrderData { Order = "other", Amount = 2 });
        var instance = await host.WaitForSagaAsync("tx-once");

        Assert.True(first);
        Assert.False(second);
        Assert.Equal("once", host.Sagas.ReadData<OrderData>(instance).Order);
        Assert.Single(await host.Sagas.QueryAsync(new SagaQuery { Definition = "order" }));
        Assert.Single(await ShopSaga.LogAsync(host, "tx-once"), e => e.Kind == SagaLogKinds.Started);
        Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("once"));
        Assert.Empty(participants.EffectsOf("other"));
    }

    [Fact]
    public async Task Starting_at_once_from_many_callers_makes_one_instance()
    {
        await using var host = await ShopSaga.StartAsync(new Participants(), o => o.RunConsumers = false);

        var started = await Task.WhenAll(Enumerable.Range(0, 10).Select(i => host.Sagas.StartAsync("order", "tx-race", new OrderData { Order = "race-" + i, Amount = i }).AsTask()));

        Assert.Single(started, s => s);
        Assert.Single(await ShopSaga.LogAsync(host, "tx-race"), e => e.Kind == SagaLogKinds.Started);
        Assert.Single(await host.Store.Queries().ReadFlowAsync("tx-race", CancellationToken.None), i => i.MessageType == "test.reserve@1");
    }

    [Fact]
    public async Task A_saga_started_in_the_callers_transaction_exists_only_if_it_commits()
    {
        var participants = new Participants();
        await using var host = await ShopSaga.StartAsync(participants);
        await using var connection = ((SqliteMessageStore)host.Store).OpenConnection();

        await using (var rolledBack = await connection.BeginTransactionAsync())
        {
            Assert.True(await host.Sagas.StartAsync("order", "tx-outbox-1", new OrderData { Order = "ob1", Amount = 1 }, rolledBack));
            await rolledBack.RollbackAsync();
        }

        await using (var committed = await connection.BeginTransactionAsync())
        {
            Assert.True(await host.Sagas.StartAsync("order", "tx-outbox-2", new OrderData { Order = "ob2", Amount = 1 }, committed));
            await committed.CommitAsync();
        }

        var instance = await host.WaitForSagaAsync("tx-outbox-2");
        Assert.Equal(SagaState.Completed, instance.State);
        Assert.Null(await host.Sagas.GetAsync("tx-outbox-1"));
        Assert.Empty(await ShopSaga.LogAsync(host, "tx-outbox-1"));
        Assert.Empty(participants.EffectsOf("ob1"));
    }

    [Fact]
    public async Task Starting_an_unknown_saga_or_with_the_wrong_data_says_what_to_do()
    {
        await using var host = await ShopSaga.StartAsync(new Participants(), o => o.RunConsumers = false);

        var unknown = await Assert.ThrowsAsync<InvalidOperationException>(async () => await host.Sagas.StartAsync("invoice", "tx-x", new OrderData()));
        var wrongData = await Assert.ThrowsAsync<ArgumentException>(async () => await host.Sagas.StartAsync("order", "tx-y", new Reserve("o", 1)));

        Assert.Contains("No saga named 'invoice' is registered. Call options.AddSaga<TSaga>()", unknown.Message, StringComparison.Ordinal);
        Assert.Contains("Saga 'order' version 1 takes OrderData data, not Reserve.", wrongData.Message, StringComparison.Ordinal);
        Assert.Empty(await host.Sagas.QueryAsync(new SagaQuery()));
    }
}
