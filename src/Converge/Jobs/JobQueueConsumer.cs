using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using Converge.Contracts;
using Converge.Diagnostics;
using Converge.Runtime;
using Converge.Runtime.GroupCommit;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Converge.Jobs;

/// <summary>
/// Works one job queue. Jobs are claimed in batches under a lease (a short write), run concurrently outside any
/// transaction, and their outcomes (the effects each job recorded, the inbox record, the removal from the queue,
/// batch counters) are committed by one committer in groups: a slow job never holds the store's write lock, and
/// a thousand fast ones cost a handful of commits. The group commit itself is <see cref="GroupCommitter"/>'s; what a
/// job's outcome writes (its recorded effects, batch counters, job state to forget) is this consumer's.
/// </summary>
internal sealed class JobQueueConsumer
{
    const int MaxCommitGroup = 1024;

    readonly QueueOptions _queue;
    readonly JobRuntime _runtime;
    readonly ConvergeOptions _options;
    readonly IMessageStore _store;
    readonly ObserverSet _observers;
    readonly IServiceScopeFactory _scopes;
    readonly ILogger _logger;
    readonly Dictionary<string, JobRegistration> _registrations;
    readonly Channel<Finished> _finished = Channel.CreateUnbounded<Finished>(new UnboundedChannelOptions { SingleReader = false });
    readonly ConcurrentDictionary<long, Running> _running = new();
    readonly AsyncSlots _executing;
    readonly Doorbell _slotFreed;
    readonly ClaimPolicy _byPriority;
    readonly ClaimPolicy _oldestFirst;
    readonly bool _limited;
    readonly ConcurrentDictionary<Task, byte> _jobs = new();
    readonly long[] _claimCounts = new long[2];
    readonly GroupCommitter _committer;
    readonly Outcomes _writer;
    CancellationToken _stopping;
    CancellationToken _abort;
    int _outstanding;
    int _timerBusy;
    DateTimeOffset _renewedAt;

    public JobQueueConsumer(QueueOptions queue, JobRuntime runtime, ObserverSet observers, IServiceScopeFactory scopes, ILogger logger)
    {
        _queue = queue;
        _runtime = runtime;
        _options = runtime.Options;
        _store = runtime.Store;
        _observers = observers;
        _scopes = scopes;
        _logger = logger;
        _registrations = _options.JobHandlers
            .Where(j => j.Queue == queue.Name)
            .ToDictionary(j => _options.Messages.GetName(j.JobType), StringComparer.Ordinal);
        _executing = new AsyncSlots(queue.Concurrency, _options.OwnScheduler);
        _slotFreed = new Doorbell(_options.OwnScheduler);
        _byPriority = new ClaimPolicy { MaxInFlight = queue.MaxInFlight, RateLimit = queue.RateLimit };
        _oldestFirst = _byPriority with { OldestFirst = true };
        _limited = queue.MaxInFlight is not null || queue.RateLimit is not null;
        _committer = new GroupCommitter(_store, queue.Name, _options, observers, logger);
        _writer = new Outcomes(this);
    }

    /// <summary>
    /// Jobs claimed and not yet committed or handed back. Up to as many again as run at once wait claimed, so workers
    /// never idle between commits; more would hold back higher priorities enqueued meanwhile and starve other
    /// processes. Limited queues claim only what runs, so leases and permits are spent on running jobs.
    /// </summary>
    int Capacity => _limited ? _queue.Concurrency : 2 * _queue.Concurrency;

