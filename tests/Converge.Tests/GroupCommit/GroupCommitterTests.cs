using Converge.Contracts;
using Converge.Runtime;
using Converge.Runtime.GroupCommit;
using Converge.Storage;
using Converge.Testing.InMemory;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests.GroupCommit;

/// <summary>
/// The group commit both queue consumers share, on the in-memory store (real transactions and savepoints): groups
/// commit at once, a failing item is isolated by savepoints, the next items are claimed in the same commit, renewals
/// keep leases, a hand-back on stop counts no attempt, and a lost lease is reported.
/// </summary>
public sealed class GroupCommitterTests : IAsyncDisposable
{
    const string Work = "work";
    const string Effects = "effects";
    static readonly TimeSpan Lease = TimeSpan.FromSeconds(30);

    readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
    readonly InMemoryMessageStore _store;
    readonly GroupCommitter _committer;

    public GroupCommitterTests()
    {
        _store = new InMemoryMessageStore(_time);
        _committer = new GroupCommitter(_store, Work, new ConvergeOptions { TimeProvider = _time, LeaseDuration = Lease }, new ObserverSet([], NullLogger<ObserverSet>.Instance), NullLogger.Instance);
    }

    public ValueTask DisposeAsync() => _store.DisposeAsync();

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_group_commits_in_one_transaction(bool replayable)
    {
        var claimed = await EnqueueAndClaimAsync(5, 5);
        var writer = new Writer(replayable);

        var outcomes = await _committer.CommitAsync(writer, [.. claimed.Select(m => new Item(m))], null, CancellationToken.None);

        Assert.All(outcomes, o => Assert.Equal(HandlingOutcome.Completed, o));
        Assert.Equal(1, writer.Attempts);
        Assert.Equal(1, writer.Commits);
        Assert.Equal(5, writer.Applies);
        Assert.Equal((0, 0), await WorkLeftAsync());
        Assert.Equal(5, await EffectsAsync());
    }

    [Fact]
    public async Task A_replayable_group_with_a_failing_item_is_applied_again_with_a_savepoint_per_item()
    {
        var claimed = await EnqueueAndClaimAsync(3, 3);
        var writer = new Writer(replayable: true, _time);

        var outcomes = await _committer.CommitAsync(writer, [new Item(claimed[0]), new Item(claimed[1], Fails: true), new Item(claimed[2])], null, CancellationToken.None);

        Assert.Equal([HandlingOutcome.Completed, HandlingOutcome.RetryScheduled, HandlingOutcome.Completed], outcomes);
        Assert.Equal(2, writer.Attempts);
        Assert.Equal(1, writer.Commits);
        Assert.Equal(2, await EffectsAsync());
        Assert.Equal((0, 1), await WorkLeftAsync());
    }

    [Fact]
    public async Task A_group_that_is_not_replayable_applies_each_item_once_under_its_own_savepoint()
    {
        var claimed = await EnqueueAndClaimAsync(3, 3);
        var writer = new Writer(replayable: false, _time);

        var outcomes = await _committer.CommitAsync(writer, [new Item(claimed[0]), new Item(claimed[1], Fails: true), new Item(claimed[2])], null, CancellationToken.None);

        Assert.Equal([HandlingOutcome.Completed, HandlingOutcome.RetryScheduled, HandlingOutcome.Completed], outcomes);
        Assert.Equal(1, writer.Attempts);
        Assert.Equal(3, writer.Applies);

        // The failing item wrote its effect before it threw: its savepoint undid that, and only that.
        Assert.Equal(2, await EffectsAsync());
        Assert.Equal((0, 1), await WorkLeftAsync());
    }

    [Fact]
    public async Task An_isolated_group_records_its_inbox_entries_ahead_and_an_undone_item_forgets_its_own()
    {
        var claimed = await EnqueueAndClaimAsync(3, 3);
        var writer = new Writer(replayable: false, _time) { RecordsInbox = true };

        var outcomes = await _committer.CommitAsync(writer, [new Item(claimed[0]), new Item(claimed[1], Fails: true), new Item(claimed[2])], null, CancellationToken.None);

        Assert.Equal([HandlingOutcome.Completed, HandlingOutcome.RetryScheduled, HandlingOutcome.Completed], outcomes);
        Assert.Equal([true, true, true], writer.RecordedAhead);

        // The failed message is new to the inbox again, so its retry runs; the two handled ones are not.
        var recordedAgain = await RecordInboxAsync(claimed);
        Assert.Equal([false, true, false], recordedAgain);
    }

