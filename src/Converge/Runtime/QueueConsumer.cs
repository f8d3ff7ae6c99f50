using System.Diagnostics;
using Converge.Contracts;
using Converge.Diagnostics;
using Converge.Runtime.GroupCommit;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Converge.Runtime;

/// <summary>
/// Works one queue: claims batches under a lease, runs each message's handler inside one store transaction
/// (a savepoint per message, so one failure never undoes the others), records the inbox entry and the
/// outcome, and commits the batch at once. A handler that outlives <see cref="ConvergeOptions.HandlerTimeout"/> is
/// cancelled; one that ignores cancellation is abandoned with its batch, so the write transaction never waits on it.
/// The batch's commit is <see cref="GroupCommitter"/>'s; running the handlers inside it is this consumer's.
/// </summary>
internal sealed class QueueConsumer
{
    readonly QueueOptions _queue;
    readonly ConvergeOptions _options;
    readonly IMessageStore _store;
    readonly MessageBus _bus;
    readonly ObserverSet _observers;
    readonly IServiceScopeFactory _scopes;
    readonly ILogger _logger;
    readonly Dictionary<string, HandlerRegistration> _handlers;
    readonly GroupCommitter _committer;

    public QueueConsumer(QueueOptions queue, ConvergeOptions options, IMessageStore store, MessageBus bus, ObserverSet observers, IServiceScopeFactory scopes, ILogger logger)
    {
        _queue = queue;
        _options = options;
        _store = store;
        _bus = bus;
        _observers = observers;
        _scopes = scopes;
        _logger = logger;
        _handlers = options.Handlers
            .Where(h => h.Queue == queue.Name)
            .ToDictionary(h => options.Messages.GetName(h.MessageType), StringComparer.Ordinal);
        _committer = new GroupCommitter(store, queue.Name, options, observers, logger);
    }

    public Task RunAsync(CancellationToken stopping, CancellationToken abort) =>
        Task.WhenAll(Enumerable.Range(0, _queue.Concurrency).Select(_ => _options.Run(() => WorkAsync(stopping, abort))));

    async Task WorkAsync(CancellationToken stopping, CancellationToken abort)
    {
        var bell = _store.Signals.Queue(_queue.Name);
        using var inFlight = new InFlight(abort);
        var renewEvery = _options.LeaseDuration / 3;
        using var renewal = _options.TimeProvider.CreateTimer(_ => RenewIfLong(inFlight), null, renewEvery, renewEvery);
        var failures = 0;
        var pace = new Pace();
        while (!stopping.IsCancellationRequested)
        {
            IReadOnlyList<QueuedMessage> batch;
            try
            {
                batch = await _store.ClaimAsync(_queue.Name, pace.NextBatchSize(_queue.BatchSize), _options.LeaseDuration, stopping);
                if (batch.Count == 0)
                {
                    await _committer.WaitForWorkAsync(bell, null, stopping);
                    continue;
                }

                failures = 0;
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                break;
            }
            catch (Exception exception)
            {
                await _committer.BackOffAsync(exception, ++failures, stopping);
                continue;
            }

            if (await ProcessWithRenewalAsync(batch, inFlight, pace, abort) is { } abandoned)
            {
                await WaitForAbandonedAsync(abandoned, stopping);
            }
            else if (pace.FailedInARow > 0 && batch.Any(Transports.TransportedStore.IsDelivery))
            {
                // A transport's deliveries arrive without the database: when the batch's transaction fails (the
                // database is down), the next claim would succeed at once and fail the same way, spinning through the
                // queue while the broker counts every return, so a database outage would use up a message's
                // deliveries in moments. The worker waits the retry backoff first. A claim from the store needs no
                // wait: it reaches the database itself and backs off when that fails, while contention between
                // processes (SQLite busy) is best retried at once.
                await _committer.PauseAsync(_options.Retry.DelayBefore(pace.FailedInARow + 1, _options.Random.NextDouble()), stopping);
            }
        }
    }

