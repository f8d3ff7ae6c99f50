using System.Text;
using Converge.Sagas;
using Converge.Storage;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// Saga storage (<see cref="ISagaTransaction"/>, <see cref="ISagaQueries"/>), an optional contract: instances that insert
/// once, save only from the version they read, read back with every field, are queried and counted, and a saga log in
/// append order. A store that offers saga storage derives one class with its <see cref="ConformanceStore"/>.
/// </summary>
public abstract class SagaStorageConformanceTests : StoreConformanceBase
{
    /// <summary>Runs the suite on <paramref name="store"/>.</summary>
    /// <param name="store">The store under test; the suite disposes it.</param>
    protected SagaStorageConformanceTests(ConformanceStore store)
        : base(store)
    {
    }

    /// <summary>A saga instance reads back as stored; inserting a second one with its transaction id changes nothing.</summary>
    [Fact]
    public async Task Saga_insert_is_idempotent_and_the_instance_reads_back_as_stored()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var first = NewSaga("saga-1");
        var second = NewSaga("saga-1", state: SagaState.Compensating);
        second.Data = "{\"order\":\"other\"}"u8.ToArray();

        var insertedFirst = await InsertSagaAsync(host.Store, first);
        var insertedSecond = await InsertSagaAsync(host.Store, second);
        var stored = await host.Store.SagaQueries().GetSagaAsync("saga-1", CancellationToken.None);

