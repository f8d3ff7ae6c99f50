using System.Globalization;
using Converge.Jobs;
using Converge.Projections;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.AspNetCore.Http;

namespace Converge.Dashboard;

/// <summary>Dead-letter actions: retry or discard one, a selection, everything of a source, or a key's letters in order.</summary>
internal static class DeadLetterActions
{
    public static async Task<string> RetryOneAsync(DashboardRequest request, long id)
    {
        if (!await request.Store.RetryDeadLetterAsync(id, request.Aborted))
        {
            return $"Dead letter {id} was not retried: it is gone (retried or discarded meanwhile), or it is a parked event (reset its consumer group instead).";
        }

        await OperatorAudit.RecordAsync(request, Storage.OperatorActions.RetryDeadLetters, id.ToString(CultureInfo.InvariantCulture), null);
        return $"Dead letter {id} is back on its queue.";
    }

    public static async Task<string> DiscardOneAsync(DashboardRequest request, long id)
    {
        if (!await request.Store.DiscardDeadLetterAsync(id, request.Aborted))
        {
            return $"Dead letter {id} is gone already.";
        }

        await OperatorAudit.RecordAsync(request, Storage.OperatorActions.DiscardDeadLetters, id.ToString(CultureInfo.InvariantCulture), null);
        return $"Dead letter {id} was discarded.";
    }

    /// <summary>
    /// The ids of the form's selection, or every letter of its <c>source</c> (of its <c>key</c> only when given, oldest
    /// first so a key's messages go back in their order).
    /// </summary>
    public static async Task<string> ManyAsync(DashboardRequest request, IFormCollection form, bool retry)
    {
        var verb = retry ? "retry" : "discard";
        var source = form["source"].ToString() is { Length: > 0 } s ? s : null;
        var reason = form["reason"].ToString() is { Length: > 0 } r ? r : null;
        var key = form["key"].ToString() is { Length: > 0 } k ? k : null;
        DeadLetterActionOutcome outcome;
        string target;
        if (form["id"].Count > 0)
        {
            List<long> ids = [.. form["id"].Select(v => long.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var id) ? id : -1).Where(id => id > 0).Distinct().Order()];
            target = $"a selection of {ids.Count}";
            outcome = retry ? await request.Store.RetryDeadLettersAsync(ids, request.Aborted) : await request.Store.DiscardDeadLettersAsync(ids, request.Aborted);
        }
        else if (source is not null && reason is not null)
        {
            target = $"{source} ({reason})";
            outcome = retry ? await request.Store.RetryDeadLetterGroupAsync(reason, source, request.Aborted) : await request.Store.DiscardDeadLetterGroupAsync(reason, source, request.Aborted);
        }
        else if (source is not null && key is not null)
        {
            // A key's letters oldest first, so its messages go back in the order they were sent.
            target = $"{source}, key {key}";
            var ids = new List<long>();
            string? after = null;
            do
            {
                var page = await request.Store.DeadLetterQueries().ListDeadLettersAsync(new DeadLetterQuery { Source = source, OrderingKey = key, After = after, Max = 500 }, request.Aborted);
                ids.AddRange(page.Items.Select(l => l.Id));
                after = page.Next;
            }
            while (after is not null);
            ids.Sort();
            outcome = retry ? await request.Store.RetryDeadLettersAsync(ids, request.Aborted) : await request.Store.DiscardDeadLettersAsync(ids, request.Aborted);
        }
        else
        {
            return $"Nothing to {verb}: select dead letters first.";
        }

        var total = outcome.Done.Count + outcome.Skipped.Count;
        await OperatorAudit.RecordAsync(request, retry ? Storage.OperatorActions.RetryDeadLetters : Storage.OperatorActions.DiscardDeadLetters, target, $"{outcome.Done.Count} of {total}");
        return retry ? $"{outcome.Done.Count} of {total} dead letters ({target}) are back on their queues." : $"{outcome.Done.Count} of {total} dead letters ({target}) were discarded.";
    }
}

/// <summary>Actions on sagas, jobs, consumer groups and projections.</summary>
internal static class StoreActions
{
    public static async Task<string> ResumeSagaAsync(DashboardRequest request, string transactionId)
    {
        var instance = await request.Store.SagaQueries().GetSagaAsync(transactionId, request.Aborted)
            ?? throw new DashboardNotFoundException($"No saga instance has transaction id '{transactionId}'.");
        if (instance.State != SagaState.Stuck)
        {
            return $"Saga {transactionId} is {SagaStates.ToText(instance.State)}, not stuck: nothing to resume.";
        }

        await using var transaction = await request.Store.BeginAsync(request.Aborted);
        var (queue, _) = await SagaResumeRequested.EnqueueAsync(transaction, instance, "dashboard: " + OperatorAudit.Who(request), request.Time.GetUtcNow(), request.Aborted);
        await OperatorAudit.RecordAsync(request, transaction, Storage.OperatorActions.ResumeSaga, transactionId, $"step {SagaProgressText(instance)}");
        await transaction.CommitAsync(request.Aborted);
        return $"Resume of saga {transactionId} requested: its application sends the step again when it handles the request on queue {queue}.";
    }