    [Fact]
    public async Task A_later_copy_of_an_undone_message_in_the_same_isolated_group_is_handled_not_dropped_as_a_duplicate()
    {
        // Two queue rows carry one message (sent twice): the group's statement made the entry for the first copy and
        // told the second it existed. The first copy fails, so its entry is taken back, and the second is handled.
        var envelope = NewEnvelope();
        await using (var transaction = await _store.BeginAsync(CancellationToken.None))
        {
            await transaction.EnqueueAsync(new OutgoingMessage(Work, envelope), CancellationToken.None);
            await transaction.EnqueueAsync(new OutgoingMessage(Work, envelope), CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        var claimed = await _store.ClaimAsync(Work, 2, Lease, CancellationToken.None);
        var writer = new Writer(replayable: false, _time) { RecordsInbox = true };

        var outcomes = await _committer.CommitAsync(writer, [new Item(claimed[0], Fails: true), new Item(claimed[1])], null, CancellationToken.None);

        Assert.Equal([HandlingOutcome.RetryScheduled, HandlingOutcome.Completed], outcomes);
        Assert.Equal([true, null], writer.RecordedAhead);
        Assert.Equal(1, await EffectsAsync());
        var recordedAgain = await RecordInboxAsync([claimed[1]]);
        Assert.Equal([false], recordedAgain);
    }

    [Fact]
    public async Task The_next_items_are_claimed_in_the_same_commit()
    {
        var claimed = await EnqueueAndClaimAsync(6, 3);
        var writer = new Writer(replayable: true) { Plan = committing => new ClaimPlan(committing, ClaimPolicy.Default, OldestFirst: false) };

        await _committer.CommitAsync(writer, [.. claimed.Select(m => new Item(m))], null, CancellationToken.None);

        Assert.Equal(1, writer.Commits);
        Assert.Equal(3, writer.ClaimedNext.Count);
        Assert.Empty(writer.ClaimedNext.Select(m => m.Id).Intersect(claimed.Select(m => m.Id)));
        Assert.Equal(3, writer.Plans.Single());
        Assert.Equal((0, 3), await WorkLeftAsync());
        Assert.Empty(await _store.ClaimAsync(Work, 10, Lease, CancellationToken.None));
    }

    [Fact]
    public async Task A_claim_in_a_commit_that_is_undone_takes_no_lease()
    {
        var claimed = await EnqueueAndClaimAsync(4, 2);
        var writer = new Writer(replayable: false) { Plan = committing => new ClaimPlan(committing, ClaimPolicy.Default, OldestFirst: false), FailBeforeCommit = true };

        await Assert.ThrowsAsync<TimeoutException>(() => _committer.CommitAsync(writer, [.. claimed.Select(m => new Item(m))], null, CancellationToken.None));

        Assert.Empty(writer.ClaimedNext);
        Assert.Equal(0, await EffectsAsync());
        Assert.Equal(2, (await _store.ClaimAsync(Work, 10, Lease, CancellationToken.None)).Count);
    }

    [Fact]
    public async Task Renewal_keeps_leases()
    {
        var first = await EnqueueAndClaimAsync(2, 1);
        var second = await _store.ClaimAsync(Work, 1, Lease, CancellationToken.None);
        _time.Advance(TimeSpan.FromSeconds(20));

        Assert.True(await _committer.RenewQuietlyAsync(first));
        _time.Advance(TimeSpan.FromSeconds(20));

        // Forty seconds after a claim of thirty: only the message that was not renewed is free for another consumer.
        var rival = await _store.ClaimAsync(Work, 10, Lease, CancellationToken.None);
        Assert.Equal(second[0].Id, Assert.Single(rival).Id);
    }

    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 2)]
    public async Task A_hand_back_counts_the_attempt_only_when_asked(bool countAttempt, int nextAttempt)
    {
        var claimed = await EnqueueAndClaimAsync(1, 1);
        Assert.Equal(1, claimed[0].Attempt);

        await _committer.HandBackAsync(claimed, countAttempt);

        var again = Assert.Single(await _store.ClaimAsync(Work, 10, Lease, CancellationToken.None));
        Assert.Equal(claimed[0].Id, again.Id);
        Assert.Equal(nextAttempt, again.Attempt);
    }

    [Fact]
    public async Task A_lost_lease_undoes_a_group_that_is_not_replayable()
    {
        var (lost, kept) = await ClaimOneToLoseAsync();
        var writer = new Writer(replayable: false);

        var exception = await Assert.ThrowsAsync<LeasesLostException>(() => _committer.CommitAsync(writer, [new Item(lost), new Item(kept)], null, CancellationToken.None));

        Assert.Equal(1, exception.Lost);
        Assert.Equal(0, writer.Commits);
        Assert.Equal(0, await EffectsAsync());
        Assert.Equal((0, 2), await WorkLeftAsync());
    }