        Assert.True(insertedFirst);
        Assert.False(insertedSecond);
        Assert.NotNull(stored);
        Assert.Equal(1, first.ConcurrencyVersion);
        Assert.Equal(
            (first.Definition, first.Version, SagaState.Running, first.StepIndex, first.Awaiting, first.StepAttempt, first.Failure, 1L, first.StartedAt),
            (stored.Definition, stored.Version, stored.State, stored.StepIndex, stored.Awaiting, stored.StepAttempt, stored.Failure, stored.ConcurrencyVersion, stored.StartedAt));
        Assert.Equal(first.Steps, stored.Steps);
        Assert.Equal(first.Data.ToArray(), stored.Data.ToArray());
        Assert.Null(await host.Store.SagaQueries().GetSagaAsync("saga-2", CancellationToken.None));
    }

    /// <summary>The fields of a failed, stuck instance and its pending timeout read back as saved.</summary>
    [Fact]
    public async Task Saga_failure_stuck_and_timeout_fields_read_back_as_saved()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await InsertSagaAsync(host.Store, NewSaga("saga-stuck"));
        var instance = (await host.Store.SagaQueries().GetSagaAsync("saga-stuck", CancellationToken.None))!;
        Assert.Equal((null as string, null as string, null as string, null as Guid?, null as DateTimeOffset?, null as string),
            (instance.FailedStep, instance.LastError, instance.StuckReason, instance.TimeoutId, instance.TimeoutAt, instance.Queue));

        var timeoutId = Guid.NewGuid();
        var dueAt = new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero).AddTicks(1234567);
        instance.State = SagaState.Stuck;
        instance.Failure = "ship refused";
        instance.FailedStep = "ship";
        instance.LastError = "timed out";
        instance.StuckReason = "gave up";
        instance.TimeoutId = timeoutId;
        instance.TimeoutAt = dueAt;
        instance.Queue = "sagas.order";
        Assert.True(await UpdateSagaAsync(host.Store, instance, 1));
        var stored = (await host.Store.SagaQueries().GetSagaAsync("saga-stuck", CancellationToken.None))!;

        Assert.Equal((SagaState.Stuck, "ship refused", "ship", "timed out", "gave up", timeoutId, dueAt, "sagas.order"),
            (stored.State, stored.Failure, stored.FailedStep, stored.LastError, stored.StuckReason, stored.TimeoutId, stored.TimeoutAt, stored.Queue));
        Assert.Equal(["saga-stuck"], (await host.Store.SagaQueries().QuerySagasAsync(new SagaQuery { State = SagaState.Stuck }, CancellationToken.None)).Select(s => s.TransactionId));
    }

    /// <summary>A save from a stale version is refused and leaves the stored instance as the winning save left it.</summary>
    [Fact]
    public async Task Saga_update_with_a_stale_expected_version_is_refused_and_leaves_the_row()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await InsertSagaAsync(host.Store, NewSaga("saga-1"));
        var winner = (await host.Store.SagaQueries().GetSagaAsync("saga-1", CancellationToken.None))!;
        var loser = (await host.Store.SagaQueries().GetSagaAsync("saga-1", CancellationToken.None))!;

        winner.StepIndex = 1;
        winner.Awaiting = Guid.NewGuid();
        winner.StepAttempt = 1;
        winner.Data = "{\"order\":\"winner\"}"u8.ToArray();
        var winnerSaved = await UpdateSagaAsync(host.Store, winner, 1);
        loser.State = SagaState.Compensating;
        loser.StepIndex = 2;
        loser.Failure = "ship: refused";
        var loserSaved = await UpdateSagaAsync(host.Store, loser, 1);
        var missingSaved = await UpdateSagaAsync(host.Store, NewSaga("saga-missing"), 1);
        var stored = (await host.Store.SagaQueries().GetSagaAsync("saga-1", CancellationToken.None))!;

        Assert.True(winnerSaved);
        Assert.False(loserSaved);
        Assert.False(missingSaved);
        Assert.Equal(2, winner.ConcurrencyVersion);
        Assert.Equal(1, loser.ConcurrencyVersion);
        Assert.Equal((SagaState.Running, 1, winner.Awaiting, null as string, 2L), (stored.State, stored.StepIndex, stored.Awaiting, stored.Failure, stored.ConcurrencyVersion));
        Assert.Equal("{\"order\":\"winner\"}", Encoding.UTF8.GetString(stored.Data.Span));
        Assert.Null(await host.Store.SagaQueries().GetSagaAsync("saga-missing", CancellationToken.None));
        Assert.True(await UpdateSagaAsync(host.Store, stored, 2));
        Assert.Equal(3, stored.ConcurrencyVersion);
    }

    /// <summary>A transaction sees its own saga writes and log entries before it commits; a rollback leaves nothing.</summary>
    [Fact]
    public async Task Saga_writes_are_visible_in_their_transaction_and_gone_after_a_rollback()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var at = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
        await InsertSagaAsync(host.Store, NewSaga("saga-committed"));
        await using (var committed = await host.Store.BeginAsync(CancellationToken.None))
        {
            await committed.Sagas().AppendSagaLogAsync([new SagaLogEntry("saga-committed", at, SagaLogKinds.Started, null, null, null, "version 1")], CancellationToken.None);
            await committed.CommitAsync(CancellationToken.None);
        }

        SagaInstance? loaded;
        IReadOnlyList<SagaLogEntry> inTransaction;
        IReadOnlyList<SagaLogEntry> outside;
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            await transaction.Sagas().InsertSagaAsync(NewSaga("saga-rolled-back"), CancellationToken.None);
            await transaction.Sagas().AppendSagaLogAsync([new SagaLogEntry("saga-committed", at, SagaLogKinds.CommandSent, "reserve", Guid.NewGuid(), "shop.reserve@1", null)], CancellationToken.None);
            loaded = await transaction.Sagas().LoadSagaAsync("saga-rolled-back", CancellationToken.None);
            inTransaction = await transaction.Sagas().ReadSagaLogAsync("saga-committed", CancellationToken.None);
            outside = await host.Store.SagaQueries().ReadSagaLogAsync("saga-committed", CancellationToken.None);
        }

        Assert.NotNull(loaded);
        Assert.Equal([SagaLogKinds.Started, SagaLogKinds.CommandSent], inTransaction.Select(e => e.Kind));
        Assert.Equal([SagaLogKinds.Started], outside.Select(e => e.Kind));
        Assert.Null(await host.Store.SagaQueries().GetSagaAsync("saga-rolled-back", CancellationToken.None));
        Assert.Equal([SagaLogKinds.Started], (await host.Store.SagaQueries().ReadSagaLogAsync("saga-committed", CancellationToken.None)).Select(e => e.Kind));
    }

    /// <summary>Instances can be queried by state, definition and version, newest first, and counted per definition, version and state.</summary>
    [Fact]
    public async Task Sagas_are_queried_by_state_definition_and_version_and_counted()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var t0 = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
        await InsertSagaAsync(host.Store, NewSaga("a", "order", 1, SagaState.Running, t0));
        await InsertSagaAsync(host.Store, NewSaga("b", "order", 1, SagaState.Completed, t0.AddMinutes(1)));
        await InsertSagaAsync(host.Store, NewSaga("c", "order", 2, SagaState.Running, t0.AddMinutes(2)));
        await InsertSagaAsync(host.Store, NewSaga("d", "refund", 1, SagaState.Compensated, t0.AddMinutes(3)));
        await InsertSagaAsync(host.Store, NewSaga("e", "order", 2, SagaState.Running, t0.AddMinutes(4)));

        async Task<IEnumerable<string>> QueryAsync(SagaQuery query) => (await host.Store.SagaQueries().QuerySagasAsync(query, CancellationToken.None)).Select(i => i.TransactionId);

        Assert.Equal(["e", "d", "c", "b", "a"], await QueryAsync(new SagaQuery()));
        Assert.Equal(["e", "c", "a"], await QueryAsync(new SagaQuery { State = SagaState.Running }));
        Assert.Equal(["e", "c", "b", "a"], await QueryAsync(new SagaQuery { Definition = "order" }));
        Assert.Equal(["d", "b", "a"], await QueryAsync(new SagaQuery { Version = 1 }));
        Assert.Equal(["a"], await QueryAsync(new SagaQuery { Definition = "order", Version = 1, State = SagaState.Running }));
        Assert.Equal(["e", "d"], await QueryAsync(new SagaQuery { Max = 2 }));
        Assert.Empty(await QueryAsync(new SagaQuery { Definition = "nobody" }));

        var counts = await host.Store.SagaQueries().CountSagasAsync(CancellationToken.None);
        Assert.Equal(
            [new SagaCount("order", 1, SagaState.Completed, 1), new SagaCount("order", 1, SagaState.Running, 1),
             new SagaCount("order", 2, SagaState.Running, 2), new SagaCount("refund", 1, SagaState.Compensated, 1)],
            counts.OrderBy(c => c.Definition, StringComparer.Ordinal).ThenBy(c => c.Version).ThenBy(c => c.State.ToString(), StringComparer.Ordinal));
    }

    /// <summary>The saga log of an instance reads back in append order with every field, apart from other instances' entries.</summary>
    [Fact]
    public async Task Saga_log_reads_back_in_append_order()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var at = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var command = Guid.NewGuid();
        SagaLogEntry[] first =
        [
            new("saga-1", at, SagaLogKinds.Started, null, null, null, "version 1"),
            new("saga-1", at, SagaLogKinds.CommandSent, "reserve", command, "shop.reserve@1", null),
        ];
        SagaLogEntry[] second =
        [
            new("saga-1", at.AddSeconds(1), SagaLogKinds.ReplyReceived, "reserve", Guid.NewGuid(), "shop.reserved@1", "to " + command.ToString("N")),
            new("saga-1", at.AddSeconds(1), SagaLogKinds.StateChanged, null, null, null, "running -> completed"),
        ];
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            await transaction.Sagas().AppendSagaLogAsync(first, CancellationToken.None);
            await transaction.Sagas().AppendSagaLogAsync([new SagaLogEntry("saga-2", at, SagaLogKinds.Started, null, null, null, "other")], CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            await transaction.Sagas().AppendSagaLogAsync(second, CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        var log = await host.Store.SagaQueries().ReadSagaLogAsync("saga-1", CancellationToken.None);

        Assert.Equal(first.Concat(second).Select(e => (e.TransactionId, e.At, e.Kind, e.Step, e.MessageId, e.MessageType, e.Detail)), log.Select(e => (e.TransactionId, e.At, e.Kind, e.Step, e.MessageId, e.MessageType, e.Detail)));
        Assert.Equal(log.Select(e => e.Id).Order(), log.Select(e => e.Id));
        Assert.Equal(4, log.Select(e => e.Id).Distinct().Count());
        Assert.Single(await host.Store.SagaQueries().ReadSagaLogAsync("saga-2", CancellationToken.None));
        Assert.Empty(await host.Store.SagaQueries().ReadSagaLogAsync("saga-3", CancellationToken.None));
    }

    static SagaInstance NewSaga(string transactionId, string definition = "order", int version = 1, SagaState state = SagaState.Running, DateTimeOffset? startedAt = null) => new()
    {
        TransactionId = transactionId,
        Definition = definition,
        Version = version,
        State = state,
        StepIndex = 0,
        Awaiting = Guid.NewGuid(),
        StepAttempt = 1,
        Steps = ["reserve", "charge", "ship"],
        Data = Encoding.UTF8.GetBytes("{\"order\":\"" + transactionId + "\"}"),
        StartedAt = startedAt ?? new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero),
    };

    static async Task<bool> InsertSagaAsync(IMessageStore store, SagaInstance instance)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        var inserted = await transaction.Sagas().InsertSagaAsync(instance, CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
        return inserted;
    }

    static async Task<bool> UpdateSagaAsync(IMessageStore store, SagaInstance instance, long expectedVersion)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        var saved = await transaction.Sagas().UpdateSagaAsync(instance, expectedVersion, CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
        return saved;
    }
}