    /// <summary>
    /// Keeps this worker's slot until the handler it abandoned returns, as a job's or any peer's worker slot is kept:
    /// hung calls never pile up one per retry, and this process never runs a message's handler while an earlier call
    /// of it still runs here. The queue's other workers (<see cref="QueueOptions.Concurrency"/>) and other processes
    /// take its messages, the abandoned one among them when its retry is due.
    /// </summary>
    async Task WaitForAbandonedAsync(HandlerAbandonedException abandoned, CancellationToken stopping)
    {
        var message = abandoned.Message.Envelope;
        if (abandoned.Handling.IsCompleted)
        {
            return;
        }

        Log.WorkerHeldByAbandonedHandler(_logger, _queue.Name, message.MessageId, message.MessageType, _queue.Concurrency - 1);
        var started = Stopwatch.GetTimestamp();
        try
        {
            await abandoned.Handling.WaitAsync(stopping);
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            // Stopping: the call is left running, as every abandoned call is when its process ends.
            return;
        }
        catch (Exception)
        {
            // It returned by failing; its attempt was recorded when it was abandoned.
        }

        var held = Stopwatch.GetElapsedTime(started);
        Log.AbandonedHandlerReturned(_logger, message.MessageId, message.MessageType, _queue.Name, held);
    }

    /// <summary>
    /// How a worker goes on after its batches: its queue's batch size, or one at a time for as many claims as the last
    /// failed batch held, so the message that broke it (if one did) fails alone and is the only one charged; and after
    /// batches that failed as a whole, a wait of the retry backoff before the next claim.
    /// </summary>
    sealed class Pace
    {
        int _oneAtATime;

        /// <summary>Batches in a row that failed as a whole; 0 after one that committed.</summary>
        public int FailedInARow { get; private set; }

        public int NextBatchSize(int batchSize)
        {
            if (_oneAtATime == 0)
            {
                return batchSize;
            }

            _oneAtATime--;
            return 1;
        }

        public void AfterFailedBatch(int size)
        {
            FailedInARow++;
            if (size > 1)
            {
                _oneAtATime = Math.Max(_oneAtATime, size);
            }
        }

        public void AfterCommittedBatch() => FailedInARow = 0;
    }

    async Task<HandlerAbandonedException?> ProcessWithRenewalAsync(IReadOnlyList<QueuedMessage> batch, InFlight inFlight, Pace pace, CancellationToken abort)
    {
        inFlight.Start(batch, _options.TimeProvider.GetUtcNow());
        try
        {
            await ProcessAsync(batch, inFlight, abort);
            pace.AfterCommittedBatch();
        }
        catch (HandlerAbandonedException abandoned) when (!abort.IsCancellationRequested)
        {
            // The batch was rolled back without waiting for the handler. Its message's attempt counts (so a handler
            // that always hangs ends in the dead letters); the others go back untouched.
            ConvergeDiagnostics.ConsumerErrors.Add(1);
            Log.HandlerAbandoned(_logger, abandoned.Message.Envelope.MessageId, abandoned.Message.Envelope.MessageType, _queue.Name, _options.EffectiveHandlerTimeout, batch.Count);
            await RecordTimeoutQuietlyAsync(abandoned.Message);
            if (batch.Count > 1)
            {
                await ReleaseQuietlyAsync([.. batch.Where(m => !ReferenceEquals(m, abandoned.Message))], countAttempt: false);
            }

            return abandoned;
        }
        catch (Exception exception)
        {
            // The batch transaction rolled back: nothing of it took effect. Hand the messages back at once. A batch of
            // one counts its attempt, so a message that breaks every transaction it is in still reaches the dead
            // letters; a larger one goes back uncounted and this worker takes the next ones one at a time: a passing
            // failure of the store (a dropped connection, a failed commit) must not charge every message of the batch,
            // or a few of them would dead-letter healthy messages (a saga's replies among them, leaving it waiting).
            if (!abort.IsCancellationRequested)
            {
                ConvergeDiagnostics.ConsumerErrors.Add(1);
                Log.BatchFailed(_logger, exception, _queue.Name, batch.Count);
                pace.AfterFailedBatch(batch.Count);
            }

            await ReleaseQuietlyAsync(batch, countAttempt: batch.Count == 1 && !abort.IsCancellationRequested && exception is not LeasesLostException);
        }
        finally
        {
            inFlight.Stop();
        }

        return null;
    }