    public async Task RunAsync(CancellationToken stopping, CancellationToken abort)
    {
        _stopping = stopping;
        _abort = abort;
        // One committer per writer the store can take at once: on a server, while one group waits for its commit to
        // reach the disk, the next is already on its way.
        var committers = Task.WhenAll(Enumerable.Range(0, Math.Clamp(_store.ParallelWriters, 1, 16))
            .Select(_ => _options.Run(() => CommitLoopAsync(abort))));
        var tick = Min(_options.LeaseDuration / 3, _options.Jobs.CancellationCheckInterval);
        _renewedAt = _options.TimeProvider.GetUtcNow();
        using (_options.TimeProvider.CreateTimer(_ => OnTick(), null, tick, tick))
        {
            await ClaimLoopAsync(stopping);

            // Stopping: no new claims; the jobs in flight finish (or are cancelled by abort and handed back). The
            // committer claims nothing once stopping, so the set of jobs only shrinks from here.
            while (!_jobs.IsEmpty)
            {
                await Task.WhenAll(_jobs.Keys);
            }

            // A commit under way when the stop came may still start the jobs it claimed; wait for those too, until
            // every claimed job is committed or handed back.
            while (Volatile.Read(ref _outstanding) > 0)
            {
                await _slotFreed.WaitAsync(TimeSpan.FromMilliseconds(50), _options.TimeProvider, CancellationToken.None);
                await Task.WhenAll(_jobs.Keys);
            }
        }

        _finished.Writer.Complete();
        await committers;
    }

    static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    /// <summary>Which order the next claim takes; counted in jobs, not claims: one job in every OldestFirstEvery is the longest-waiting one.</summary>
    (ClaimPolicy Policy, bool Oldest) NextPolicy()
    {
        lock (_claimCounts)
        {
            var oldest = _queue.OldestFirstEvery > 0 && _claimCounts[0] >= (_queue.OldestFirstEvery - 1) * (_claimCounts[1] + 1);
            return (oldest ? _oldestFirst : _byPriority, oldest);
        }
    }

    void CountClaimed(bool oldest, int count)
    {
        lock (_claimCounts)
        {
            _claimCounts[oldest ? 1 : 0] += oldest ? Math.Max(count, 1) : count;
        }
    }