    public static async Task<string> CancelJobAsync(DashboardRequest request, Guid id)
    {
        var outcome = await request.Store.Jobs().CancelJobAsync(id, request.Aborted);
        if (outcome == JobCancelOutcome.NotFound)
        {
            return $"Job {id} was not cancelled: it has finished or does not exist.";
        }

        await OperatorAudit.RecordAsync(request, Storage.OperatorActions.CancelJob, id.ToString(), outcome.ToString().ToLowerInvariant());
        return outcome == JobCancelOutcome.Cancelled
            ? $"Job {id} was cancelled before it ran."
            : $"Cancellation of job {id} requested: it is running, and its handler's token is cancelled within moments.";
    }

    public static async Task<string> TriggerRecurringAsync(DashboardRequest request, string name)
    {
        var schedule = (await request.Store.JobQueries().ListRecurringJobsAsync(request.Aborted)).FirstOrDefault(r => r.Name == name)
            ?? throw new DashboardNotFoundException($"No recurring job is named '{name}'.");
        await using var transaction = await request.Store.BeginAsync(request.Aborted);
        var id = await transaction.TriggerRecurringAsync(schedule, request.Time.GetUtcNow(), request.Aborted);
        await OperatorAudit.RecordAsync(request, transaction, "jobs.trigger", name, $"job {id}");
        await transaction.CommitAsync(request.Aborted);
        return $"Recurring job {name} was triggered: job {id} is on queue {schedule.Queue}.";
    }

    public static async Task<string> PauseGroupAsync(DashboardRequest request, string group, bool paused)
    {
        if (await request.Store.GetConsumerGroupAsync(group, request.Aborted) is null)
        {
            throw new DashboardNotFoundException($"No consumer group is named '{group}'.");
        }

        await using var transaction = await request.Store.BeginAsync(request.Aborted);
        await transaction.ConsumerGroups().SetConsumerGroupPausedAsync(group, paused, request.Aborted);
        await OperatorAudit.RecordAsync(request, transaction, paused ? Storage.OperatorActions.PauseGroup : "groups.resume", group, null);
        await transaction.CommitAsync(request.Aborted);
        return paused
            ? $"Consumer group {group} is paused: its runners finish their batch and start no other (within their poll interval)."
            : $"Consumer group {group} is resumed: its runners go on from its checkpoint within their poll interval.";
    }

    public static async Task<string> ResetGroupAsync(DashboardRequest request, string group, string positionText)
    {
        if (!long.TryParse(positionText, NumberStyles.None, CultureInfo.InvariantCulture, out var position))
        {
            return $"Consumer group {group} was not reset: '{positionText}' is not a position (0 or more).";
        }

        var head = await request.Store.GetLogHeadAsync(request.Aborted);
        if (position > head)
        {
            return $"Consumer group {group} was not reset: position {position} is past the log's head ({head}).";
        }

        var before = await request.Store.GetConsumerGroupAsync(group, request.Aborted)
            ?? throw new DashboardNotFoundException($"No consumer group is named '{group}'.");
        await using var transaction = await request.Store.BeginAsync(request.Aborted);
        if (!await transaction.SaveConsumerGroupAsync(group, before.Position, position, 0, null, request.Aborted))
        {
            return $"Consumer group {group} moved while it was being reset (it is running and busy): nothing was changed; try again.";
        }

        await OperatorAudit.RecordAsync(request, transaction, "groups.reset", group, $"from {before.Position} to {position}");
        await transaction.CommitAsync(request.Aborted);
        return $"Consumer group {group} was moved from {before.Position} to {position}; its runners pick it up within their poll interval.";
    }

    public static async Task<string> SwitchProjectionAsync(DashboardRequest request, string name, int version)
    {
        var result = await new ProjectionCatalog(request.Store, request.Time).SwitchAsync(name, version, request.Aborted);
        if (!result.Switched)
        {
            return $"Readers of {name} were not switched to version {version}: {result.Reason}";
        }

        await OperatorAudit.RecordAsync(request, "projections.switch", $"{name}@{version}", result.Previous is { } previous ? $"from version {previous}" : null);
        return $"Readers of {name} now read version {version}.";
    }

    public static async Task<string> RebuildProjectionAsync(DashboardRequest request, string name, int version)
    {
        try
        {
            await new ProjectionCatalog(request.Store, request.Time).RebuildAsync(name, version, request.Aborted);
        }
        catch (InvalidOperationException refused)
        {
            return $"{name} version {version} was not rebuilt: {refused.Message}";
        }

        await OperatorAudit.RecordAsync(request, "projections.rebuild", $"{name}@{version}", null);
        return $"{name} version {version} is rebuilt from the start of the log by the application that runs it (within its poll interval).";
    }

    static string SagaProgressText(SagaInstance instance) =>
        instance.StepIndex >= 0 && instance.StepIndex < instance.Steps.Count ? instance.Steps[instance.StepIndex] : "-";
}