    /// <summary>Records the abandoned attempt of <paramref name="message"/> in a transaction of its own (retry with backoff, or dead letter).</summary>
    async Task RecordTimeoutQuietlyAsync(QueuedMessage message)
    {
        try
        {
            HandlingOutcome? outcome;
            await using (var transaction = await _store.BeginAsync(CancellationToken.None))
            {
                outcome = await RecordFailureAsync(transaction, message, HandlerTimedOut(message, abandoned: true, null), CancellationToken.None);
                await transaction.CommitAsync(CancellationToken.None);
            }

            if (outcome is { } recorded)
            {
                ConvergeDiagnostics.CountHandled(message.Queue, recorded);
                if (_observers.Any)
                {
                    _observers.Handled(message.Envelope, message.Queue, recorded);
                }
            }
        }
        catch (Exception exception)
        {
            // Its lease expires and it is delivered again then.
            ConvergeDiagnostics.ConsumerErrors.Add(1);
            Log.BatchFailed(_logger, exception, _queue.Name, 1);
        }
    }

    TimeoutException HandlerTimedOut(QueuedMessage message, bool abandoned, Exception? inner) => new(
        abandoned
            ? $"The handler of {message.Envelope.MessageType} did not finish within HandlerTimeout ({_options.EffectiveHandlerTimeout}) and ignored cancellation; it was abandoned."
            : $"The handler of {message.Envelope.MessageType} did not finish within HandlerTimeout ({_options.EffectiveHandlerTimeout}) and was cancelled.",
        inner);

    /// <summary>A handler ignored cancellation past its grace: its batch is abandoned without waiting for it.</summary>
    sealed class HandlerAbandonedException(QueuedMessage message, Task handling) : Exception("A handler ignored cancellation and was abandoned.")
    {
        public new QueuedMessage Message { get; } = message;

        /// <summary>The abandoned call, still running.</summary>
        public Task Handling { get; } = handling;
    }

    /// <summary>
    /// Called by the worker's renewal timer: extends the leases of a batch that has been in flight for a third of the
    /// lease, so a long batch is not redelivered to another consumer while it is still being handled.
    /// </summary>
    void RenewIfLong(InFlight inFlight)
    {
        var interval = _options.LeaseDuration / 3;
        var now = _options.TimeProvider.GetUtcNow();

        // A handler that blocks its worker thread never returns to be abandoned: cancel its token, and once it is past
        // its grace stop renewing, so the leases expire and another consumer takes the messages. (On SQLite the blocked
        // batch still holds the file's write lock, so nobody writes until the handler returns or its process ends.)
        var limit = _options.EffectiveHandlerTimeout;
        if (inFlight.HandlerRunningFor(now) is ({ } running, var generation) && running >= limit)
        {
            inFlight.CancelHandler(generation);
            if (running >= limit + _options.HandlerGrace && inFlight.GiveUp() is { } stuck)
            {
                ConvergeDiagnostics.ConsumerErrors.Add(1);
                Log.HandlerStuck(_logger, _queue.Name, running, limit, stuck.Count);
            }
        }

        if (inFlight.TakeForRenewal(now, interval) is not { } batch)
        {
            return;
        }

        _ = _options.Run(async () =>
        {
            try
            {
                // Losing a renewal only risks a duplicate delivery, which the inbox absorbs.
                await _committer.RenewQuietlyAsync(batch);
            }
            finally
            {
                inFlight.RenewalDone();
            }
        });
    }

    /// <summary>The batch a worker is handling and the token of its running handler, shared with its renewal timer.</summary>
    sealed class InFlight(CancellationToken abort) : IDisposable
    {
        readonly object _lock = new();
        IReadOnlyList<QueuedMessage>? _batch;
        DateTimeOffset _renewedAt;
        DateTimeOffset? _handlerStartedAt;
        CancellationTokenSource _handler = CancellationTokenSource.CreateLinkedTokenSource(abort);
        long _generation;
        bool _cancelling;
        bool _renewing;
        bool _givenUp;
        bool _disposed;

        public void Start(IReadOnlyList<QueuedMessage> batch, DateTimeOffset now)
        {
            lock (_lock)
            {
                _batch = batch;
                _renewedAt = now;
                _givenUp = false;
            }
        }

        public void Stop()
        {
            lock (_lock)
            {
                _batch = null;
                _handlerStartedAt = null;
            }
        }

