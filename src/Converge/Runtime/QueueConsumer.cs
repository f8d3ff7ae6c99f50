using System.Diagnostics;
using Converge.Contracts;
using Converge.Diagnostics;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Converge.Runtime;

/// <summary>
/// Works one queue: claims batches under a lease, runs each message's handler inside one store transaction
/// (a savepoint per message, so one failure never undoes the others), records the inbox entry and the
/// outcome, and commits the batch at once.
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
    }

    public Task RunAsync(CancellationToken stopping, CancellationToken abort) =>
        Task.WhenAll(Enumerable.Range(0, _queue.Concurrency).Select(_ => Task.Run(() => WorkAsync(stopping, abort), CancellationToken.None)));

    async Task WorkAsync(CancellationToken stopping, CancellationToken abort)
    {
        var bell = _store.Signals.Queue(_queue.Name);
        var inFlight = new InFlight();
        var renewEvery = _options.LeaseDuration / 3;
        using var renewal = _options.TimeProvider.CreateTimer(_ => RenewIfLong(inFlight), null, renewEvery, renewEvery);
        var failures = 0;
        while (!stopping.IsCancellationRequested)
        {
            IReadOnlyList<QueuedMessage> batch;
            try
            {
                batch = await _store.ClaimAsync(_queue.Name, _queue.BatchSize, _options.LeaseDuration, stopping);
                if (batch.Count == 0)
                {
                    await WaitForWorkAsync(bell, stopping);
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
                ConvergeDiagnostics.ConsumerErrors.Add(1);
                var delay = _options.Retry.DelayBefore(++failures + 1, _options.Random.NextDouble());
                Log.ClaimFailed(_logger, exception, _queue.Name, delay);
                await DelayQuietlyAsync(delay, stopping);
                continue;
            }

            await ProcessWithRenewalAsync(batch, inFlight, abort);
        }
    }

    async Task WaitForWorkAsync(Doorbell bell, CancellationToken stopping)
    {
        var wait = _options.PollInterval;
        var next = await _store.NextVisibleAtAsync(_queue.Name, stopping);
        if (next is { } visibleAt)
        {
            var untilVisible = visibleAt - _options.TimeProvider.GetUtcNow();
            if (untilVisible <= TimeSpan.Zero)
            {
                return;
            }

            wait = untilVisible < wait ? untilVisible : wait;
        }

        await bell.WaitAsync(wait, _options.TimeProvider, stopping);
    }

    async Task ProcessWithRenewalAsync(IReadOnlyList<QueuedMessage> batch, InFlight inFlight, CancellationToken abort)
    {
        inFlight.Start(batch, _options.TimeProvider.GetUtcNow());
        try
        {
            await ProcessAsync(batch, abort);
        }
        catch (Exception exception)
        {
            // The batch transaction rolled back: nothing of it took effect. Hand the messages back at once
            // (counting the attempt, so a message that breaks every batch still reaches the dead letters).
            if (!abort.IsCancellationRequested)
            {
                ConvergeDiagnostics.ConsumerErrors.Add(1);
                Log.BatchFailed(_logger, exception, _queue.Name, batch.Count);
            }

            await ReleaseQuietlyAsync(batch, countAttempt: !abort.IsCancellationRequested);
        }
        finally
        {
            inFlight.Stop();
        }
    }

    /// <summary>
    /// Called by the worker's renewal timer: extends the leases of a batch that has been in flight for a third of the
    /// lease, so a long batch is not redelivered to another consumer while it is still being handled.
    /// </summary>
    void RenewIfLong(InFlight inFlight)
    {
        var interval = _options.LeaseDuration / 3;
        if (inFlight.TakeForRenewal(_options.TimeProvider.GetUtcNow(), interval) is not { } batch)
        {
            return;
        }

        _ = Task.Run(async () =>
        {
            try
            {
                await _store.RenewLeasesAsync(batch, _options.LeaseDuration, CancellationToken.None);
            }
            catch (Exception exception)
            {
                // Losing a renewal only risks a duplicate delivery, which the inbox absorbs.
                ConvergeDiagnostics.ConsumerErrors.Add(1);
                Log.RenewalFailed(_logger, exception, _queue.Name, batch.Count);
            }
            finally
            {
                inFlight.RenewalDone();
            }
        });
    }

    /// <summary>The batch a worker is handling, shared with its renewal timer.</summary>
    sealed class InFlight
    {
        readonly object _lock = new();
        IReadOnlyList<QueuedMessage>? _batch;
        DateTimeOffset _renewedAt;
        bool _renewing;

        public void Start(IReadOnlyList<QueuedMessage> batch, DateTimeOffset now)
        {
            lock (_lock)
            {
                _batch = batch;
                _renewedAt = now;
            }
        }

        public void Stop()
        {
            lock (_lock)
            {
                _batch = null;
            }
        }

        public IReadOnlyList<QueuedMessage>? TakeForRenewal(DateTimeOffset now, TimeSpan interval)
        {
            lock (_lock)
            {
                if (_batch is null || _renewing || now - _renewedAt < interval)
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
    }

    async Task ProcessAsync(IReadOnlyList<QueuedMessage> batch, CancellationToken abort)
    {
        var started = Stopwatch.GetTimestamp();
        var outcomes = new (QueuedMessage Message, HandlingOutcome? Outcome)[batch.Count];

        // Decode before taking the store's write lock: on SQLite only one transaction writes at a time, so work
        // done outside it can overlap with senders.
        var decoded = new QueueOutcomes.Decoded<HandlerRegistration>[batch.Count];
        for (var i = 0; i < batch.Count; i++)
        {
            decoded[i] = Decode(batch[i]);
        }

        // Optimistically without a savepoint per message (each one copies every page it touches); if anything in
        // the batch fails, the whole transaction is undone and the batch runs again with a savepoint per message.
        if (!await TryProcessAsync(batch, decoded, outcomes, isolated: false, abort))
        {
            await TryProcessAsync(batch, decoded, outcomes, isolated: true, abort);
        }

        foreach (var (message, outcome) in outcomes)
        {
            if (outcome is { } committed)
            {
                ConvergeDiagnostics.MessagesHandled.Add(1, ConvergeDiagnostics.OutcomeTags[(int)committed]);
                if (_observers.Any)
                {
                    _observers.Handled(message.Envelope, message.Queue, committed);
                }
            }
        }

        ConvergeDiagnostics.BatchDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }

    /// <returns><c>false</c> when a message failed while not <paramref name="isolated"/> (nothing was committed).</returns>
    async Task<bool> TryProcessAsync(IReadOnlyList<QueuedMessage> batch, QueueOutcomes.Decoded<HandlerRegistration>[] decoded, (QueuedMessage Message, HandlingOutcome? Outcome)[] outcomes, bool isolated, CancellationToken abort)
    {
        await using var transaction = await _store.BeginAsync(abort);
        try
        {
            // Optimistically, the batch's inbox records and its removals from the queue are one statement each.
            var recorded = isolated ? null : await RecordInboxAsync(transaction, batch, decoded, abort);
            var completions = isolated ? null : new List<QueuedMessage>(batch.Count);
            for (var i = 0; i < batch.Count; i++)
            {
                outcomes[i] = (batch[i], await HandleOneAsync(transaction, batch[i], decoded[i], isolated, recorded?[i], completions, abort));
            }

            if (completions is { Count: > 0 } && await transaction.CompleteAsync(completions, abort) != completions.Count)
            {
                throw new OptimisticBatchFailed();
            }
        }
        catch (OptimisticBatchFailed)
        {
            return false;
        }
        catch (Exception) when (!isolated && !abort.IsCancellationRequested)
        {
            return false;
        }

        await transaction.CommitAsync(CancellationToken.None);
        return true;
    }

    /// <summary>A message failed in a batch run without savepoints: run the batch again, isolating each message.</summary>
    sealed class OptimisticBatchFailed : Exception;

    /// <summary>The inbox records of the messages that will run, in one call; element i is message i's (null when it will not run).</summary>
    async Task<bool?[]?> RecordInboxAsync(IStoreTransaction transaction, IReadOnlyList<QueuedMessage> batch, QueueOutcomes.Decoded<HandlerRegistration>[] decoded, CancellationToken abort)
    {
        if (!_queue.RecordsInbox || batch.Count < 2)
        {
            return null;
        }

        var runs = Enumerable.Range(0, batch.Count).Where(i => decoded[i].RejectedFor is null && batch[i].Attempt <= _options.Retry.MaxAttempts).ToList();
        if (runs.Count < 2)
        {
            return null;
        }

        var recorded = await transaction.TryRecordInboxAsync(_queue.Name, [.. runs.Select(i => batch[i].Envelope)], abort);
        var byMessage = new bool?[batch.Count];
        for (var k = 0; k < runs.Count; k++)
        {
            byMessage[runs[k]] = recorded[k];
        }

        return byMessage;
    }

    /// <summary>
    /// Handles one message in <paramref name="transaction"/>. <paramref name="recordedInbox"/> tells whether its inbox record
    /// was new when the batch recorded them already; <paramref name="completions"/> collects removals for one statement
    /// (<c>null</c>: each is removed at once).
    /// </summary>
    /// <returns>The outcome, or <c>null</c> when the lease was lost and nothing was recorded.</returns>
    async ValueTask<HandlingOutcome?> HandleOneAsync(IStoreTransaction transaction, QueuedMessage message, QueueOutcomes.Decoded<HandlerRegistration> decoded, bool isolated, bool? recordedInbox, List<QueuedMessage>? completions, CancellationToken abort)
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

        if (isolated)
        {
            await transaction.SavepointAsync(abort);
        }

        try
        {
            if (_queue.RecordsInbox && !(recordedInbox ?? await transaction.TryRecordInboxAsync(_queue.Name, envelope, abort)))
            {
                await CompleteAsync(transaction, message, completions, abort);
                await ReleaseAsync(transaction, isolated, abort);
                Log.Duplicate(_logger, envelope.MessageId, _queue.Name);
                return HandlingOutcome.Duplicate;
            }

            using (var activity = StartActivity(envelope))
            {
                await using var scope = _scopes.CreateAsyncScope();
                var context = new MessageContext(_bus, transaction, envelope, _queue.Name, null, message.Attempt, scope.ServiceProvider);
                await decoded.Registration!.Invoker.InvokeAsync(scope.ServiceProvider, decoded.Body!, context, abort);
            }

            if (!await CompleteAsync(transaction, message, completions, abort))
            {
                if (!isolated)
                {
                    throw new OptimisticBatchFailed();
                }

                await transaction.RollbackToSavepointAsync(abort);
                Log.LeaseLost(_logger, envelope.MessageId, _queue.Name);
                return null;
            }

            await ReleaseAsync(transaction, isolated, abort);
            return HandlingOutcome.Completed;
        }
        catch (Exception exception) when (!isolated && exception is not OptimisticBatchFailed && !abort.IsCancellationRequested)
        {
            throw new OptimisticBatchFailed();
        }
        catch (Exception exception) when (!abort.IsCancellationRequested)
        {
            await transaction.RollbackToSavepointAsync(abort);
            return await RecordFailureAsync(transaction, message, exception, abort);
        }
    }

    /// <summary>Removes a message now, or, when <paramref name="completions"/> collects them, with the batch's others.</summary>
    static async ValueTask<bool> CompleteAsync(IStoreTransaction transaction, QueuedMessage message, List<QueuedMessage>? completions, CancellationToken abort)
    {
        if (completions is null)
        {
            return await transaction.CompleteAsync(message, abort);
        }

        completions.Add(message);
        return true;
    }

    static ValueTask ReleaseAsync(IStoreTransaction transaction, bool isolated, CancellationToken abort) =>
        isolated ? transaction.ReleaseSavepointAsync(abort) : ValueTask.CompletedTask;

    ValueTask<HandlingOutcome?> RecordFailureAsync(IStoreTransaction transaction, QueuedMessage message, Exception exception, CancellationToken abort) =>
        QueueOutcomes.RecordFailureAsync(transaction, message, exception, _options, _logger, abort);

    ValueTask<HandlingOutcome?> DeadLetterAsync(IStoreTransaction transaction, QueuedMessage message, string reason, Exception? exception, CancellationToken abort) =>
        QueueOutcomes.DeadLetterAsync(transaction, message, reason, exception, null, _options, _logger, abort);

    QueueOutcomes.Decoded<HandlerRegistration> Decode(QueuedMessage message) =>
        QueueOutcomes.Decode(message.Envelope, _queue.Name, _options, _handlers, static r => r.MessageType);

    static Activity? StartActivity(Envelope envelope)
    {
        if (!ConvergeDiagnostics.ActivitySource.HasListeners())
        {
            return null;
        }

        ActivityContext parent = default;
        if (envelope.Headers.TryGetValue(ConvergeDiagnostics.TraceParentHeader, out var traceParent))
        {
            envelope.Headers.TryGetValue(ConvergeDiagnostics.TraceStateHeader, out var traceState);
            ActivityContext.TryParse(traceParent, traceState, out parent);
        }

        var activity = ConvergeDiagnostics.ActivitySource.StartActivity($"handle {envelope.MessageType}", ActivityKind.Consumer, parent);
        activity?.SetTag("messaging.message.id", envelope.MessageId);
        activity?.SetTag("converge.correlation_id", envelope.CorrelationId);
        return activity;
    }

    Task ReleaseQuietlyAsync(IReadOnlyList<QueuedMessage> messages, bool countAttempt) =>
        QueueOutcomes.ReleaseQuietlyAsync(_store, messages, countAttempt, _logger, _queue.Name);

    async Task DelayQuietlyAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        try
        {
            await Task.Delay(delay, _options.TimeProvider, cancellationToken);
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
    }
}