    [Fact]
    public async Task A_lost_lease_in_a_replayable_group_is_reported_and_the_others_commit()
    {
        var (lost, kept) = await ClaimOneToLoseAsync();
        var writer = new Writer(replayable: true);

        var outcomes = await _committer.CommitAsync(writer, [new Item(lost), new Item(kept)], null, CancellationToken.None);

        Assert.Equal([null, HandlingOutcome.Completed], outcomes);
        Assert.Equal(2, writer.Attempts);
        Assert.Equal(1, await EffectsAsync());

        // The rival's claim of the lost message stands.
        Assert.Equal((0, 1), await WorkLeftAsync());
    }

    [Fact]
    public async Task Waiting_for_work_ends_when_a_scheduled_message_becomes_visible()
    {
        await using (var transaction = await _store.BeginAsync(CancellationToken.None))
        {
            await transaction.EnqueueAsync(new OutgoingMessage(Work, NewEnvelope(), _time.GetUtcNow().AddSeconds(5)), CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        var committer = new GroupCommitter(_store, Work, new ConvergeOptions { TimeProvider = _time, PollInterval = TimeSpan.FromMinutes(1) }, new ObserverSet([], NullLogger<ObserverSet>.Instance), NullLogger.Instance);
        var waiting = committer.WaitForWorkAsync(_store.Signals.Queue(Work), null, CancellationToken.None);
        _time.Advance(TimeSpan.FromSeconds(4));
        Assert.False(waiting.IsCompleted);

        _time.Advance(TimeSpan.FromSeconds(1));
        await waiting.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_failed_claim_backs_off_and_a_stop_cuts_the_wait_short()
    {
        using var stopping = new CancellationTokenSource();
        var backingOff = _committer.BackOffAsync(new TimeoutException("The claim failed."), 1, stopping.Token);
        Assert.False(backingOff.IsCompleted);

        await stopping.CancelAsync();
        Assert.False(await backingOff.WaitAsync(TimeSpan.FromSeconds(10)));

        var waited = _committer.BackOffAsync(new TimeoutException("The claim failed."), 1, CancellationToken.None);
        _time.Advance(TimeSpan.FromHours(1));
        Assert.True(await waited.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    /// <summary>Claims one message under a short lease that another consumer then takes, and one under a long lease.</summary>
    async Task<(QueuedMessage Lost, QueuedMessage Kept)> ClaimOneToLoseAsync()
    {
        var lost = (await EnqueueAndClaimAsync(2, 1, TimeSpan.FromSeconds(10)))[0];
        var kept = (await _store.ClaimAsync(Work, 1, TimeSpan.FromMinutes(5), CancellationToken.None))[0];
        _time.Advance(TimeSpan.FromSeconds(11));
        Assert.Equal(lost.Id, Assert.Single(await _store.ClaimAsync(Work, 10, Lease, CancellationToken.None)).Id);
        return (lost, kept);
    }

    async Task<IReadOnlyList<QueuedMessage>> EnqueueAndClaimAsync(int enqueue, int claim, TimeSpan? lease = null)
    {
        await using (var transaction = await _store.BeginAsync(CancellationToken.None))
        {
            for (var i = 0; i < enqueue; i++)
            {
                await transaction.EnqueueAsync(new OutgoingMessage(Work, NewEnvelope()), CancellationToken.None);
            }

            await transaction.CommitAsync(CancellationToken.None);
        }

        var claimed = await _store.ClaimAsync(Work, claim, lease ?? Lease, CancellationToken.None);
        Assert.Equal(claim, claimed.Count);
        return claimed;
    }

    /// <summary>Records <paramref name="messages"/> in the work queue's inbox, committed: whether each was new.</summary>
    async Task<bool[]> RecordInboxAsync(IReadOnlyList<QueuedMessage> messages)
    {
        await using var transaction = await _store.BeginAsync(CancellationToken.None);
        var recorded = new bool[messages.Count];
        for (var i = 0; i < messages.Count; i++)
        {
            recorded[i] = await transaction.TryRecordInboxAsync(Work, messages[i].Envelope, CancellationToken.None);
        }

        await transaction.CommitAsync(CancellationToken.None);
        return recorded;
    }

    Envelope NewEnvelope() => new() { MessageId = Guid.NewGuid(), MessageType = "test.work@1", SentAt = _time.GetUtcNow(), Body = "{}"u8.ToArray() };

    /// <summary>The work queue's messages not yet done: (ready now, in flight or scheduled).</summary>
    async Task<(long Ready, long Waiting)> WorkLeftAsync()
    {
        var status = (await _store.GetStatusAsync(CancellationToken.None)).Queues.FirstOrDefault(q => q.Queue == Work);
        return status is null ? (0, 0) : (status.Ready, status.InFlight + status.Scheduled);
    }

    async Task<long> EffectsAsync() =>
        (await _store.GetStatusAsync(CancellationToken.None)).Queues.FirstOrDefault(q => q.Queue == Effects)?.Ready ?? 0;

    sealed record Item(QueuedMessage Message, bool Fails = false);

    /// <summary>Writes one effect (a message on <see cref="Effects"/>) per item; a failing item writes it, then throws.</summary>
    sealed class Writer(bool replayable, TimeProvider? time = null) : IOutcomeWriter<Item, List<Guid>>
    {
        public int Attempts { get; private set; }

        public int Applies { get; private set; }

        public int Commits { get; private set; }

        public Func<int, ClaimPlan?> Plan { get; init; } = _ => null;

        public bool FailBeforeCommit { get; init; }

        public List<int> Plans { get; } = [];

        public List<QueuedMessage> ClaimedNext { get; } = [];

        public bool Replayable => replayable;

        public QueuedMessage MessageOf(Item item) => item.Message;

        public List<Guid> NewScratch()
        {
            Attempts++;
            return [];
        }

        /// <summary>Records the work queue's inbox entries as a consumer does: the group's in one call, or each item its own.</summary>
        public bool RecordsInbox { get; init; }

        /// <summary>What each applied item was told of its inbox entry (<c>null</c>: its own to record).</summary>
        public List<bool?> RecordedAhead { get; } = [];

        public async ValueTask<bool?[]?> RecordInboxAsync(IStoreTransaction transaction, IReadOnlyList<Item> group, CancellationToken cancellationToken) =>
            RecordsInbox ? await QueueOutcomes.RecordInboxOfAsync(transaction, Work, group.Count, i => group[i].Message.Envelope, cancellationToken) : null;

        public async ValueTask<HandlingOutcome?> ApplyAsync(IStoreTransaction transaction, Item item, List<Guid> scratch, bool? recordedInbox, List<QueuedMessage>? completions, CancellationToken cancellationToken)
        {
            Applies++;
            if (RecordsInbox)
            {
                RecordedAhead.Add(recordedInbox);
                if (!(recordedInbox ?? await transaction.TryRecordInboxAsync(Work, item.Message.Envelope, cancellationToken)))
                {
                    return await transaction.CompleteAsync(item.Message, cancellationToken) ? HandlingOutcome.Duplicate : null;
                }
            }

            await transaction.EnqueueAsync(new OutgoingMessage(Effects, item.Message.Envelope), cancellationToken);
            if (item.Fails)
            {
                throw new InvalidOperationException("The effect failed.");
            }

            if (completions is not null)
            {
                completions.Add(item.Message);
            }
            else if (!await transaction.CompleteAsync(item.Message, cancellationToken))
            {
                return null;
            }

            scratch.Add(item.Message.Envelope.MessageId);
            return HandlingOutcome.Completed;
        }

        public bool FailsAlone(Item item, Exception exception) => exception is InvalidOperationException;

        public async ValueTask<HandlingOutcome?> ApplyFailedAsync(IStoreTransaction transaction, Item item, Exception exception, List<Guid> scratch, CancellationToken cancellationToken) =>
            await transaction.RetryLaterAsync(item.Message, (time ?? TimeProvider.System).GetUtcNow().AddMinutes(1), new AttemptRecord(item.Message.Attempt, DateTimeOffset.UnixEpoch, exception.Message), cancellationToken)
                ? HandlingOutcome.RetryScheduled
                : null;

        public void Applied(Item item)
        {
        }

        public ClaimPlan? PlanClaim(int committing)
        {
            Plans.Add(committing);
            return Plan(committing);
        }

        public ValueTask BeforeCommitAsync(IStoreTransaction transaction, List<Guid> scratch, CancellationToken cancellationToken)
        {
            Commits++;
            return FailBeforeCommit ? throw new TimeoutException("The group's last write failed.") : ValueTask.CompletedTask;
        }

        public bool Abandons(Exception exception) => false;

        public void Claimed(IReadOnlyList<QueuedMessage> claimed, ClaimPlan plan) => ClaimedNext.AddRange(claimed);
    }
}