        /// <summary>
        /// The token for the next handler: the same source unless the last handler's was cancelled, or the renewal timer
        /// is cancelling it right now (that cancellation was meant for the handler before).
        /// </summary>
        public CancellationToken StartHandler(DateTimeOffset now)
        {
            lock (_lock)
            {
                if (_cancelling || !_handler.TryReset())
                {
                    if (!_cancelling)
                    {
                        _handler.Dispose();
                    }

                    _handler = CancellationTokenSource.CreateLinkedTokenSource(abort);
                }

                _generation++;
                _handlerStartedAt = now;
                return _handler.Token;
            }
        }

        public void EndHandler()
        {
            lock (_lock)
            {
                _handlerStartedAt = null;
            }
        }

        /// <summary>How long the running handler has run, and which handler it is (to cancel that one only).</summary>
        public (TimeSpan? Running, long Generation) HandlerRunningFor(DateTimeOffset now)
        {
            lock (_lock)
            {
                return (_handlerStartedAt is { } started ? now - started : null, _generation);
            }
        }

        /// <summary>Cancels the handler the worker is awaiting.</summary>
        public void CancelCurrentHandler()
        {
            long generation;
            lock (_lock)
            {
                generation = _generation;
            }

            CancelHandler(generation);
        }

        /// <summary>Cancels handler number <paramref name="generation"/>, unless it has ended and another started.</summary>
        public void CancelHandler(long generation)
        {
            CancellationTokenSource handler;
            lock (_lock)
            {
                // The renewal timer may fire once more after the worker ended, or after the handler it timed ended.
                if (_disposed || _cancelling || generation != _generation || _handlerStartedAt is null)
                {
                    return;
                }

                handler = _handler;
                _cancelling = true;
            }

            try
            {
                // Outside the lock: cancellation runs the handler's own callbacks. A handler that starts meanwhile gets
                // a source of its own (StartHandler), so this reaches the handler it was meant for only.
                handler.Cancel();
            }
            catch (AggregateException)
            {
                // A callback of the handler threw: it is cancelled all the same.
            }
            finally
            {
                lock (_lock)
                {
                    _cancelling = false;
                    if (_disposed || !ReferenceEquals(handler, _handler))
                    {
                        // Replaced (or the worker ended) while it was being cancelled: nobody else will dispose it.
                        handler.Dispose();
                    }
                }
            }
        }

        /// <summary>Whether the renewal timer gave up on this batch (its leases are left to expire).</summary>
        public bool GivenUp
        {
            get
            {
                lock (_lock)
                {
                    return _givenUp;
                }
            }
        }

        /// <summary>Stops renewing the batch; returns it the first time.</summary>
        public IReadOnlyList<QueuedMessage>? GiveUp()
        {
            lock (_lock)
            {
                if (_givenUp || _batch is null)
                {
                    return null;
                }

                _givenUp = true;
                return _batch;
            }
        }

        public IReadOnlyList<QueuedMessage>? TakeForRenewal(DateTimeOffset now, TimeSpan interval)
        {
            lock (_lock)
            {
                if (_batch is null || _givenUp || _renewing || now - _renewedAt < interval)
                {
                    return null;
                }

                _renewing = true;
                _renewedAt = now;
                return _batch;
            }
        }

        public void RenewalDone()
        {
            lock (_lock)
            {
                _renewing = false;
            }
        }

        public void Dispose()
        {
            lock (_lock)
            {
                _disposed = true;
                if (!_cancelling)
                {
                    _handler.Dispose();
                }
            }
        }
    }

