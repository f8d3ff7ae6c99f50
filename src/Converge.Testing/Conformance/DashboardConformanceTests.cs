using System.Text;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// What a dashboard reads and records: keyset-paged listings of sagas, jobs and dead letters (<see cref="SagaQuery.After"/>,
/// <see cref="JobQuery.After"/>, <see cref="IDeadLetterQueries"/>), dead-letter groups, retries and discards of a
/// selection or a group (<see cref="DeadLetterActions"/>), and the operator log (<see cref="IOperatorLog"/>,
/// <see cref="IOperatorLogTransaction"/>). Paging is checked the way a dashboard pages: a page at a time while newer rows
/// arrive, with rows sharing a time so that the tie-breakers matter. A store's test project derives one class with its
/// <see cref="ConformanceStore"/>.
/// </summary>
public abstract class DashboardConformanceTests : StoreConformanceBase
{
    static readonly DateTimeOffset T0 = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>Runs the suite on <paramref name="store"/>.</summary>
    /// <param name="store">The store under test; the suite disposes it.</param>
    protected DashboardConformanceTests(ConformanceStore store)
        : base(store)
    {
    }

    /// <summary>
    /// Every filter combination of saga listings pages newest first, ties by transaction id descending, with neither
    /// duplicates nor gaps, while newer instances start between pages.
    /// </summary>
    [Fact]
    public async Task Sagas_page_by_filter_without_duplicates_or_gaps_while_newer_ones_start()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        SagaState[] states = [SagaState.Running, SagaState.Stuck, SagaState.Completed, SagaState.Compensated];
        var sagas = Enumerable.Range(0, 40)
            .Select(i => NewSaga($"s{i:D2}", i % 2 == 0 ? "order" : "refund", 1 + (i / 2 % 2), states[(i + (i / 4)) % 4], T0.AddMinutes(i / 3)))
            .ToList();
        foreach (var saga in sagas)
        {
            await InsertSagaAsync(host.Store, saga);
        }

        SagaQuery[] queries =
        [
            new(),
            new() { State = SagaState.Stuck },
            new() { Definition = "order" },
            new() { Definition = "order", State = SagaState.Running },
            new() { Definition = "refund", Version = 2 },
            new() { Definition = "order", Version = 1, State = SagaState.Running },
            new() { Version = 2 },
            new() { Version = 2, State = SagaState.Stuck },
        ];
        var newer = 0;
        var arrived = new List<SagaInstance>();
        foreach (var query in queries)
        {
            var expected = sagas
                .Where(s => (query.State is null || s.State == query.State) && (query.Definition is null || s.Definition == query.Definition) && (query.Version is null || s.Version == query.Version))
                .OrderByDescending(s => s.StartedAt)
                .ThenByDescending(s => s.TransactionId, StringComparer.Ordinal)
                .Select(s => s.TransactionId)
                .ToList();
            Assert.NotEmpty(expected);
            var listed = new List<string>();
            string? after = null;
            while (true)
            {
                var page = await host.Store.SagaQueries().QuerySagasAsync(new SagaQuery { State = query.State, Definition = query.Definition, Version = query.Version, Max = 3, After = after }, CancellationToken.None);
                Assert.True(page.Count <= 3);
                if (page.Count == 0)
                {
                    break;
                }

                listed.AddRange(page.Select(s => s.TransactionId));
                after = SagaQuery.CursorOf(page[^1]);

                // A newer instance of every kind starts between pages: it belongs before the first page, never on a later one.
                var started = NewSaga($"new{newer++:D3}", query.Definition ?? "order", query.Version ?? 1, query.State ?? SagaState.Running, T0.AddDays(1));
                await InsertSagaAsync(host.Store, started);
                arrived.Add(started);
            }

            Assert.Equal(expected, listed);
            sagas.AddRange(arrived);
            arrived.Clear();
        }