    /// <summary>Starts claimed jobs; each holds a slot until its outcome commits.</summary>
    void Dispatch(IReadOnlyList<QueuedMessage> batch)
    {
        Interlocked.Add(ref _outstanding, batch.Count);
        foreach (var message in batch)
        {
            var running = new Running(message, CancellationTokenSource.CreateLinkedTokenSource(_abort));
            _running[message.Id] = running;
            var job = _options.Run(() => ExecuteAsync(running, _abort));
            _jobs[job] = 0;
            _ = job.ContinueWith(static (t, state) => ((ConcurrentDictionary<Task, byte>)state!).TryRemove(t, out _), _jobs, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    /// <summary>
    /// Claims when the worker is idle or at least half its slots are free; in between, the committer claims the next
    /// jobs in the same transaction that commits the finished ones, which saves the store a write per claim.
    /// </summary>
    async Task ClaimLoopAsync(CancellationToken stopping)
    {
        var bell = _store.Signals.Queue(_queue.Name);
        var failures = 0;
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                var outstanding = Volatile.Read(ref _outstanding);
                var free = Capacity - outstanding;
                if (free <= 0 || (outstanding > 0 && free < (Capacity + 1) / 2))
                {
                    await _slotFreed.WaitAsync(_options.PollInterval, _options.TimeProvider, stopping);
                    continue;
                }

                var (policy, oldest) = NextPolicy();
                var batch = await _store.ClaimAsync(_queue.Name, Math.Min(free, _queue.BatchSize), _options.LeaseDuration, policy, stopping);
                failures = 0;
                CountClaimed(oldest, batch.Count);
                if (batch.Count == 0)
                {
                    await _committer.WaitForWorkAsync(bell, _limited ? WaitForLimitsAsync : null, stopping);
                    continue;
                }

                Dispatch(batch);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                break;
            }
            catch (Exception exception)
            {
                if (!await _committer.BackOffAsync(exception, ++failures, stopping))
                {
                    break;
                }
            }
        }
    }

    /// <summary>
    /// Work is waiting but the limits said no: waits for a token to refill or a job of ours to finish, not for the next
    /// enqueue (which would spin while the queue is busy). Not sooner than 10 ms (or half the time the bucket takes to
    /// refill its burst, if shorter): when the limit is other processes' leases, each look is a read of the store.
    /// </summary>
    Task<bool> WaitForLimitsAsync(TimeSpan wait, CancellationToken stopping)
    {
        var refill = _queue.RateLimit is { } limit
            ? TimeSpan.FromSeconds(Math.Max(1 / limit.PermitsPerSecond, Math.Min(0.010, limit.Burst / limit.PermitsPerSecond / 2)))
            : wait;
        return _slotFreed.WaitAsync(Min(refill, wait), _options.TimeProvider, stopping);
    }

    async Task ExecuteAsync(Running running, CancellationToken abort)
    {
        Finished finished;
        try
        {
            // A job still waiting for a slot when the worker stops is handed back unstarted, attempt uncounted.
            await _executing.EnterAsync(_stopping);
        }
        catch (OperationCanceledException)
        {
            _finished.Writer.TryWrite(new Finished(running, Outcome.HandBack));
            return;
        }

        try
        {
            finished = await RunJobAsync(running, abort);
        }
        finally
        {
            _executing.Exit();
        }

        _finished.Writer.TryWrite(finished);
    }

    async Task<Finished> RunJobAsync(Running running, CancellationToken abort)
    {
        var message = running.Message;
        var envelope = message.Envelope;
        var decoded = QueueOutcomes.Decode(envelope, _queue.Name, _options, _registrations, static r => r.JobType);
        if (decoded.RejectedFor is { } reason)
        {
            return new Finished(running, Outcome.DeadLetter, decoded.Error, Reason: reason);
        }

        if (message.Attempt > _options.Retry.MaxAttempts)
        {
            // Claimed more often than allowed without ever recording a failure: it killed its process each time.
            return new Finished(running, Outcome.DeadLetter, Reason: DeadLetterReasons.MaxAttemptsExceeded);
        }

        if (running.Cancellation.IsCancellationRequested && !abort.IsCancellationRequested)
        {
            return new Finished(running, Outcome.Cancelled);
        }

        var scope = _scopes.CreateAsyncScope();
        using var activity = StartActivity(envelope, message.Attempt);
        var started = _options.TimeProvider.GetTimestamp();
        Finished finished;
        try
        {
            var context = new JobContext(_runtime, envelope, _queue.Name, message.Attempt, scope.ServiceProvider);
            await decoded.Registration!.Invoker.InvokeAsync(scope.ServiceProvider, decoded.Body!, context, running.Cancellation.Token);

            // A job whose cancellation was asked for and that finished anyway leaves no request behind.
            finished = new Finished(running, Outcome.Succeeded, Context: context, Forget: context.ReportedProgress || running.Cancellation.IsCancellationRequested);
        }
        catch (Exception) when (abort.IsCancellationRequested)
        {
            finished = new Finished(running, Outcome.HandBack);
        }
        catch (OperationCanceledException) when (running.Cancellation.IsCancellationRequested)
        {
            finished = new Finished(running, Outcome.Cancelled);
        }
        catch (Exception exception)
        {
            ConvergeDiagnostics.Failed(activity, exception);
            finished = new Finished(running, Outcome.Failed, exception);
        }
        finally
        {
            await DisposeQuietlyAsync(scope);
        }

        Measure(envelope, finished.Outcome, _options.TimeProvider.GetElapsedTime(started), activity);
        return finished;
    }

    /// <summary>
    /// The span of one job run: a child of the span that enqueued it (its <c>traceparent</c> header), so a trace
    /// follows the job from the process that enqueued it to the one that ran it.
    /// </summary>
    Activity? StartActivity(Envelope envelope, int attempt) => ConvergeDiagnostics.StartDelivery($"job {_queue.Name}", "run", _queue.Name, envelope, attempt);

    /// <summary>Records how long a job ran on <c>converge.job.duration</c>, and its outcome on its span.</summary>
    void Measure(Envelope envelope, Outcome outcome, TimeSpan elapsed, Activity? activity)
    {
        if (outcome == Outcome.HandBack)
        {
            return;
        }

        var tag = outcome switch
        {
            Outcome.Succeeded => "succeeded",
            Outcome.Cancelled => "cancelled",
            _ => "failed",
        };
        activity?.SetTag(ConvergeDiagnostics.Tags.Outcome, tag);
        if (ConvergeDiagnostics.JobDuration.Enabled)
        {
            ConvergeDiagnostics.JobDuration.Record(
                elapsed.TotalSeconds,
                new KeyValuePair<string, object?>(ConvergeDiagnostics.Tags.Queue, _queue.Name),
                new KeyValuePair<string, object?>("job.type", envelope.MessageType),
                new KeyValuePair<string, object?>("outcome", tag));
        }
    }

    /// <summary>A scoped service that fails to dispose after its job returned does not change the job's outcome.</summary>
    async Task DisposeQuietlyAsync(AsyncServiceScope scope)
    {
        try
        {
            await scope.DisposeAsync();
        }
        catch (Exception exception)
        {
            ConvergeDiagnostics.ConsumerErrors.Add(1);
            Log.BatchFailed(_logger, exception, _queue.Name, 1);
        }
    }

    async Task CommitLoopAsync(CancellationToken abort)
    {
        var reader = _finished.Reader;
        var group = new List<Finished>(MaxCommitGroup);
        while (await reader.WaitToReadAsync(CancellationToken.None))
        {
            try
            {
                await CommitAvailableAsync(reader, group, abort);
            }
            catch (Exception exception)
            {
                // Never let the committer die: its jobs' slots would never free. What it could not record runs
                // again when the leases expire.
                ConvergeDiagnostics.ConsumerErrors.Add(1);
                Log.BatchFailed(_logger, exception, _queue.Name, group.Count);
                foreach (var item in group)
                {
                    _running.TryRemove(KeyValuePair.Create(item.Running.Message.Id, item.Running));
                }

                Interlocked.Add(ref _outstanding, -group.Count);
                _slotFreed.Ring();
            }
        }
    }

    async Task CommitAvailableAsync(ChannelReader<Finished> reader, List<Finished> group, CancellationToken abort)
    {
        // Take the store's write lock first and only then collect what finished: whatever finished while this
        // waited its turn joins the same commit, so groups grow exactly when the store is the bottleneck.
        var transaction = await BeginQuietlyAsync();
        group.Clear();
        while (group.Count < MaxCommitGroup && reader.TryRead(out var item))
        {
            group.Add(item);
        }

        var handBack = group.Where(f => f.Outcome == Outcome.HandBack).Select(f => f.Running.Message).ToList();
        var commit = group.Where(f => f.Outcome != Outcome.HandBack).ToList();
        if (commit.Count > 0)
        {
            await CommitGroupAsync(commit, transaction, abort);
        }
        else if (transaction is not null)
        {
            await transaction.DisposeAsync();
        }

        if (handBack.Count > 0)
        {
            await ReleaseQuietlyAsync(handBack, countAttempt: false);
        }

        foreach (var item in group)
        {
            // Only this run's entry: the commit may have claimed a new job under the same row id (SQLite reuses
            // the id of a deleted last row), and that one is running now.
            _running.TryRemove(KeyValuePair.Create(item.Running.Message.Id, item.Running));
            item.Running.Cancellation.Dispose();
        }

        Interlocked.Add(ref _outstanding, -group.Count);
        _slotFreed.Ring();
    }

    async Task<IStoreTransaction?> BeginQuietlyAsync()
    {
        try
        {
            return await _store.BeginAsync(CancellationToken.None);
        }
        catch (Exception exception)
        {
            // The commit below begins again and reports the failure with the jobs it concerns.
            ConvergeDiagnostics.ConsumerErrors.Add(1);
            Log.BatchFailed(_logger, exception, _queue.Name, 0);
            return null;
        }
    }

    /// <param name="group">The finished jobs to commit.</param>
    /// <param name="begun">A transaction already begun for the group, or <c>null</c>; disposed here.</param>
    /// <param name="abort">Fires when the process stops without waiting.</param>
    async Task CommitGroupAsync(List<Finished> group, IStoreTransaction? begun, CancellationToken abort)
    {
        try
        {
            // Optimistically without a savepoint per job; if any job's effects fail to apply, the group is undone
            // and applied again with a savepoint per job, so one bad job never holds back the others.
            await _committer.CommitAsync(_writer, group, begun, CancellationToken.None);
        }
        catch (Exception exception)
        {
            // Nothing of the group committed: hand the jobs back counting the attempt (a job whose effects always
            // break the commit still reaches the dead letters). Their work outside the store ran and will run again,
            // which idempotency keys absorb.
            ConvergeDiagnostics.ConsumerErrors.Add(1);
            Log.BatchFailed(_logger, exception, _queue.Name, group.Count);
            await _committer.HandBackAsync([.. group.Select(f => f.Running.Message)], countAttempt: !abort.IsCancellationRequested);
        }
    }

    /// <summary>
    /// The slots the committing jobs held free up with their commit: fill them in the same transaction. Not for a
    /// limited queue on a store with parallel writers: its claims take turns to the commit, and so would every group.
    /// </summary>
    ClaimPlan? PlanClaim(int committing)
    {
        var free = Capacity - (Volatile.Read(ref _outstanding) - committing);
        if (free > 0 && !_stopping.IsCancellationRequested && !(_limited && _store.ParallelWriters > 1))
        {
            var (policy, oldest) = NextPolicy();
            return new ClaimPlan(Math.Min(free, _queue.BatchSize), policy, oldest);
        }

        return null;
    }

    /// <summary>Writes what a group collected: the job state to forget, then the batch counters and their callbacks.</summary>
    static async ValueTask RecordGroupAsync(IStoreTransaction transaction, JobGroup group, CancellationToken cancellationToken)
    {
        var jobs = transaction.Jobs();
        if (group.Forget.Count > 0)
        {
            await jobs.ForgetJobStateAsync(group.Forget, cancellationToken);
        }

        // Batch counters last: many groups of one batch update its row, and each holds the row until its commit (a
        // store that can make the count with its commit holds it there).
        foreach (var (batchId, counts) in group.Batches)
        {
            if (!await jobs.TryHoldBatchOutcomesAsync(batchId, counts.Succeeded, counts.Failed, cancellationToken)
                && await jobs.RecordBatchOutcomesAsync(batchId, counts.Succeeded, counts.Failed, cancellationToken) is { } finished)
            {
                await JobClient.EnqueueCallbacksAsync(transaction, finished, cancellationToken);
            }
        }
    }

    /// <summary>Records the inbox entries of the group's succeeded jobs in one call; element i is job i's (null when it did not succeed).</summary>
    async ValueTask<bool?[]?> RecordInboxOfSucceededAsync(IStoreTransaction transaction, IReadOnlyList<Finished> group, CancellationToken cancellationToken)
    {
        if (group.Count(f => f.Outcome == Outcome.Succeeded) < 2)
        {
            return null;
        }

        return await QueueOutcomes.RecordInboxOfAsync(transaction, _queue.Name, group.Count, i => group[i].Outcome == Outcome.Succeeded ? group[i].Running.Message.Envelope : null, cancellationToken);
    }

    /// <summary>
    /// Applies one finished job in <paramref name="transaction"/>. <paramref name="recordedInbox"/> tells whether its inbox
    /// record was new when the group recorded them already; <paramref name="completions"/> collects the removals of
    /// succeeded jobs for one statement (<c>null</c>: each is removed at once).
    /// </summary>
    /// <returns>The outcome, or <c>null</c> when the lease was lost (nothing of this job may commit).</returns>
    async ValueTask<HandlingOutcome?> ApplyAsync(IStoreTransaction transaction, Finished item, Dictionary<string, (int Succeeded, int Failed)> batches, List<Guid> forget, bool? recordedInbox, List<QueuedMessage>? completions, CancellationToken cancellationToken)
    {
        var message = item.Running.Message;
        var envelope = message.Envelope;
        var batchId = envelope.Headers.Count > 0 && envelope.Headers.TryGetValue(JobHeaders.Batch, out var batch) ? batch : null;
        switch (item.Outcome)
        {
            case Outcome.Succeeded:
                if (!(recordedInbox ?? await transaction.TryRecordInboxAsync(_queue.Name, envelope, cancellationToken)))
                {
                    // It ran before and that run committed (a lease lost mid-job, a crash after the commit, or the same
                    // job id enqueued twice). A second copy counted into a batch is taken out of it again, so the
                    // batch still finishes.
                    if (!await QueueOutcomes.CompleteAsync(transaction, message, completions, cancellationToken))
                    {
                        return null;
                    }

                    if (batchId is not null)
                    {
                        await transaction.Jobs().AddToBatchAsync(batchId, -1, cancellationToken);
                        Count(batches, batchId, succeeded: 0, failed: 0);
                    }

                    return HandlingOutcome.Duplicate;
                }

                // Every effect writes through the store's transaction (none uses its connection directly), so what the
                // store held back (sends, writes, a savepoint) may stay held and go with the group's next statement.
                foreach (var effect in item.Context!.Effects)
                {
                    await effect(transaction, cancellationToken);
                }

                if (!await QueueOutcomes.CompleteAsync(transaction, message, completions, cancellationToken))
                {
                    Log.LeaseLost(_logger, envelope.MessageId, _queue.Name);
                    return null;
                }

                if (item.Forget)
                {
                    forget.Add(envelope.MessageId);
                }

                Count(batches, batchId, succeeded: 1, failed: 0);
                return HandlingOutcome.Completed;

            case Outcome.Failed when item.Running.Cancellation.IsCancellationRequested:
                // Asked to stop and failed on the way: it stays stopped rather than being retried.
                forget.Add(envelope.MessageId);
                return await DeadLetterAsync(transaction, message, DeadLetterReasons.Cancelled, item.Error, batches, batchId, cancellationToken);

            case Outcome.Failed:
                return await RecordFailureAsync(transaction, message, item.Error!, batches, batchId, forget, cancellationToken);

            case Outcome.Cancelled:
                forget.Add(envelope.MessageId);
                return await DeadLetterAsync(transaction, message, DeadLetterReasons.Cancelled, null, batches, batchId, cancellationToken);

            default:
                return await DeadLetterAsync(transaction, message, item.Reason!, item.Error, batches, batchId, cancellationToken);
        }
    }

    static void Count(Dictionary<string, (int Succeeded, int Failed)> batches, string? batchId, int succeeded, int failed)
    {
        if (batchId is not null)
        {
            var counts = batches.GetValueOrDefault(batchId);
            batches[batchId] = (counts.Succeeded + succeeded, counts.Failed + failed);
        }
    }

    async ValueTask<HandlingOutcome?> RecordFailureAsync(IStoreTransaction transaction, QueuedMessage message, Exception exception, Dictionary<string, (int Succeeded, int Failed)> batches, string? batchId, List<Guid> forget, CancellationToken cancellationToken)
    {
        var outcome = await QueueOutcomes.RecordFailureAsync(transaction, message, exception, _options, _logger, cancellationToken);
        if (outcome == HandlingOutcome.DeadLettered)
        {
            forget.Add(message.Envelope.MessageId);
            Count(batches, batchId, succeeded: 0, failed: 1);
        }

        return outcome;
    }

    async ValueTask<HandlingOutcome?> DeadLetterAsync(IStoreTransaction transaction, QueuedMessage message, string reason, Exception? exception, Dictionary<string, (int Succeeded, int Failed)> batches, string? batchId, CancellationToken cancellationToken)
    {
        var outcome = await QueueOutcomes.DeadLetterAsync(transaction, message, reason, exception, null, _options, _logger, cancellationToken);
        if (outcome is not null)
        {
            Count(batches, batchId, succeeded: 0, failed: 1);
        }

        return outcome;
    }

    /// <summary>
    /// The timer: renews the leases of everything claimed and not yet committed (every third of the lease), and
    /// asks the store whether any running job was cancelled from another process.
    /// </summary>
    void OnTick()
    {
        if (_running.IsEmpty || Interlocked.Exchange(ref _timerBusy, 1) == 1)
        {
            return;
        }

        _ = _options.Run(async () =>
        {
            try
            {
                var snapshot = _running.Values.ToList();
                var now = _options.TimeProvider.GetUtcNow();
                if (now - _renewedAt >= _options.LeaseDuration / 3)
                {
                    // Moved on only after it worked: a failed renewal is tried again at the next tick.
                    if (!await _committer.RenewQuietlyAsync([.. snapshot.Select(r => r.Message)]))
                    {
                        return;
                    }

                    _renewedAt = now;
                }

                var cancelled = await _store.Jobs().ReadCancellationsAsync([.. snapshot.Select(r => r.Message.Envelope.MessageId)], CancellationToken.None);
                foreach (var id in cancelled)
                {
                    if (snapshot.FirstOrDefault(r => r.Message.Envelope.MessageId == id) is { } running)
                    {
                        try
                        {
                            await running.Cancellation.CancelAsync();
                        }
                        catch (ObjectDisposedException)
                        {
                            // It finished meanwhile.
                        }
                    }
                }
            }
            catch (Exception exception)
            {
                // A missed renewal only risks a second run, which the inbox and idempotency keys absorb.
                ConvergeDiagnostics.ConsumerErrors.Add(1);
                Log.RenewalFailed(_logger, exception, _queue.Name, _running.Count);
            }
            finally
            {
                Volatile.Write(ref _timerBusy, 0);
            }
        });
    }

    Task ReleaseQuietlyAsync(IReadOnlyList<QueuedMessage> messages, bool countAttempt) =>
        _committer.HandBackAsync(messages, countAttempt);

    enum Outcome
    {
        Succeeded,
        Failed,
        Cancelled,
        DeadLetter,
        HandBack,
    }

    sealed record Running(QueuedMessage Message, CancellationTokenSource Cancellation);

    sealed record Finished(Running Running, Outcome Outcome, Exception? Error = null, JobContext? Context = null, string? Reason = null, bool Forget = false);

    /// <summary>What one attempt at committing a group collects: batch counters, and the jobs whose state is forgotten.</summary>
    sealed class JobGroup
    {
        public Dictionary<string, (int Succeeded, int Failed)> Batches { get; } = new(StringComparer.Ordinal);

        public List<Guid> Forget { get; } = [];
    }

    /// <summary>
    /// What a finished job's outcome writes in the group commit. Replayable: a job ran outside the transaction and left
    /// its effects recorded, so a group is written at once and, when that fails, again with a savepoint per job.
    /// </summary>
    sealed class Outcomes(JobQueueConsumer consumer) : IOutcomeWriter<Finished, JobGroup>
    {
        public bool Replayable => true;

        public QueuedMessage MessageOf(Finished item) => item.Running.Message;

        public JobGroup NewScratch() => new();

        public ValueTask<bool?[]?> RecordInboxAsync(IStoreTransaction transaction, IReadOnlyList<Finished> group, CancellationToken cancellationToken) =>
            consumer.RecordInboxOfSucceededAsync(transaction, group, cancellationToken);

        public ValueTask<HandlingOutcome?> ApplyAsync(IStoreTransaction transaction, Finished item, JobGroup scratch, bool? recordedInbox, List<QueuedMessage>? completions, CancellationToken cancellationToken) =>
            consumer.ApplyAsync(transaction, item, scratch.Batches, scratch.Forget, recordedInbox, completions, cancellationToken);

        // Its recorded effects failed to apply (a constraint, a bad statement): that is the job failing. Anything
        // else failing to write is the group's.
        public bool FailsAlone(Finished item, Exception exception) => item.Outcome == Outcome.Succeeded;

        public ValueTask<HandlingOutcome?> ApplyFailedAsync(IStoreTransaction transaction, Finished item, Exception exception, JobGroup scratch, CancellationToken cancellationToken) =>
            consumer.ApplyAsync(transaction, item with { Outcome = Outcome.Failed, Error = exception }, scratch.Batches, scratch.Forget, null, null, cancellationToken);

        public void Applied(Finished item)
        {
            // Leases are renewed by the consumer's timer; a lost one shows at the job's removal.
        }

        public ClaimPlan? PlanClaim(int committing) => consumer.PlanClaim(committing);

        public ValueTask BeforeCommitAsync(IStoreTransaction transaction, JobGroup scratch, CancellationToken cancellationToken) =>
            RecordGroupAsync(transaction, scratch, cancellationToken);

        public bool Abandons(Exception exception) => false;

        public void Claimed(IReadOnlyList<QueuedMessage> claimed, ClaimPlan plan)
        {
            consumer.CountClaimed(plan.OldestFirst, claimed.Count);
            consumer.Dispatch(claimed);
        }
    }
}
