using System.Text;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// Job storage (<see cref="IJobStore"/>, <see cref="IJobTransaction"/>, <see cref="IJobQueries"/>), an optional contract:
/// unique keys, batches and their counts, recurring schedules, cancellation, progress, and jobs read back and listed
/// through their states. Some facts read the dead letters a job leaves through <see cref="IStoreQueries"/>, which a
/// store offering jobs offers too. A store that offers job storage derives one class with its
/// <see cref="ConformanceStore"/>.
/// </summary>
public abstract class JobStorageConformanceTests : StoreConformanceBase
{
    /// <summary>Runs the suite on <paramref name="store"/>.</summary>
    /// <param name="store">The store under test; the suite disposes it.</param>
    protected JobStorageConformanceTests(ConformanceStore store)
        : base(store)
    {
    }

    /// <summary>
    /// Purging expired unique keys deletes those whose time is up and only those: a key still held stays held, one
    /// purged is free, and a second purge finds nothing.
    /// </summary>
    [Fact]
    public async Task Expired_unique_keys_are_purged_and_held_ones_kept()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var (early, late, other) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        ValueTask<Guid?> ReserveAsync(IStoreTransaction t, string key, Guid job, TimeSpan lasts) => t.Jobs().TryReserveUniqueKeyAsync(key, job, time.GetUtcNow() + lasts, CancellationToken.None);
        await InTransactionAsync(host.Store, t => ReserveAsync(t, "purge:early", early, TimeSpan.FromHours(1)));
        await InTransactionAsync(host.Store, t => ReserveAsync(t, "purge:late", late, TimeSpan.FromHours(3)));
        time.Advance(TimeSpan.FromHours(2));

        var purged = await host.Store.Jobs().PurgeExpiredUniqueKeysAsync(CancellationToken.None);
        var purgedAgain = await host.Store.Jobs().PurgeExpiredUniqueKeysAsync(CancellationToken.None);
        var lateHolder = await InTransactionAsync(host.Store, t => ReserveAsync(t, "purge:late", other, TimeSpan.FromHours(1)));
        var earlyHolder = await InTransactionAsync(host.Store, t => ReserveAsync(t, "purge:early", other, TimeSpan.FromHours(1)));

