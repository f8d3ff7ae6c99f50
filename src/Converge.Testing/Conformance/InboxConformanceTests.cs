using Converge.Contracts;
using Converge.Storage;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// The inbox (<see cref="IInboxStore"/>, <see cref="IInboxTransaction"/>), part of the core every store must pass: a
/// message is recorded once per consumer, only when its transaction commits, and purged by age. (Duplicate delivery and
/// retention as the status shows them are facts of <see cref="StoreQueriesConformanceTests"/>.) A store's test project
/// derives one class with its <see cref="ConformanceStore"/>.
/// </summary>
public abstract class InboxConformanceTests : StoreConformanceBase
{
    /// <summary>Runs the suite on <paramref name="store"/>.</summary>
    /// <param name="store">The store under test; the suite disposes it.</param>
    protected InboxConformanceTests(ConformanceStore store)
        : base(store)
    {
    }

    /// <summary>
    /// A message is recorded once per consumer, and only when its transaction commits; a purge deletes the records
    /// handled before its cut-off and no others, after which the message can be recorded again.
    /// </summary>
    [Fact]
    public async Task Inbox_records_a_message_once_per_consumer_when_its_transaction_commits()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var envelope = RawEnvelope("conformance.probe@1", []);
        ValueTask<bool> RecordAsync(IStoreTransaction t, string consumer) => t.TryRecordInboxAsync(consumer, envelope, CancellationToken.None);

        bool rolledBack;
        await using (var transaction = await store.BeginAsync(CancellationToken.None))
        {
            rolledBack = await RecordAsync(transaction, Queue);
        }

        var first = await InTransactionAsync(store, t => RecordAsync(t, Queue));
        var again = await InTransactionAsync(store, t => RecordAsync(t, Queue));
        var otherConsumer = await InTransactionAsync(store, t => RecordAsync(t, "elsewhere"));
        time.Advance(TimeSpan.FromDays(1));
        var purgedTooEarly = await store.PurgeInboxAsync(time.GetUtcNow() - TimeSpan.FromDays(2), CancellationToken.None);
        var stillHeld = await InTransactionAsync(store, t => RecordAsync(t, Queue));
        var purged = await store.PurgeInboxAsync(time.GetUtcNow(), CancellationToken.None);
        var afterPurge = await InTransactionAsync(store, t => RecordAsync(t, Queue));

        Assert.True(rolledBack);
        Assert.True(first);
        Assert.False(again);
        Assert.True(otherConsumer);
        Assert.Equal(0, purgedTooEarly);
        Assert.False(stillHeld);
        Assert.Equal(2, purged);
        Assert.True(afterPurge);
    }

    /// <summary>
    /// A savepoint a store may hold back until its next statement (<see cref="IStoreTransaction.SavepointBeforeNextAsync"/>)
    /// undoes exactly what followed it, like one sent at once: a released item stays, a rolled-back one is gone, and a
    /// savepoint with nothing after it (rolled back or released, or only flushed) changes nothing.
    /// </summary>
    [Fact]
    public async Task A_savepoint_held_until_the_next_statement_undoes_exactly_what_followed_it()
    {
        await using var host = await StartIdleAsync(new FakeTimeProvider());
        var store = host.Store;
        var kept = RawEnvelope("conformance.probe@1", []);
        var undone = RawEnvelope("conformance.probe@1", []);
        var afterFlush = RawEnvelope("conformance.probe@1", []);
        var beforeAll = RawEnvelope("conformance.probe@1", []);
        ValueTask<bool> RecordAsync(IStoreTransaction t, Envelope envelope) => t.TryRecordInboxAsync(Queue, envelope, CancellationToken.None);

        await using (var transaction = await store.BeginAsync(CancellationToken.None))
        {
            Assert.True(await RecordAsync(transaction, beforeAll));
            await transaction.SavepointBeforeNextAsync(CancellationToken.None);
            Assert.True(await RecordAsync(transaction, kept));
            await transaction.ReleaseSavepointAsync(CancellationToken.None);

            await transaction.SavepointBeforeNextAsync(CancellationToken.None);
            Assert.True(await RecordAsync(transaction, undone));
            await transaction.RollbackToSavepointAsync(CancellationToken.None);

            await transaction.SavepointBeforeNextAsync(CancellationToken.None);
            await transaction.RollbackToSavepointAsync(CancellationToken.None);
            await transaction.SavepointBeforeNextAsync(CancellationToken.None);
            await transaction.ReleaseSavepointAsync(CancellationToken.None);

            await transaction.SavepointBeforeNextAsync(CancellationToken.None);
            await transaction.FlushAsync(CancellationToken.None);
            Assert.True(await RecordAsync(transaction, afterFlush));
            await transaction.RollbackToSavepointAsync(CancellationToken.None);
            await transaction.SavepointBeforeNextAsync(CancellationToken.None);
            Assert.True(await RecordAsync(transaction, afterFlush));
            await transaction.ReleaseSavepointAsync(CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        Assert.False(await InTransactionAsync(store, t => RecordAsync(t, beforeAll)));
        Assert.False(await InTransactionAsync(store, t => RecordAsync(t, kept)));
        Assert.True(await InTransactionAsync(store, t => RecordAsync(t, undone)));
        Assert.False(await InTransactionAsync(store, t => RecordAsync(t, afterFlush)));
    }

    /// <summary>Inbox records older than the retention are deleted; newer ones are kept.</summary>
    [Fact]
    public async Task Inbox_records_are_purged_after_retention()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartAsync(configure: o => { o.TimeProvider = time; o.RunConsumers = false; });
        await RecordInboxAsync(host.Store, Guid.NewGuid());
        time.Advance(TimeSpan.FromDays(8));
        var recent = Guid.NewGuid();
        await RecordInboxAsync(host.Store, recent);

        var purged = await host.Store.PurgeInboxAsync(time.GetUtcNow() - TimeSpan.FromDays(7), CancellationToken.None);

        Assert.Equal(1, purged);
        Assert.Equal(1, (await StatusAsync(host)).InboxRecords);
        Assert.False(await RecordInboxAsync(host.Store, recent));
    }
}