        Assert.Empty(await host.Store.SagaQueries().QuerySagasAsync(new SagaQuery { Max = 0 }, CancellationToken.None));
        await Assert.ThrowsAsync<FormatException>(async () => await host.Store.SagaQueries().QuerySagasAsync(new SagaQuery { After = "not a cursor" }, CancellationToken.None));
    }

    /// <summary>
    /// Job listings page across the queue, the dead letters and the inbox, newest first, with neither duplicates nor
    /// gaps, when jobs of all three share a time, while newer jobs arrive, for every filter.
    /// </summary>
    [Fact]
    public async Task Jobs_page_across_queue_dead_letters_and_inbox_without_duplicates_or_gaps()
    {
        var time = new FakeTimeProvider(T0);
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        await StartJobQueueAsync(store);
        await InTransactionAsync(store, t => t.Jobs().RegisterJobQueueAsync("reports", CancellationToken.None));
        for (var i = 0; i < 24; i++)
        {
            // Three jobs at each time: one stays queued, one dies, one succeeds.
            if (i % 3 == 0)
            {
                time.Advance(TimeSpan.FromSeconds(1));
            }

            var headers = i % 2 == 0 ? InBatch("b") : new Dictionary<string, string>();
            var queue = i % 4 == 3 ? "reports" : Queue;
            switch (i % 3)
            {
                case 0:
                    await host.Bus.SendAsync(new ConformanceCommand("waits-" + i), new SendOptions { Queue = queue, Delay = TimeSpan.FromHours(1), Headers = headers });
                    break;
                case 1:
                    await host.Bus.SendAsync(new ConformanceCommand("dies-" + i), new SendOptions { Queue = queue, Headers = headers });
                    var doomed = Assert.Single(await store.ClaimAsync(queue, 1, TimeSpan.FromMinutes(5), ClaimPolicy.Default, CancellationToken.None));
                    await InTransactionAsync(store, t => t.DeadLetterAsync(doomed, i % 5 == 0 ? DeadLetterReasons.Cancelled : DeadLetterReasons.MaxAttemptsExceeded, null, null, CancellationToken.None));
                    break;
                default:
                    await host.Bus.SendAsync(new ConformanceCommand("succeeds-" + i), new SendOptions { Queue = queue, Headers = headers });
                    var handled = Assert.Single(await store.ClaimAsync(queue, 1, TimeSpan.FromMinutes(5), ClaimPolicy.Default, CancellationToken.None));
                    await InTransactionAsync(store, async t =>
                    {
                        await t.TryRecordInboxAsync(queue, handled.Envelope, CancellationToken.None);
                        await t.CompleteAsync(handled, CancellationToken.None);
                    });
                    break;
            }
        }

        JobQuery[] queries =
        [
            new(),
            new() { Queue = Queue },
            new() { State = JobState.Succeeded },
            new() { State = JobState.Succeeded, Queue = "reports" },
            new() { State = JobState.Dead },
            new() { State = JobState.Scheduled },
            new() { BatchId = "b" },
            new() { BatchId = "b", State = JobState.Succeeded },
            new() { BatchId = "b", Queue = Queue },
        ];
        foreach (var query in queries)
        {
            var everything = await store.JobQueries().ListJobsAsync(query with { Max = 1000 }, CancellationToken.None);
            Assert.NotEmpty(everything);
            Assert.Equal(everything.Count, everything.Select(j => j.Id).Distinct().Count());
            Assert.Equal(everything.OrderByDescending(j => j.FinishedAt ?? j.EnqueuedAt).Select(j => j.Id), everything.Select(j => j.Id));
            var listed = new List<Guid>();
            string? after = null;
            while (true)
            {
                var page = await store.JobQueries().ListJobsAsync(query with { Max = 2, After = after }, CancellationToken.None);
                if (page.Count == 0)
                {
                    break;
                }

                Assert.True(page.Count <= 2);
                Assert.All(page, j => Assert.NotNull(j.Cursor));
                listed.AddRange(page.Select(j => j.Id));
                after = page[^1].Cursor;

                // Newer jobs of every source arrive between pages: they belong before the first page.
                time.Advance(TimeSpan.FromSeconds(1));
                await host.Bus.SendAsync(new ConformanceCommand("later"), new SendOptions { Queue = query.Queue ?? Queue, Delay = TimeSpan.FromHours(1), Headers = query.BatchId is null ? null : InBatch(query.BatchId) });
                var recorded = new Envelope { MessageId = Guid.NewGuid(), MessageType = "conformance.command@1", SentAt = time.GetUtcNow(), Headers = query.BatchId is null ? new Dictionary<string, string>() : InBatch(query.BatchId), Body = Encoding.UTF8.GetBytes("{\"key\":\"later\"}") };
                await InTransactionAsync(store, t => t.TryRecordInboxAsync(query.Queue ?? Queue, recorded, CancellationToken.None));
            }

            Assert.Equal(everything.Select(j => j.Id), listed);
        }

        await Assert.ThrowsAsync<FormatException>(async () => await store.JobQueries().ListJobsAsync(new JobQuery { After = "12:x" }, CancellationToken.None));
    }

    /// <summary>
    /// Dead letters page newest first by source, reason and ordering key, with neither duplicates nor gaps while newer
    /// ones arrive; groups count them per reason and source with the newest time; one is read by id.
    /// </summary>
    [Fact]
    public async Task Dead_letters_page_by_source_reason_and_key_and_group_by_reason_and_source()
    {
        var time = new FakeTimeProvider(T0);
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var letters = new List<(string Source, string Reason, string? Key, DateTimeOffset At)>();
        for (var i = 0; i < 30; i++)
        {
            if (i % 4 == 0)
            {
                time.Advance(TimeSpan.FromSeconds(1));
            }

            var source = i % 3 == 0 ? "reports" : Queue;
            var reason = i % 2 == 0 ? DeadLetterReasons.MaxAttemptsExceeded : DeadLetterReasons.PermanentFailure;
            // A dead letter holds its key, so each keyed one has a key of its own.
            var key = Target.KeepsOrderingKeys && i % 5 == 0 ? "customer-" + i : null;
            await DeadLetterAsync(store, source, reason, key);
            letters.Add((source, reason, key, time.GetUtcNow()));
        }

        var queries = store.DeadLetterQueries();
        var all = (await queries.ListDeadLettersAsync(new DeadLetterQuery { Max = 1000 }, CancellationToken.None)).Items;
        Assert.Equal(30, all.Count);
        Assert.Equal(all.OrderByDescending(l => l.DeadLetteredAt).ThenByDescending(l => l.Id).Select(l => l.Id), all.Select(l => l.Id));

        DeadLetterQuery[] filters =
        [
            new(),
            new() { Source = "reports" },
            new() { Reason = DeadLetterReasons.PermanentFailure },
            new() { Reason = DeadLetterReasons.MaxAttemptsExceeded, Source = Queue },
            .. Target.KeepsOrderingKeys ? [new() { OrderingKey = "customer-0" }, new DeadLetterQuery { OrderingKey = "customer-5", Source = Queue }] : Array.Empty<DeadLetterQuery>(),
        ];
        foreach (var filter in filters)
        {
            var present = (await queries.ListDeadLettersAsync(new DeadLetterQuery { Max = 1000 }, CancellationToken.None)).Items;
            var expected = present.Where(l => (filter.Source is null || l.Source == filter.Source) && (filter.Reason is null || l.Reason == filter.Reason) && (filter.OrderingKey is null || l.OrderingKey == filter.OrderingKey))
                .Select(l => l.Id).ToList();
            Assert.NotEmpty(expected);
            var listed = new List<long>();
            var after = (string?)null;
            do
            {
                var page = await queries.ListDeadLettersAsync(filter with { Max = 4, After = after }, CancellationToken.None);
                Assert.True(page.Items.Count <= 4);
                Assert.True(page.Next is null || page.Items.Count == 4);
                listed.AddRange(page.Items.Select(l => l.Id));
                after = page.Next;
                if (after is not null)
                {
                    Assert.Equal(DeadLetterQuery.CursorOf(page.Items[^1]), after);
                }

                await DeadLetterAsync(store, filter.Source ?? Queue, filter.Reason ?? DeadLetterReasons.PermanentFailure, null);
            }
            while (after is not null);

            Assert.Equal(expected, listed);
        }

        var groups = await queries.GroupDeadLettersAsync(CancellationToken.None);
        var current = (await queries.ListDeadLettersAsync(new DeadLetterQuery { Max = 1000 }, CancellationToken.None)).Items;
        Assert.Equal(
            current.GroupBy(l => (l.Reason, l.Source)).OrderBy(g => g.Key.Reason, StringComparer.Ordinal).ThenBy(g => g.Key.Source, StringComparer.Ordinal)
                .Select(g => new DeadLetterGroup(g.Key.Reason, g.Key.Source, g.LongCount(), g.Max(l => l.DeadLetteredAt))),
            groups);

        var one = all[7];
        var read = await queries.GetDeadLetterAsync(one.Id, CancellationToken.None);
        Assert.NotNull(read);
        Assert.Equal((one.Source, one.Reason, one.OrderingKey, one.Envelope.MessageId, one.DeadLetteredAt), (read.Source, read.Reason, read.OrderingKey, read.Envelope.MessageId, read.DeadLetteredAt));
        Assert.Null(await queries.GetDeadLetterAsync(one.Id + 100_000, CancellationToken.None));
        Assert.Empty((await queries.ListDeadLettersAsync(new DeadLetterQuery { Max = 0 }, CancellationToken.None)).Items);
        Assert.Empty((await queries.ListDeadLettersAsync(new DeadLetterQuery { Source = "nowhere" }, CancellationToken.None)).Items);
    }

    /// <summary>
    /// A selection of dead letters is retried or discarded oldest first; ids that are gone and parked events are
    /// skipped and said so; every dead letter of a (reason, source) group is retried, and no other.
    /// </summary>
    [Fact]
    public async Task Selections_and_groups_of_dead_letters_are_retried_and_discarded()
    {
        var time = new FakeTimeProvider(T0);
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var ids = new List<long>();
        for (var i = 0; i < 6; i++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            ids.Add(await DeadLetterAsync(store, Queue, i < 4 ? DeadLetterReasons.MaxAttemptsExceeded : DeadLetterReasons.PermanentFailure, null));
        }

        var reports = await DeadLetterAsync(store, "reports", DeadLetterReasons.MaxAttemptsExceeded, null);
        await InTransactionAsync(store, t => t.RecordDeadLetterAsync(
            new DeadLetterRecord("log:" + Group, RawEnvelope("conformance.event@1", Encoding.UTF8.GetBytes("{\"key\":\"parked\"}")), DeadLetterReasons.PoisonEvent) { LogPosition = 7 },
            CancellationToken.None));
        var parked = (await store.DeadLetterQueries().ListDeadLettersAsync(new DeadLetterQuery { Source = "log:" + Group }, CancellationToken.None)).Items.Single().Id;

        var messageIds = new Dictionary<long, Guid>();
        foreach (var id in ids)
        {
            messageIds[id] = (await store.DeadLetterQueries().GetDeadLetterAsync(id, CancellationToken.None))!.Envelope.MessageId;
        }

        var retried = await store.RetryDeadLettersAsync([ids[2], ids[0], ids[0], parked, 999_999], CancellationToken.None);
        Assert.Equal([ids[0], ids[2]], retried.Done);
        Assert.Equal([new SkippedDeadLetter(parked, DeadLetterSkipReason.ParkedEvent), new SkippedDeadLetter(999_999, DeadLetterSkipReason.NotFound)], retried.Skipped);
        var back = await store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None);
        Assert.Equal([messageIds[ids[0]], messageIds[ids[2]]], back.Select(m => m.Envelope.MessageId));

        var discarded = await store.DiscardDeadLettersAsync([ids[1], ids[2]], CancellationToken.None);
        Assert.Equal([ids[1]], discarded.Done);
        Assert.Equal([new SkippedDeadLetter(ids[2], DeadLetterSkipReason.NotFound)], discarded.Skipped);

        var group = await store.RetryDeadLetterGroupAsync(DeadLetterReasons.MaxAttemptsExceeded, Queue, CancellationToken.None);
        Assert.Equal([ids[3]], group.Done);
        Assert.Empty(group.Skipped);
        var remaining = (await store.DeadLetterQueries().ListDeadLettersAsync(new DeadLetterQuery(), CancellationToken.None)).Items.Select(l => l.Id).Order();
        Assert.Equal([ids[4], ids[5], reports, parked], remaining);

        var gone = await store.DiscardDeadLetterGroupAsync(DeadLetterReasons.PermanentFailure, Queue, CancellationToken.None);
        Assert.Equal([ids[4], ids[5]], gone.Done);
        Assert.Equal([reports, parked], (await store.DeadLetterQueries().ListDeadLettersAsync(new DeadLetterQuery(), CancellationToken.None)).Items.Select(l => l.Id).Order());
    }

    /// <summary>
    /// Operator actions recorded on their own or in a transaction are listed newest first, a page at a time, as they
    /// were recorded; one recorded in a transaction that rolls back is not.
    /// </summary>
    [Fact]
    public async Task Operator_actions_are_recorded_with_their_transaction_and_listed_newest_first()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var store = host.Store;
        OperatorAction Action(int i) => new()
        {
            At = T0.AddMinutes(i),
            Actor = i % 2 == 0 ? "ada" : "grace",
            Action = OperatorActions.RetryDeadLetters,
            Target = "dead-letter:" + i,
            Detail = i % 3 == 0 ? null : "note " + i,
        };

        var ids = new List<long>();
        for (var i = 0; i < 5; i++)
        {
            ids.Add(await store.OperatorLog().RecordAsync(Action(i), CancellationToken.None));
        }

        ids.Add(await InTransactionAsync(store, t => t.OperatorLog().RecordOperatorActionAsync(Action(5), CancellationToken.None)));
        await using (var rolledBack = await store.BeginAsync(CancellationToken.None))
        {
            await rolledBack.OperatorLog().RecordOperatorActionAsync(Action(99), CancellationToken.None);
        }

        ids.Add(await store.OperatorLog().RecordAsync(Action(6) with { At = T0 }, CancellationToken.None));
        Assert.Equal(ids.Order(), ids);
        Assert.Equal(ids.Count, ids.Distinct().Count());

        var listed = new List<OperatorAction>();
        string? after = null;
        var pages = 0;
        do
        {
            var page = await store.OperatorLog().ListAsync(after, 3, CancellationToken.None);
            listed.AddRange(page.Items);
            after = page.Next;
            pages++;
            if (pages == 1)
            {
                // Recorded after the first page: newer than everything listed, so not on a later page.
                await store.OperatorLog().RecordAsync(Action(7), CancellationToken.None);
            }
        }
        while (after is not null);

        Assert.Equal(3, pages);
        Assert.Equal(Enumerable.Reverse(ids), listed.Select(a => a.Id));
        Assert.Equal([.. Enumerable.Range(0, 7).Reverse().Select(i => i == 6 ? Action(6) with { At = T0 } : Action(i))], listed.Select(a => a with { Id = 0 }));
        Assert.Empty((await store.OperatorLog().ListAsync(null, 0, CancellationToken.None)).Items);
    }

    /// <summary>
    /// Activity counts what each queue handled (its inbox records) and dead-lettered at or after a moment, and nothing
    /// before it.
    /// </summary>
    [Fact]
    public async Task Activity_counts_handled_and_dead_lettered_messages_per_queue_since_a_moment()
    {
        var time = new FakeTimeProvider(T0);
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        async Task HandledAsync(string queue) => await InTransactionAsync(store, t => t.TryRecordInboxAsync(
            queue,
            new Envelope { MessageId = Guid.NewGuid(), MessageType = "conformance.probe@1", SentAt = T0, Body = Array.Empty<byte>() },
            CancellationToken.None));

        await HandledAsync("a");
        await DeadLetterAsync(store, "b", DeadLetterReasons.PermanentFailure, null);
        time.Advance(TimeSpan.FromSeconds(10));
        var since = time.GetUtcNow();
        await HandledAsync("a");
        await HandledAsync("a");
        await HandledAsync("c");
        await DeadLetterAsync(store, "a", DeadLetterReasons.MaxAttemptsExceeded, null);

        Assert.Equal(
            [new QueueActivity("a", 2, 1), new QueueActivity("c", 1, 0)],
            await store.ActivityQueries().CountActivitySinceAsync(since, CancellationToken.None));
        Assert.Equal(
            [new QueueActivity("a", 3, 1), new QueueActivity("b", 0, 1), new QueueActivity("c", 1, 0)],
            await store.ActivityQueries().CountActivitySinceAsync(T0, CancellationToken.None));
        Assert.Empty(await store.ActivityQueries().CountActivitySinceAsync(since.AddSeconds(1), CancellationToken.None));
    }

    /// <summary>
    /// Dead-letters a conformance command on <paramref name="source"/> with <paramref name="reason"/> (and ordering key
    /// <paramref name="key"/>, by way of a keyed queue row) at the store's current time; returns its id.
    /// </summary>
    static async Task<long> DeadLetterAsync(IMessageStore store, string source, string reason, string? key)
    {
        var envelope = RawEnvelope("conformance.command@1", Encoding.UTF8.GetBytes("{\"key\":\"pending\"}"));
        await InTransactionAsync(store, t => t.EnqueueAsync(new OutgoingMessage(source, envelope) { OrderingKey = key }, CancellationToken.None));
        var claimed = (await store.ClaimAsync(source, 100, TimeSpan.FromMinutes(5), CancellationToken.None)).Single(m => m.Envelope.MessageId == envelope.MessageId);
        await InTransactionAsync(store, t => t.DeadLetterAsync(claimed, reason, "boom", null, CancellationToken.None));
        var letter = (await store.DeadLetterQueries().ListDeadLettersAsync(new DeadLetterQuery { Source = source, Max = 1 }, CancellationToken.None)).Items.Single();
        Assert.Equal(envelope.MessageId, letter.Envelope.MessageId);
        return letter.Id;
    }

    static SagaInstance NewSaga(string transactionId, string definition, int version, SagaState state, DateTimeOffset startedAt) => new()
    {
        TransactionId = transactionId,
        Definition = definition,
        Version = version,
        State = state,
        StepIndex = 0,
        StepAttempt = 1,
        Steps = ["reserve", "charge"],
        Data = Encoding.UTF8.GetBytes("{}"),
        StartedAt = startedAt,
        StuckReason = state == SagaState.Stuck ? "gave up" : null,
    };

    static Task<bool> InsertSagaAsync(IMessageStore store, SagaInstance instance) =>
        InTransactionAsync(store, t => t.Sagas().InsertSagaAsync(instance, CancellationToken.None));
}
