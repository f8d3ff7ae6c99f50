using System.Security.Cryptography;
using System.Text;
using Converge.Contracts;
using Converge.Diagnostics;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.Logging;

namespace Converge.Jobs;

/// <summary>
/// Enqueues the occurrences of recurring jobs. Any number of processes may run it: each occurrence is enqueued in
/// the same transaction that moves its schedule past it, on the condition that no other process moved it first,
/// and carries an id derived from the schedule and the occurrence, so it is enqueued, and runs, exactly once.
/// </summary>
internal sealed partial class RecurringJobScheduler
{
    /// <summary>On-time occurrences enqueued per schedule per round at most (a six-field expression with a long threshold).</summary>
    const int MaxOccurrencesPerRound = 1000;

    readonly JobRuntime _runtime;
    readonly ConvergeOptions _options;
    readonly ILogger _logger;

    public RecurringJobScheduler(JobRuntime runtime, ILogger logger)
    {
        _runtime = runtime;
        _options = runtime.Options;
        _logger = logger;
    }

    /// <summary>Stores the schedules registered in this process; an unchanged schedule keeps where it stands.</summary>
    public async ValueTask RegisterAsync(CancellationToken cancellationToken)
    {
        if (_options.RecurringJobs.Count == 0)
        {
            return;
        }

        var now = _runtime.Now;
        await using var transaction = await _runtime.Store.BeginAsync(cancellationToken);
        foreach (var registration in _options.RecurringJobs)
        {
            var schedule = CronSchedule.Parse(registration.Cron, registration.Options.TimeZone);
            var next = schedule.Next(now) ?? DateTimeOffset.MaxValue;
            var outgoing = _runtime.Bus.CreateOutgoing(registration.Job, new SendOptions { Queue = registration.Options.Queue }, null);
            await transaction.Jobs().UpsertRecurringJobAsync(
                new RecurringJobRecord
                {
                    Name = registration.Name,
                    Cron = registration.Cron,
                    TimeZone = registration.Options.TimeZone,
                    Queue = outgoing.Queue,
                    MessageType = outgoing.Envelope.MessageType,
                    Body = outgoing.Envelope.Body,
                    Priority = registration.Options.Priority,
                    Misfire = registration.Options.Misfire,
                    NextAt = next,
                },
                cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
    }

    public async Task RunAsync(CancellationToken stopping)
    {
        var failures = 0;
        while (!stopping.IsCancellationRequested)
        {
            var wait = _options.Jobs.SchedulerInterval;
            try
            {
                var next = await RunOnceAsync(stopping);
                failures = 0;
                if (next is { } nextAt && nextAt - _runtime.Now < wait)
                {
                    wait = nextAt - _runtime.Now;
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception exception)
            {
                ConvergeDiagnostics.ConsumerErrors.Add(1);
                wait = _options.Retry.DelayBefore(++failures + 1, _options.Random.NextDouble());
                SchedulerFailed(_logger, exception, wait);
            }

            try
            {
                await Task.Delay(wait > TimeSpan.Zero ? wait : TimeSpan.Zero, _options.TimeProvider, stopping);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>Enqueues every due occurrence; returns the earliest next occurrence of any schedule, if known.</summary>
    internal async ValueTask<DateTimeOffset?> RunOnceAsync(CancellationToken cancellationToken)
    {
        // A read first: while nothing registered here is due, the scheduler never takes the store's write lock.
        var now = _runtime.Now;
        var registered = (await _runtime.Store.JobQueries().ListRecurringJobsAsync(cancellationToken)).Where(IsRegistered).ToList();
        if (!registered.Any(r => r.NextAt <= now))
        {
            return registered.Count == 0 ? null : registered.Min(r => r.NextAt);
        }

        await using var transaction = await _runtime.Store.BeginAsync(cancellationToken);
        var due = await transaction.Jobs().LoadDueRecurringJobsAsync(now, cancellationToken);
        DateTimeOffset? earliest = null;

        // Only the schedules this process registers: one removed or renamed in code stays in the store (converge
        // jobs recurring shows it) but no longer fires, and a process that runs none of them leaves them alone.
        foreach (var schedule in due.Where(IsRegistered))
        {
            if (CronSchedule.TryParse(schedule.Cron, schedule.TimeZone, out var cron) is { } error)
            {
                ScheduleInvalid(_logger, schedule.Name, error);
                continue;
            }

            // Occurrences within the misfire threshold are on time and each runs; older ones were missed while no
            // scheduler ran, and the policy decides: one run for all of them (the latest) or none.
            var onTimeFrom = schedule.NextAt > now - _options.Jobs.MisfireThreshold ? schedule.NextAt : now - _options.Jobs.MisfireThreshold;
            var toEnqueue = cron!.Between(onTimeFrom, now, MaxOccurrencesPerRound).ToList();
            if (schedule.NextAt < onTimeFrom && cron.Next(schedule.NextAt, inclusive: true) is { } firstMissed && firstMissed < onTimeFrom)
            {
                if (schedule.Misfire == MisfirePolicy.RunOnce && toEnqueue.Count == 0 && cron.LatestBefore(onTimeFrom, firstMissed) is { } latestMissed)
                {
                    toEnqueue = [latestMissed];
                }

                Misfired(_logger, schedule.Name, schedule.NextAt, onTimeFrom, schedule.Misfire);
            }

            foreach (var occurrence in toEnqueue)
            {
                await transaction.EnqueueAsync(Occurrence(schedule, occurrence, now), cancellationToken);
            }

            var next = cron.Next(now) ?? DateTimeOffset.MaxValue;
            var last = toEnqueue.Count > 0 ? toEnqueue[^1] : schedule.LastAt;
            if (!await transaction.Jobs().AdvanceRecurringJobAsync(schedule.Name, schedule.NextAt, next, last, cancellationToken))
            {
                // Another process enqueued these occurrences first; undo ours.
                return null;
            }

            earliest = earliest is null || next < earliest ? next : earliest;
        }

        await transaction.CommitAsync(cancellationToken);
        return earliest;
    }

    bool IsRegistered(RecurringJobRecord schedule) => _options.RecurringJobs.Any(r => r.Name == schedule.Name);

    static OutgoingMessage Occurrence(RecurringJobRecord schedule, DateTimeOffset occurrence, DateTimeOffset now) => new(
        schedule.Queue,
        new Envelope
        {
            MessageId = OccurrenceId(schedule.Name, occurrence),
            MessageType = schedule.MessageType,
            SentAt = now,
            AsOf = occurrence,
            Headers = new Dictionary<string, string>(StringComparer.Ordinal) { [JobHeaders.Recurring] = schedule.Name },
            Body = schedule.Body,
        },
        null,
        schedule.Priority);

    /// <summary>
    /// An occurrence of <paramref name="schedule"/> now, outside its cron schedule (an operator's "trigger now"): a new id
    /// each time, so it runs besides the scheduled occurrences, never instead of one.
    /// </summary>
    internal static OutgoingMessage Triggered(RecurringJobRecord schedule, DateTimeOffset now) => new(
        schedule.Queue,
        new Envelope
        {
            MessageId = MessageIds.New(now),
            MessageType = schedule.MessageType,
            SentAt = now,
            AsOf = now,
            Headers = new Dictionary<string, string>(StringComparer.Ordinal) { [JobHeaders.Recurring] = schedule.Name },
            Body = schedule.Body,
        },
        null,
        schedule.Priority);

    /// <summary>The same id for the same occurrence in every process, so that even a duplicate enqueue runs once.</summary>
    internal static Guid OccurrenceId(string schedule, DateTimeOffset occurrence)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(FormattableString.Invariant($"{schedule}\n{occurrence.UtcTicks}")), hash);
        hash[6] = (byte)((hash[6] & 0x0F) | 0x80);
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80);
        return new Guid(hash[..16], bigEndian: true);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Recurring job {Schedule} missed its occurrences from {From} to {Until} while no scheduler ran; misfire policy {Policy}")]
    static partial void Misfired(ILogger logger, string schedule, DateTimeOffset from, DateTimeOffset until, MisfirePolicy policy);

    [LoggerMessage(Level = LogLevel.Error, Message = "Recurring job {Schedule} cannot be scheduled: {Error}")]
    static partial void ScheduleInvalid(ILogger logger, string schedule, string error);

    [LoggerMessage(Level = LogLevel.Error, Message = "The recurring-job scheduler failed; trying again in {Delay}")]
    static partial void SchedulerFailed(ILogger logger, Exception exception, TimeSpan delay);
}