    async Task ProcessAsync(IReadOnlyList<QueuedMessage> batch, InFlight inFlight, CancellationToken abort)
    {
        var started = Stopwatch.GetTimestamp();

        // Decode before taking the store's write lock: on SQLite only one transaction writes at a time, so work
        // done outside it can overlap with senders.
        var deliveries = new Delivery[batch.Count];
        for (var i = 0; i < batch.Count; i++)
        {
            deliveries[i] = new Delivery(batch[i], Decode(batch[i]));
        }

        // By default a savepoint per message from the start: a failure undoes only that message's writes and records
        // its attempt, and nobody's handler runs twice for one attempt (calls to outside services stay bounded by the
        // retry limit). The batch's removals are one statement; a lease lost meanwhile (the batch outlived it and
        // another consumer claimed a message) undoes the whole batch rather than commit effects someone else now owns.
        // Isolated on failure only, a batch runs without savepoints first (replayable), unless it holds a message that
        // failed before: likely to fail again, its handler would run twice per attempt.
        var replayable = _queue.Isolation == BatchIsolation.OnFailure && batch.All(m => m.Attempt == 1);
        await _committer.CommitAsync(new Handlers(this, inFlight, batch.Count, replayable, abort), deliveries, null, abort);
        ConvergeDiagnostics.BatchDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }

    /// <summary>A claimed message and its decoded body (or why it cannot be handled).</summary>
    readonly record struct Delivery(QueuedMessage Message, QueueOutcomes.Decoded<HandlerRegistration> Decoded)
    {
        /// <summary>Whether it is dead-lettered without running its handler.</summary>
        public bool Rejected(int maxAttempts) => Decoded.RejectedFor is not null || Message.Attempt > maxAttempts;
    }

    /// <summary>
    /// What a message's outcome writes in its batch's commit: its handler runs there, inside the transaction, so it
    /// is replayable only when the queue allows its handlers to run twice (<see cref="BatchIsolation.OnFailure"/>).
    /// </summary>
    sealed class Handlers(QueueConsumer consumer, InFlight inFlight, int batchSize, bool replayable, CancellationToken abort) : IOutcomeWriter<Delivery, object?>
    {
        // With isolation on failure only, a batch runs without savepoints first and again with them when a handler
        // failed: its handlers may run twice, as the queue's options allow.
        public bool Replayable => replayable;

        public QueuedMessage MessageOf(Delivery item) => item.Message;

        public object? NewScratch() => null;

        /// <summary>The inbox records of the messages whose handlers will run, in one statement.</summary>
        public async ValueTask<bool?[]?> RecordInboxAsync(IStoreTransaction transaction, IReadOnlyList<Delivery> group, CancellationToken cancellationToken)
        {
            if (!consumer._queue.RecordsInbox)
            {
                return null;
            }

            var maxAttempts = consumer._options.Retry.MaxAttempts;
            return await QueueOutcomes.RecordInboxOfAsync(transaction, consumer._queue.Name, group.Count, i => group[i].Rejected(maxAttempts) ? null : group[i].Message.Envelope, cancellationToken);
        }

        public ValueTask<HandlingOutcome?> ApplyAsync(IStoreTransaction transaction, Delivery item, object? scratch, bool? recordedInbox, List<QueuedMessage>? completions, CancellationToken cancellationToken) =>
            consumer.HandleOneAsync(transaction, item.Message, item.Decoded, recordedInbox, completions, inFlight, cancellationToken);

        // The handler failed (or its inbox record): only that message's attempt. A message dead-lettered without
        // running that fails to write, an abandoned handler and a shutdown are the batch's.
        public bool FailsAlone(Delivery item, Exception exception) =>
            !abort.IsCancellationRequested && exception is not HandlerAbandonedException && !item.Rejected(consumer._options.Retry.MaxAttempts);

        public ValueTask<HandlingOutcome?> ApplyFailedAsync(IStoreTransaction transaction, Delivery item, Exception exception, object? scratch, CancellationToken cancellationToken) =>
            consumer.RecordFailureAsync(transaction, item.Message, exception, cancellationToken);

        public void Applied(Delivery item)
        {
            if (inFlight.GivenUp)
            {
                // A handler blocked its thread past its timeout and grace, so the leases were left to expire and
                // another consumer may hold these messages now: run nothing more, undo the batch.
                throw new LeasesLostException(batchSize);
            }
        }

        public ClaimPlan? PlanClaim(int committing) => null;

        public ValueTask BeforeCommitAsync(IStoreTransaction transaction, object? scratch, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        // Roll back at once, releasing the write lock, while the abandoned handler may still hold the transaction.
        public bool Abandons(Exception exception) => exception is HandlerAbandonedException;

        public void Claimed(IReadOnlyList<QueuedMessage> claimed, ClaimPlan plan)
        {
            // Claims nothing in its commit: a worker claims its next batch when this one is done.
        }
    }

