using Converge.Contracts;
using Converge.Storage;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// The optional <see cref="IInboxRemovalTransaction"/>: an inbox record taken back inside a transaction. A store's test
/// project derives one class with its <see cref="ConformanceStore"/> when the store offers the contract (the SQLite,
/// PostgreSQL and in-memory stores do, and a transport in front of them finds it on the store it wraps).
/// </summary>
public abstract class InboxRemovalConformanceTests : StoreConformanceBase
{
    /// <summary>Runs the suite on <paramref name="store"/>.</summary>
    /// <param name="store">The store under test; the suite disposes it.</param>
    protected InboxRemovalConformanceTests(ConformanceStore store)
        : base(store)
    {
    }

    /// <summary>
    /// A record forgotten in a transaction (<see cref="IInboxRemovalTransaction.ForgetInboxAsync"/>) is gone when it commits, so
    /// the message can be recorded again; only that consumer's record of that message goes, one forgotten in a
    /// transaction that rolls back stays, and forgetting what was never recorded reports <c>false</c>.
    /// </summary>
    [Fact]
    public async Task A_forgotten_inbox_record_is_gone_when_its_transaction_commits_and_only_that_one()
    {
        await using var host = await StartIdleAsync(new FakeTimeProvider());
        var store = host.Store;
        var forgotten = RawEnvelope("conformance.probe@1", []);
        var neighbour = RawEnvelope("conformance.probe@1", []);
        ValueTask<bool> RecordAsync(IStoreTransaction t, string consumer, Envelope envelope) => t.TryRecordInboxAsync(consumer, envelope, CancellationToken.None);
        ValueTask<bool> ForgetAsync(IStoreTransaction t, string consumer, Envelope envelope) => StoreContracts.Require<IInboxRemovalTransaction>(t, "Taking inbox records back").ForgetInboxAsync(consumer, envelope.MessageId, CancellationToken.None);

        await InTransactionAsync(store, async t =>
        {
            await RecordAsync(t, Queue, forgotten);
            await RecordAsync(t, Queue, neighbour);
            return await RecordAsync(t, "elsewhere", forgotten);
        });

        bool forgottenInRollback;
        await using (var transaction = await store.BeginAsync(CancellationToken.None))
        {
            forgottenInRollback = await ForgetAsync(transaction, Queue, forgotten);
        }

        var keptAfterRollback = !await InTransactionAsync(store, t => RecordAsync(t, Queue, forgotten));
        var recordedAndForgottenInOne = await InTransactionAsync(store, async t =>
        {
            var recorded = await RecordAsync(t, Queue, RawEnvelope("conformance.probe@1", []));
            return recorded && await ForgetAsync(t, Queue, forgotten);
        });
        var forgottenAgain = await InTransactionAsync(store, t => ForgetAsync(t, Queue, forgotten));
        var neverRecorded = await InTransactionAsync(store, t => ForgetAsync(t, Queue, RawEnvelope("conformance.probe@1", [])));
        var recordedAgain = await InTransactionAsync(store, t => RecordAsync(t, Queue, forgotten));
        var neighbourKept = !await InTransactionAsync(store, t => RecordAsync(t, Queue, neighbour));
        var otherConsumerKept = !await InTransactionAsync(store, t => RecordAsync(t, "elsewhere", forgotten));

        Assert.True(forgottenInRollback);
        Assert.True(keptAfterRollback);
        Assert.True(recordedAndForgottenInOne);
        Assert.False(forgottenAgain);
        Assert.False(neverRecorded);
        Assert.True(recordedAgain);
        Assert.True(neighbourKept);
        Assert.True(otherConsumerKept);
    }
}