        Assert.Equal((1, 0), (purged, purgedAgain));
        Assert.Equal(late, lateHolder);
        Assert.Null(earlyHolder);
    }

    /// <summary>A unique key is held by the first job until it expires; meanwhile a second reservation learns the holder.</summary>
    [Fact]
    public async Task Unique_key_is_held_until_it_expires()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var (first, second, third, fourth) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        ValueTask<Guid?> ReserveAsync(IStoreTransaction t, string key, Guid job) => t.Jobs().TryReserveUniqueKeyAsync(key, job, time.GetUtcNow().AddHours(1), CancellationToken.None);

        var reserved = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:7", first));
        var held = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:7", second));
        var otherKey = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:8", second));
        time.Advance(TimeSpan.FromMinutes(59));
        var stillHeld = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:7", third));
        time.Advance(TimeSpan.FromMinutes(1));
        var afterExpiry = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:7", third));
        var heldAgain = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:7", fourth));
        Guid? rolledBack;
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            rolledBack = await ReserveAsync(transaction, "invoice:9", first);
        }

        var afterRollback = await InTransactionAsync(host.Store, t => ReserveAsync(t, "invoice:9", second));

        Assert.Null(reserved);
        Assert.Equal(first, held);
        Assert.Null(otherKey);
        Assert.Equal(first, stillHeld);
        Assert.Null(afterExpiry);
        Assert.Equal(third, heldAgain);
        Assert.Null(rolledBack);
        Assert.Null(afterRollback);
    }

    /// <summary>
    /// A batch counts its jobs and finishes once it is sealed and nothing is pending, reporting its failures once; a
    /// batch sealed empty finishes at once; a finished batch takes no more jobs and keeps its counts.
    /// </summary>
    [Fact]
    public async Task Batch_counts_its_jobs_and_finishes_once_sealed_with_nothing_pending()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var batch = NewBatch("month-close:2030-01", time.GetUtcNow());
        var store = host.Store;

        var created = await InTransactionAsync(store, t => t.Jobs().CreateBatchAsync(batch, CancellationToken.None));
        var createdAgain = await InTransactionAsync(store, t => t.Jobs().CreateBatchAsync(batch with { Description = "other" }, CancellationToken.None));
        await InTransactionAsync(store, t => t.Jobs().AddToBatchAsync(batch.Id, 3, CancellationToken.None));
        var sealedWithPending = await InTransactionAsync(store, t => t.Jobs().SealBatchAsync(batch.Id, CancellationToken.None));
        var twoSucceeded = await InTransactionAsync(store, t => t.Jobs().RecordBatchOutcomesAsync(batch.Id, 2, 0, CancellationToken.None));
        var running = await store.JobQueries().GetBatchAsync(batch.Id, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        var finished = await InTransactionAsync(store, t => t.Jobs().RecordBatchOutcomesAsync(batch.Id, 0, 1, CancellationToken.None));
        var late = await InTransactionAsync(store, t => t.Jobs().RecordBatchOutcomesAsync(batch.Id, 1, 0, CancellationToken.None));
        var stored = await store.JobQueries().GetBatchAsync(batch.Id, CancellationToken.None);

        Assert.True(created);
        Assert.False(createdAgain);
        Assert.Null(sealedWithPending);
        Assert.Null(twoSucceeded);
        Assert.Equal((3L, 1L, 2L, 0L, true, null as DateTimeOffset?), (running!.Total, running.Pending, running.Succeeded, running.Failed, running.Sealed, running.FinishedAt));
        Assert.NotNull(finished);
        Assert.Equal((3L, 0L, 2L, 1L, true, time.GetUtcNow()), (finished.Total, finished.Pending, finished.Succeeded, finished.Failed, finished.Sealed, finished.FinishedAt));
        Assert.Null(late);
        Assert.Equal((3L, 0L, 2L, 1L, time.GetUtcNow()), (stored!.Total, stored.Pending, stored.Succeeded, stored.Failed, stored.FinishedAt));
        Assert.Equal((batch.Description, batch.CreatedAt), (stored.Description, stored.CreatedAt));
        foreach (var (expected, actual) in new[] { (batch.OnSuccess!, stored.OnSuccess), (batch.OnComplete!, stored.OnComplete) })
        {
            Assert.NotNull(actual);
            Assert.Equal((expected.Queue, expected.Priority), (actual.Queue, actual.Priority));
            Assert.Equal((expected.Envelope.MessageId, expected.Envelope.MessageType, expected.Envelope.CorrelationId, expected.Envelope.SentAt), (actual.Envelope.MessageId, actual.Envelope.MessageType, actual.Envelope.CorrelationId, actual.Envelope.SentAt));
            Assert.Equal(expected.Envelope.Headers, actual.Envelope.Headers);
            Assert.Equal(expected.Envelope.Body.ToArray(), actual.Envelope.Body.ToArray());
        }

        var empty = new JobBatchRecord { Id = "empty", CreatedAt = time.GetUtcNow() };
        await InTransactionAsync(store, t => t.Jobs().CreateBatchAsync(empty, CancellationToken.None));
        var emptySealed = await InTransactionAsync(store, t => t.Jobs().SealBatchAsync(empty.Id, CancellationToken.None));
        var sealedAgain = await InTransactionAsync(store, t => t.Jobs().SealBatchAsync(empty.Id, CancellationToken.None));

        Assert.NotNull(emptySealed);
        Assert.Equal((0L, 0L, 0L, (OutgoingMessage?)null, (OutgoingMessage?)null), (emptySealed.Total, emptySealed.Failed, emptySealed.Succeeded, emptySealed.OnSuccess, emptySealed.OnComplete));
        Assert.Null(sealedAgain);
        await Assert.ThrowsAsync<InvalidOperationException>(() => InTransactionAsync(store, t => t.Jobs().AddToBatchAsync(batch.Id, 1, CancellationToken.None)));
        await Assert.ThrowsAsync<InvalidOperationException>(() => InTransactionAsync(store, t => t.Jobs().AddToBatchAsync("no-such-batch", 1, CancellationToken.None)));
        Assert.Equal(3, (await store.JobQueries().GetBatchAsync(batch.Id, CancellationToken.None))!.Total);
        Assert.Null(await store.JobQueries().GetBatchAsync("no-such-batch", CancellationToken.None));
    }

    /// <summary>
    /// Outcomes counted as a job worker counts them (held for the commit where the store can, else at once with the
    /// callbacks enqueued by the caller) finish a batch in the commit that counts its last job, whose callbacks are
    /// then enqueued once: the success callback only when none failed. A count undone with its transaction, or with a
    /// savepoint rolled back to, counts nothing; a count after the batch finished changes nothing and calls back no more.
    /// </summary>
    [Fact]
    public async Task Outcomes_counted_with_the_commit_finish_the_batch_once_and_enqueue_its_callbacks()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var failing = NewBatch("held:failing", time.GetUtcNow());
        var succeeding = NewBatch("held:succeeding", time.GetUtcNow());
        foreach (var batch in new[] { failing, succeeding })
        {
            await InTransactionAsync(store, t => t.Jobs().CreateBatchAsync(batch, CancellationToken.None));
            await InTransactionAsync(store, t => t.Jobs().AddToBatchAsync(batch.Id, 3, CancellationToken.None));
            await InTransactionAsync(store, t => t.Jobs().SealBatchAsync(batch.Id, CancellationToken.None));
        }

        async ValueTask CountAsync(IStoreTransaction t, string batchId, int succeeded, int failed)
        {
            var jobs = t.Jobs();
            if (!await jobs.TryHoldBatchOutcomesAsync(batchId, succeeded, failed, CancellationToken.None)
                && await jobs.RecordBatchOutcomesAsync(batchId, succeeded, failed, CancellationToken.None) is { } finished)
            {
                await JobRows.EnqueueBatchCallbacksAsync(t, finished, CancellationToken.None);
            }
        }

        await using (var abandoned = await store.BeginAsync(CancellationToken.None))
        {
            await CountAsync(abandoned, failing.Id, 3, 0);
        }

        await InTransactionAsync(store, async t =>
        {
            await t.SavepointAsync(CancellationToken.None);
            await CountAsync(t, failing.Id, 2, 0);
            await t.RollbackToSavepointAsync(CancellationToken.None);
            await CountAsync(t, failing.Id, 1, 0);
            await CountAsync(t, succeeding.Id, 2, 0);
        });
        var running = await store.JobQueries().GetBatchAsync(failing.Id, CancellationToken.None);
        await InTransactionAsync(store, t => CountAsync(t, failing.Id, 1, 0));
        time.Advance(TimeSpan.FromMinutes(1));
        await InTransactionAsync(store, async t =>
        {
            await CountAsync(t, failing.Id, 0, 1);
            await CountAsync(t, succeeding.Id, 1, 0);
        });
        await InTransactionAsync(store, t => CountAsync(t, failing.Id, 1, 0));
        var failed = await store.JobQueries().GetBatchAsync(failing.Id, CancellationToken.None);
        var succeeded = await store.JobQueries().GetBatchAsync(succeeding.Id, CancellationToken.None);
        var callbacks = await store.ClaimAsync("callbacks", 10, TimeSpan.FromMinutes(5), CancellationToken.None);

        Assert.Equal((3L, 2L, 1L, 0L, null as DateTimeOffset?), (running!.Total, running.Pending, running.Succeeded, running.Failed, running.FinishedAt));
        Assert.Equal((3L, 0L, 2L, 1L, time.GetUtcNow()), (failed!.Total, failed.Pending, failed.Succeeded, failed.Failed, failed.FinishedAt));
        Assert.Equal((3L, 0L, 3L, 0L, time.GetUtcNow()), (succeeded!.Total, succeeded.Pending, succeeded.Succeeded, succeeded.Failed, succeeded.FinishedAt));
        Assert.Equal(
            new[] { failing.OnComplete!.Envelope.MessageId, succeeding.OnSuccess!.Envelope.MessageId, succeeding.OnComplete!.Envelope.MessageId }.Order(),
            callbacks.Select(c => c.Envelope.MessageId).Order());
        var called = callbacks.Single(c => c.Envelope.MessageId == succeeding.OnSuccess.Envelope.MessageId);
        Assert.Equal((succeeding.OnSuccess.Priority, succeeding.OnSuccess.Envelope.MessageType, succeeding.OnSuccess.Envelope.CorrelationId, succeeding.OnSuccess.Envelope.SentAt), (called.Priority, called.Envelope.MessageType, called.Envelope.CorrelationId, called.Envelope.SentAt));
        Assert.Equal(succeeding.OnSuccess.Envelope.Headers, called.Envelope.Headers);
        Assert.Equal(succeeding.OnSuccess.Envelope.Body.ToArray(), called.Envelope.Body.ToArray());
    }

    /// <summary>
    /// Retrying a dead job of a running batch takes its failure back (pending again); once the batch finished, a retry
    /// leaves its counts as they ended.
    /// </summary>
    [Fact]
    public async Task Retrying_a_dead_job_reopens_its_count_in_an_unfinished_batch()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        foreach (var id in new[] { "open", "closed" })
        {
            await InTransactionAsync(store, t => t.Jobs().CreateBatchAsync(NewBatch(id, time.GetUtcNow()), CancellationToken.None));
            await InTransactionAsync(store, t => t.Jobs().AddToBatchAsync(id, 1, CancellationToken.None));
            await host.Bus.SendAsync(new ConformanceCommand("job-of-" + id), new SendOptions { Headers = InBatch(id) });
        }

        await InTransactionAsync(store, t => t.Jobs().SealBatchAsync("closed", CancellationToken.None));

        // A claim may return fewer than are waiting (a transport delivers them as its relay moves them): claim on.
        var claimed = new List<QueuedMessage>();
        await WaitForAsync(async () =>
        {
            claimed.AddRange(await ClaimJobsAsync(store, 10, TimeSpan.FromMinutes(5)));
            return claimed.Count >= 2;
        });
        foreach (var message in claimed)
        {
            await InTransactionAsync(store, async t =>
            {
                await t.DeadLetterAsync(message, DeadLetterReasons.PermanentFailure, "System.InvalidOperationException: no", null, CancellationToken.None);
                await t.Jobs().RecordBatchOutcomesAsync(message.Envelope.Headers[JobHeaders.Batch], 0, 1, CancellationToken.None);
            });
        }

        var letters = await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None);
        foreach (var letter in letters)
        {
            Assert.True(await store.RetryDeadLetterAsync(letter.Id, CancellationToken.None));
        }

        var open = (await store.JobQueries().GetBatchAsync("open", CancellationToken.None))!;
        var closed = (await store.JobQueries().GetBatchAsync("closed", CancellationToken.None))!;
        var retried = new List<QueuedMessage>();
        await WaitForAsync(async () =>
        {
            retried.AddRange(await ClaimJobsAsync(store, 10, TimeSpan.FromMinutes(5)));
            return retried.Count >= 2;
        });
        var retriedOpen = retried.Single(m => KeyOf(m) == "job-of-open");
        await InTransactionAsync(store, async t =>
        {
            await t.CompleteAsync(retriedOpen, CancellationToken.None);
            await t.Jobs().RecordBatchOutcomesAsync("open", 1, 0, CancellationToken.None);
        });
        var finished = await InTransactionAsync(store, t => t.Jobs().SealBatchAsync("open", CancellationToken.None));

        Assert.Equal(2, letters.Count);
        Assert.Equal((1L, 1L, 0L, 0L), (open.Total, open.Pending, open.Succeeded, open.Failed));
        Assert.Equal((1L, 0L, 0L, 1L), (closed.Total, closed.Pending, closed.Succeeded, closed.Failed));
        Assert.NotNull(closed.FinishedAt);
        Assert.Equal(2, retried.Count);
        Assert.NotNull(finished);
        Assert.Equal((1L, 0L, 1L, 0L), (finished.Total, finished.Pending, finished.Succeeded, finished.Failed));
    }

    /// <summary>
    /// A recurring schedule keeps where it stands when stored again with the same cron and time zone, restarts when
    /// either changes, advances only from where it was expected to be, and is due once its next occurrence has come.
    /// </summary>
    [Fact]
    public async Task Recurring_schedule_upsert_advance_due_and_remove()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var t0 = time.GetUtcNow();
        var nightly = new RecurringJobRecord
        {
            Name = "nightly",
            Cron = "0 2 * * *",
            TimeZone = "UTC",
            Queue = Queue,
            MessageType = "conformance.command@1",
            Body = "{\"key\":\"nightly\"}"u8.ToArray(),
            Priority = 1,
            Misfire = MisfirePolicy.Skip,
            NextAt = t0.AddHours(2),
        };
        var hourly = nightly with { Name = "hourly", Cron = "0 * * * *", Misfire = MisfirePolicy.RunOnce, NextAt = t0.AddHours(1) };

        await InTransactionAsync(store, t => t.Jobs().UpsertRecurringJobAsync(nightly, CancellationToken.None));
        await InTransactionAsync(store, t => t.Jobs().UpsertRecurringJobAsync(hourly, CancellationToken.None));
        var dueBefore = await InTransactionAsync(store, t => t.Jobs().LoadDueRecurringJobsAsync(t0.AddMinutes(59), CancellationToken.None));
        var dueAtOne = await InTransactionAsync(store, t => t.Jobs().LoadDueRecurringJobsAsync(t0.AddHours(1), CancellationToken.None));
        var dueAtTwo = await InTransactionAsync(store, t => t.Jobs().LoadDueRecurringJobsAsync(t0.AddHours(2), CancellationToken.None));
        var advanced = await InTransactionAsync(store, t => t.Jobs().AdvanceRecurringJobAsync("nightly", t0.AddHours(2), t0.AddHours(26), t0.AddHours(2), CancellationToken.None));
        var advancedAgain = await InTransactionAsync(store, t => t.Jobs().AdvanceRecurringJobAsync("nightly", t0.AddHours(2), t0.AddHours(50), t0.AddHours(26), CancellationToken.None));
        await InTransactionAsync(store, t => t.Jobs().UpsertRecurringJobAsync(nightly with { Priority = 7, Body = "{\"key\":\"v2\"}"u8.ToArray(), NextAt = t0.AddHours(3) }, CancellationToken.None));
        var sameCron = (await store.JobQueries().ListRecurringJobsAsync(CancellationToken.None)).Single(r => r.Name == "nightly");
        await InTransactionAsync(store, t => t.Jobs().UpsertRecurringJobAsync(nightly with { Cron = "0 3 * * *", NextAt = t0.AddHours(3) }, CancellationToken.None));
        var newCron = (await store.JobQueries().ListRecurringJobsAsync(CancellationToken.None)).Single(r => r.Name == "nightly");
        await InTransactionAsync(store, t => t.Jobs().UpsertRecurringJobAsync(nightly with { Cron = "0 3 * * *", TimeZone = "Europe/Paris", NextAt = t0.AddHours(4) }, CancellationToken.None));
        var newZone = (await store.JobQueries().ListRecurringJobsAsync(CancellationToken.None)).Single(r => r.Name == "nightly");
        var removed = await InTransactionAsync(store, t => t.Jobs().RemoveRecurringJobAsync("hourly", CancellationToken.None));
        var removedAgain = await InTransactionAsync(store, t => t.Jobs().RemoveRecurringJobAsync("hourly", CancellationToken.None));

        Assert.Empty(dueBefore);
        Assert.Equal(["hourly"], dueAtOne.Select(r => r.Name));
        Assert.Equal(["hourly", "nightly"], dueAtTwo.Select(r => r.Name));
        var loaded = dueAtTwo.Single(r => r.Name == "nightly");
        Assert.Equal((nightly.Cron, nightly.TimeZone, nightly.Queue, nightly.MessageType, nightly.Priority, MisfirePolicy.Skip, nightly.NextAt, null as DateTimeOffset?), (loaded.Cron, loaded.TimeZone, loaded.Queue, loaded.MessageType, loaded.Priority, loaded.Misfire, loaded.NextAt, loaded.LastAt));
        Assert.Equal(nightly.Body.ToArray(), loaded.Body.ToArray());
        Assert.Equal(MisfirePolicy.RunOnce, dueAtTwo.Single(r => r.Name == "hourly").Misfire);
        Assert.True(advanced);
        Assert.False(advancedAgain);
        Assert.Equal((t0.AddHours(26), (DateTimeOffset?)t0.AddHours(2), 7), (sameCron.NextAt, sameCron.LastAt, sameCron.Priority));
        Assert.Equal("{\"key\":\"v2\"}", Encoding.UTF8.GetString(sameCron.Body.Span));
        Assert.Equal(("0 3 * * *", t0.AddHours(3)), (newCron.Cron, newCron.NextAt));
        Assert.Equal(("Europe/Paris", t0.AddHours(4)), (newZone.TimeZone, newZone.NextAt));
        Assert.True(removed);
        Assert.False(removedAgain);
        Assert.Equal(["nightly"], (await store.JobQueries().ListRecurringJobsAsync(CancellationToken.None)).Select(r => r.Name));
    }

    /// <summary>
    /// Cancelling a waiting job moves it to the dead letters as cancelled and counts it as failed in its batch, which
    /// then finishes and enqueues its completion callback only; a cancelled job cannot be cancelled again.
    /// </summary>
    [Fact]
    public async Task Cancelling_a_waiting_job_dead_letters_it_and_counts_it_failed_in_its_batch()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var batch = NewBatch("cancel-me", time.GetUtcNow());
        await CreateSealedBatchOfOneAsync(store, batch);
        var job = await host.Bus.SendAsync(new ConformanceCommand("waiting"), new SendOptions { Headers = InBatch(batch.Id), Delay = TimeSpan.FromMinutes(10) });

        var outcome = await store.Jobs().CancelJobAsync(job, CancellationToken.None);
        var again = await store.Jobs().CancelJobAsync(job, CancellationToken.None);
        var unknown = await store.Jobs().CancelJobAsync(Guid.NewGuid(), CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(10));

        Assert.Equal(JobCancelOutcome.Cancelled, outcome);
        Assert.Equal(JobCancelOutcome.NotFound, again);
        Assert.Equal(JobCancelOutcome.NotFound, unknown);
        Assert.Empty(await ClaimJobsAsync(store, 10, TimeSpan.FromMinutes(5)));
        var letter = Assert.Single(await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Equal((job, DeadLetterReasons.Cancelled), (letter.Envelope.MessageId, letter.Reason));
        var info = await store.JobQueries().GetJobAsync(job, CancellationToken.None);
        Assert.Equal((JobState.Cancelled, (long?)letter.Id, batch.Id), (info!.State, info.DeadLetterId, info.BatchId));
        await AssertFinishedWithOneFailureAndCalledBackAsync(store, batch);
    }

    /// <summary>Cancelling a running job leaves it with its worker and flags it; the flag is read back until it is forgotten.</summary>
    [Fact]
    public async Task Cancelling_a_running_job_flags_it_for_its_worker()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        await StartJobQueueAsync(store);
        var running = await host.Bus.SendAsync(new ConformanceCommand("running"));
        var other = await host.Bus.SendAsync(new ConformanceCommand("other"));
        var claimed = await ClaimJobsAsync(store, 1, TimeSpan.FromMinutes(5));

        var outcome = await store.Jobs().CancelJobAsync(running, CancellationToken.None);
        var flagged = await store.Jobs().ReadCancellationsAsync([running, other], CancellationToken.None);
        var state = (await store.JobQueries().GetJobAsync(running, CancellationToken.None))!.State;
        await InTransactionAsync(store, t => t.Jobs().ForgetJobStateAsync([running], CancellationToken.None));
        var forgotten = await store.Jobs().ReadCancellationsAsync([running, other], CancellationToken.None);

        Assert.Equal(running, Assert.Single(claimed).Envelope.MessageId);
        Assert.Equal(JobCancelOutcome.Requested, outcome);
        Assert.Equal([running], flagged);
        Assert.Equal(JobState.Processing, state);
        Assert.Empty(forgotten);
        Assert.Empty(await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Empty(await store.Jobs().ReadCancellationsAsync([], CancellationToken.None));
    }

    /// <summary>Progress reported by a running job is read back with the job, the latest report winning, until it is forgotten.</summary>
    [Fact]
    public async Task Job_progress_is_saved_and_read_back_with_the_job()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var job = await host.Bus.SendAsync(new ConformanceCommand("progressing"));
        await InTransactionAsync(store, t => t.Jobs().RegisterJobQueueAsync(Queue, CancellationToken.None));
        await ClaimJobsAsync(store, 1, TimeSpan.FromMinutes(5));

        var before = await store.JobQueries().GetJobAsync(job, CancellationToken.None);
        await store.Jobs().SaveJobProgressAsync(job, 40, "400 of 1000 invoices", CancellationToken.None);
        var first = await store.JobQueries().GetJobAsync(job, CancellationToken.None);
        await store.Jobs().SaveJobProgressAsync(job, 80, null, CancellationToken.None);
        var second = await store.JobQueries().GetJobAsync(job, CancellationToken.None);
        var listed = Assert.Single(await store.JobQueries().ListJobsAsync(new JobQuery { Queue = Queue }, CancellationToken.None));
        await InTransactionAsync(store, t => t.Jobs().ForgetJobStateAsync([job], CancellationToken.None));
        var forgotten = await store.JobQueries().GetJobAsync(job, CancellationToken.None);

        Assert.Equal((null as int?, null as string), (before!.Progress, before.ProgressNote));
        Assert.Equal((40 as int?, "400 of 1000 invoices"), (first!.Progress, first.ProgressNote));
        Assert.Equal((80 as int?, null as string), (second!.Progress, second.ProgressNote));
        Assert.Equal(80, listed.Progress);
        Assert.Null(forgotten!.Progress);
    }

    /// <summary>
    /// A job reads back in every state: scheduled, enqueued, processing, scheduled again after a failure (with the
    /// error), succeeded (from the inbox), and dead (with its reason and dead-letter id); an unknown id is null.
    /// </summary>
    [Fact]
    public async Task Job_reads_back_through_its_states()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        await StartJobQueueAsync(store);
        var t0 = time.GetUtcNow();
        var asOf = t0.AddMinutes(-1);
        var job = await host.Bus.SendAsync(new ConformanceCommand("states"), new SendOptions
        {
            Delay = TimeSpan.FromMinutes(5),
            Priority = 3,
            CorrelationId = "close-2030-01",
            AsOf = asOf,
            Headers = InBatch("b-states"),
        });
        Task<JobInfo?> GetAsync(Guid id) => store.JobQueries().GetJobAsync(id, CancellationToken.None).AsTask();

        var scheduled = (await GetAsync(job))!;
        time.Advance(TimeSpan.FromMinutes(5));
        var enqueued = (await GetAsync(job))!;
        var claimed = Assert.Single(await ClaimJobsAsync(store, 1, TimeSpan.FromSeconds(30)));
        var processing = (await GetAsync(job))!;
        var failure = new AttemptRecord(1, time.GetUtcNow(), "System.TimeoutException: the ledger did not answer");
        await InTransactionAsync(store, t => t.RetryLaterAsync(claimed, time.GetUtcNow().AddMinutes(1), failure, CancellationToken.None));
        var retrying = (await GetAsync(job))!;
        time.Advance(TimeSpan.FromMinutes(1));
        var again = Assert.Single(await ClaimJobsAsync(store, 1, TimeSpan.FromSeconds(30)));
        time.Advance(TimeSpan.FromSeconds(5));
        await InTransactionAsync(store, async t =>
        {
            await t.TryRecordInboxAsync(Queue, again.Envelope, CancellationToken.None);
            await t.CompleteAsync(again, CancellationToken.None);
        });
        var succeeded = (await GetAsync(job))!;

        var doomed = await host.Bus.SendAsync(new ConformanceCommand("doomed"));
        var doomedClaim = Assert.Single(await ClaimJobsAsync(store, 1, TimeSpan.FromSeconds(30)));
        await InTransactionAsync(store, t => t.DeadLetterAsync(doomedClaim, DeadLetterReasons.PermanentFailure, "System.InvalidOperationException: no such customer\n   at Billing.Charge()", null, CancellationToken.None));
        var dead = (await GetAsync(doomed))!;

        Assert.Equal((job, Queue, "conformance.command@1", JobState.Scheduled, "close-2030-01", (DateTimeOffset?)t0.AddMinutes(5), 3, 0, "b-states"),
            (scheduled.Id, scheduled.Queue, scheduled.Type, scheduled.State, scheduled.CorrelationId, scheduled.DueAt, scheduled.Priority, scheduled.Attempts, scheduled.BatchId));
        Assert.Equal((t0, (DateTimeOffset?)asOf, null as DateTimeOffset?), (scheduled.EnqueuedAt, scheduled.AsOf, scheduled.FinishedAt));
        Assert.Equal("states", System.Text.Json.JsonDocument.Parse(scheduled.Body!.Value).RootElement.GetProperty("key").GetString());
        Assert.Equal("b-states", scheduled.Headers[JobHeaders.Batch]);
        Assert.Equal(JobState.Enqueued, enqueued.State);
        Assert.Equal((JobState.Processing, 1, (DateTimeOffset?)t0.AddMinutes(5).AddSeconds(30)), (processing.State, processing.Attempts, processing.DueAt));
        Assert.Equal((JobState.Scheduled, failure.Error), (retrying.State, retrying.Error));
        Assert.Equal([failure], retrying.History);
        Assert.Equal((job, Queue, "conformance.command@1", JobState.Succeeded, "close-2030-01", (DateTimeOffset?)time.GetUtcNow()),
            (succeeded.Id, succeeded.Queue, succeeded.Type, succeeded.State, succeeded.CorrelationId, succeeded.FinishedAt));
        Assert.Null(succeeded.Body);
        Assert.Equal((JobState.Dead, Queue, "permanent-failure", (DateTimeOffset?)time.GetUtcNow(), 1),
            (dead.State, dead.Queue, dead.Error, dead.FinishedAt, dead.Attempts));
        Assert.Equal(Assert.Single(await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Id, dead.DeadLetterId);
        Assert.Null(await GetAsync(Guid.NewGuid()));
    }

    /// <summary>Jobs are listed newest first across the queue, the inbox and the dead letters, filtered by queue, state and batch.</summary>
    [Fact]
    public async Task Jobs_are_listed_newest_first_by_queue_state_and_batch()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        await StartJobQueueAsync(store);
        async Task<Guid> SendAsync(string key, SendOptions? options = null)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            return await host.Bus.SendAsync(new ConformanceCommand(key), options ?? new SendOptions());
        }

        var succeeded = await SendAsync("succeeded");
        var handled = Assert.Single(await ClaimJobsAsync(store, 1, TimeSpan.FromMinutes(5)));
        await InTransactionAsync(store, async t =>
        {
            await t.TryRecordInboxAsync(Queue, handled.Envelope, CancellationToken.None);
            await t.CompleteAsync(handled, CancellationToken.None);
        });
        var dead = await SendAsync("dead", new SendOptions { Headers = InBatch("b") });
        var doomed = Assert.Single(await ClaimJobsAsync(store, 1, TimeSpan.FromMinutes(5)));
        await InTransactionAsync(store, t => t.DeadLetterAsync(doomed, DeadLetterReasons.MaxAttemptsExceeded, null, null, CancellationToken.None));
        var cancelled = await SendAsync("cancelled", new SendOptions { Headers = InBatch("b") });
        await store.Jobs().CancelJobAsync(cancelled, CancellationToken.None);
        var processing = await SendAsync("processing", new SendOptions { Headers = InBatch("b") });
        await ClaimJobsAsync(store, 1, TimeSpan.FromMinutes(5));
        var enqueued = await SendAsync("enqueued");
        var scheduled = await SendAsync("scheduled", new SendOptions { Delay = TimeSpan.FromHours(1), Headers = InBatch("b") });
        var elsewhere = await SendAsync("elsewhere", new SendOptions { Queue = "reports" });
        await SendAsync("not a job", new SendOptions { Queue = "plain-messages" });
        await InTransactionAsync(store, async t =>
        {
            await t.Jobs().RegisterJobQueueAsync(Queue, CancellationToken.None);
            await t.Jobs().RegisterJobQueueAsync("reports", CancellationToken.None);
            await t.Jobs().RegisterJobQueueAsync("reports", CancellationToken.None);
        });

        async Task<IEnumerable<Guid>> ListAsync(JobQuery query) => (await store.JobQueries().ListJobsAsync(query, CancellationToken.None)).Select(j => j.Id);

        Assert.Equal([elsewhere, scheduled, enqueued, processing, cancelled, dead, succeeded], await ListAsync(new JobQuery()));
        Assert.Equal([scheduled, enqueued, processing, cancelled, dead, succeeded], await ListAsync(new JobQuery { Queue = Queue }));
        Assert.Equal([elsewhere], await ListAsync(new JobQuery { Queue = "reports" }));
        Assert.Equal([scheduled], await ListAsync(new JobQuery { State = JobState.Scheduled }));
        Assert.Equal([elsewhere, enqueued], await ListAsync(new JobQuery { State = JobState.Enqueued }));
        Assert.Equal([processing], await ListAsync(new JobQuery { State = JobState.Processing }));
        Assert.Equal([succeeded], await ListAsync(new JobQuery { State = JobState.Succeeded }));
        Assert.Equal([dead], await ListAsync(new JobQuery { State = JobState.Dead }));
        Assert.Equal([cancelled], await ListAsync(new JobQuery { State = JobState.Cancelled }));
        Assert.Equal([scheduled, processing, cancelled, dead], await ListAsync(new JobQuery { BatchId = "b" }));
        Assert.Equal([cancelled], await ListAsync(new JobQuery { BatchId = "b", Queue = Queue, State = JobState.Cancelled }));
        Assert.Equal([scheduled, processing], await ListAsync(new JobQuery { BatchId = "b", Max = 2 }));
        Assert.Empty(await ListAsync(new JobQuery { BatchId = "b", State = JobState.Enqueued }));
        Assert.Equal([elsewhere, scheduled], await ListAsync(new JobQuery { Max = 2 }));
        Assert.Empty(await ListAsync(new JobQuery { Max = 0 }));
    }
}