    /// <summary>
    /// Handles one message in <paramref name="transaction"/>, under the savepoint its batch's commit gave it; its
    /// removal from the queue is added to <paramref name="completions"/>, to go with the batch's others in one statement
    /// (made at once without it). <paramref name="recordedInbox"/> tells whether its inbox record was new, when the
    /// batch recorded them together.
    /// </summary>
    /// <returns>The outcome, or <c>null</c> when the lease was lost and nothing was recorded.</returns>
    async ValueTask<HandlingOutcome?> HandleOneAsync(IStoreTransaction transaction, QueuedMessage message, QueueOutcomes.Decoded<HandlerRegistration> decoded, bool? recordedInbox, List<QueuedMessage>? completions, InFlight inFlight, CancellationToken abort)
    {
        var envelope = message.Envelope;
        if (decoded.RejectedFor is { } reason)
        {
            return await DeadLetterAsync(transaction, message, reason, decoded.Error, abort);
        }

        if (message.Attempt > _options.Retry.MaxAttempts)
        {
            // Delivered more often than allowed without ever recording a failure: it broke its batch (or the
            // process) each time. Stop here rather than loop.
            return await DeadLetterAsync(transaction, message, DeadLetterReasons.MaxAttemptsExceeded, null, abort);
        }

        if (_queue.RecordsInbox && !(recordedInbox ?? await transaction.TryRecordInboxAsync(_queue.Name, envelope, abort)))
        {
            if (!await QueueOutcomes.CompleteAsync(transaction, message, completions, abort))
            {
                return null;
            }

            Log.Duplicate(_logger, envelope.MessageId, _queue.Name);
            return HandlingOutcome.Duplicate;
        }

        using (var activity = StartActivity(envelope, message.Attempt))
        {
            try
            {
                // The message's savepoint may still be held back: it goes with the handler's first statement through
                // the context, or is sent when the handler asks for the transaction itself (GetTransactionAsync).
                var scope = _scopes.CreateAsyncScope();
                var context = new MessageContext(_bus, transaction, envelope, _queue.Name, null, message.Attempt, scope.ServiceProvider);
                var started = _options.TimeProvider.GetUtcNow();
                var handling = Invoke(decoded.Registration!.Invoker, scope.ServiceProvider, decoded.Body!, context, inFlight.StartHandler(started));
                try
                {
                    if (!handling.IsCompleted)
                    {
                        await AwaitHandlerAsync(handling, message, started, inFlight, abort);
                    }

                    await handling;
                    await context.WriteRecordedAsync(abort);
                }
                finally
                {
                    inFlight.EndHandler();
                    if (handling.IsCompleted)
                    {
                        await scope.DisposeAsync();
                    }
                    else
                    {
                        // An abandoned handler keeps its scope until it returns: disposing it sooner could wait on the
                        // handler, or pull its services from under it.
                        _ = DisposeWhenReturnedAsync(handling, scope, _queue.Name);
                    }
                }
            }
            catch (Exception exception)
            {
                // A handler that throws at once, or fails when awaited: either way its span records the error.
                ConvergeDiagnostics.Failed(activity, exception);
                throw;
            }
        }

        return await QueueOutcomes.CompleteAsync(transaction, message, completions, abort) ? HandlingOutcome.Completed : null;
    }

    /// <summary>
    /// Calls the handler; one that throws before returning its task (a handler that is not <c>async</c>) fails the same
    /// way as one whose task faults, so its scope is disposed and its worker stops timing it.
    /// </summary>
    static Task Invoke(HandlerInvoker invoker, IServiceProvider services, object body, MessageContext context, CancellationToken cancellationToken)
    {
        try
        {
            return invoker.InvokeAsync(services, body, context, cancellationToken);
        }
        catch (Exception exception)
        {
            return Task.FromException(exception);
        }
    }

    static async Task DisposeWhenReturnedAsync(Task handling, AsyncServiceScope scope, string queue)
    {
        var tag = new KeyValuePair<string, object?>("queue", queue);
        ConvergeDiagnostics.AbandonedHandlers.Add(1, tag);
        await CompletesWithinAsync(handling, Timeout.InfiniteTimeSpan, null, CancellationToken.None);
        ConvergeDiagnostics.AbandonedHandlers.Add(-1, tag);
        try
        {
            await scope.DisposeAsync();
        }
        catch (Exception)
        {
            // Nobody awaits an abandoned call; a service failing to dispose after it must not crash the process.
        }
    }

    /// <summary>
    /// Waits for a handler that did not finish at once, up to <see cref="ConvergeOptions.HandlerTimeout"/>; then cancels
    /// it and waits its grace. Throws a <see cref="TimeoutException"/> when it stopped after cancellation, and
    /// <see cref="HandlerAbandonedException"/> when it ignored it (at shutdown: when it did not stop within moments of the
    /// host running out of shutdown time).
    /// </summary>
    async Task AwaitHandlerAsync(Task handling, QueuedMessage message, DateTimeOffset started, InFlight inFlight, CancellationToken abort)
    {
        var time = _options.TimeProvider;
        var remaining = _options.EffectiveHandlerTimeout - (time.GetUtcNow() - started);
        if (await CompletesWithinAsync(handling, remaining > TimeSpan.Zero ? remaining : TimeSpan.Zero, time, abort))
        {
            // Finished in time (the caller's await reports how), also when it finished just as the wait ran out.
            return;
        }

        inFlight.CancelCurrentHandler();
        if (!abort.IsCancellationRequested)
        {
            if (!await CompletesWithinAsync(handling, _options.HandlerGrace, time, abort))
            {
                throw new HandlerAbandonedException(message, handling);
            }

            if (handling.IsCompletedSuccessfully)
            {
                return;
            }

            throw HandlerTimedOut(message, abandoned: false, handling.Exception?.GetBaseException());
        }

        // The host is out of shutdown time. A handler that honours its token stops within moments, and its batch is
        // undone and handed back like any other; only one that ignores it is abandoned. Shutdown is measured on the
        // wall clock (the host's own timeout is), so this wait never depends on a test's clock being advanced.
        if (!await CompletesWithinAsync(handling, ShutdownGrace, null, CancellationToken.None))
        {
            throw new HandlerAbandonedException(message, handling);
        }
    }

    /// <summary>How long a handler cancelled at shutdown may take to stop before it is abandoned.</summary>
    static readonly TimeSpan ShutdownGrace = TimeSpan.FromMilliseconds(250);

    /// <summary>Waits up to <paramref name="limit"/> (on <paramref name="time"/>, or the wall clock) for <paramref name="task"/>, whatever its outcome.</summary>
    static async Task<bool> CompletesWithinAsync(Task task, TimeSpan limit, TimeProvider? time, CancellationToken cancellationToken)
    {
        try
        {
            await (time is null ? task.WaitAsync(limit, cancellationToken) : task.WaitAsync(limit, time, cancellationToken));
        }
        catch (Exception)
        {
            // Timed out, cancelled, or the task failed: only whether it completed matters here.
        }

        return task.IsCompleted;
    }

    ValueTask<HandlingOutcome?> RecordFailureAsync(IStoreTransaction transaction, QueuedMessage message, Exception exception, CancellationToken abort) =>
        QueueOutcomes.RecordFailureAsync(transaction, message, exception, _options, _logger, abort);

    ValueTask<HandlingOutcome?> DeadLetterAsync(IStoreTransaction transaction, QueuedMessage message, string reason, Exception? exception, CancellationToken abort) =>
        QueueOutcomes.DeadLetterAsync(transaction, message, reason, exception, null, _options, _logger, abort);

    QueueOutcomes.Decoded<HandlerRegistration> Decode(QueuedMessage message) =>
        QueueOutcomes.Decode(message.Envelope, _queue.Name, _options, _handlers, static r => r.MessageType);

    /// <summary>
    /// The consumer span of one handled message: a child of the span that sent it (its <c>traceparent</c> header), so a
    /// trace follows a message from process to process.
    /// </summary>
    Activity? StartActivity(Envelope envelope, int attempt) => ConvergeDiagnostics.StartDelivery($"process {_queue.Name}", "handle", _queue.Name, envelope, attempt);

    Task ReleaseQuietlyAsync(IReadOnlyList<QueuedMessage> messages, bool countAttempt) =>
        _committer.HandBackAsync(messages, countAttempt);
}
