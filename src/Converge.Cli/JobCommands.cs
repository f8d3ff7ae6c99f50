using System.CommandLine;
using System.Text.Json;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Storage;
using Spectre.Console;

namespace Converge.Cli;

/// <summary><c>converge jobs list|show|retry|cancel|batch|recurring</c>: background jobs, their batches and schedules.</summary>
internal static class JobCommands
{
    public static Command Create(CliOutput output) => new("jobs", "List background jobs and show one; retry a dead or cancelled job, cancel a waiting or running one; show a batch or the recurring schedules.")
    {
        List(output),
        Show(output),
        Retry(output),
        Cancel(output),
        Batch(output),
        Recurring(output),
    };

    static Command List(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var queue = new Option<string>("--queue") { Description = "Only jobs of this queue.", HelpName = "QUEUE" };
        var state = new Option<string>("--state") { Description = $"Only jobs in this state: {JobStates.All}.", HelpName = "STATE" };
        state.Validators.Add(result =>
        {
            var text = result.GetValueOrDefault<string>();
            if (!JobStates.TryParse(text, out _))
            {
                result.AddError($"--state '{text}' is not a job state; use {JobStates.All}.");
            }
        });
        var batch = new Option<string>("--batch") { Description = "Only jobs of this batch.", HelpName = "ID" };
        var max = new Option<int>("--max") { Description = "Show at most this many, newest first.", HelpName = "N", DefaultValueFactory = _ => 50 };
        max.Validators.Add(result =>
        {
            if (result.Parsed<int>() < 1)
            {
                result.AddError("--max must be at least 1.");
            }
        });

        var command = location.AddTo(new Command("list", "List jobs, newest first: queue, type, state, priority, attempts, progress, when enqueued, when due or finished, and the last error.")
        {
            queue, state, batch, max, json,
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var store = opened.Store;
            JobState? wanted = parsed.GetValue(state) is { } text ? JobStates.Parse(text) : null;
            var limit = parsed.GetValue(max);

            // One more than asked for, to know whether there are more than shown.
            var jobs = await store.JobQueries().ListJobsAsync(
                new JobQuery { Queue = parsed.GetValue(queue), State = wanted, BatchId = parsed.GetValue(batch), Max = limit == int.MaxValue ? limit : limit + 1 },
                cancellationToken);
            var shown = jobs.Take(limit).Select(Summary).ToList();
            var report = new ListReport(
                opened.Name,
                new FilterReport(parsed.GetValue(queue), wanted is { } s ? JobStates.ToText(s) : null, parsed.GetValue(batch)),
                shown,
                shown.Count,
                jobs.Count > limit);
            return await output.ReportAsync(report, parsed.GetValue(json), (console, r) => RenderList(console, r, opened.Arguments));
        });
        return command;
    }

    static void RenderList(IAnsiConsole console, ListReport report, string storeArguments)
    {
        var filtered = report.Filter.Queue is not null || report.Filter.State is not null || report.Filter.Batch is not null;
        if (report.Jobs.Count == 0)
        {
            console.WriteLine(filtered ? "No jobs match." : "No jobs.");
            return;
        }

        var table = CliOutput.Listing("Id", "Queue", "Type", "State", "Priority", "Attempts", "Progress", "Enqueued (UTC)", "Due/finished (UTC)", "Error");
        foreach (var index in new[] { 0, 3, 4, 5, 6, 7, 8 })
        {
            table.Columns[index].NoWrap();
        }

        table.Columns[4].RightAligned();
        table.Columns[5].RightAligned();
        table.Columns[6].RightAligned();
        foreach (var job in report.Jobs)
        {
            var finished = job.State is "succeeded" or "dead" or "cancelled";
            table.AddRow(
                new Text(job.Id.ToString()),
                new Text(job.Queue),
                new Text(job.Type),
                new Text(job.State, JobStates.StateStyle(job.State)),
                new Text(CliOutput.Format(job.Priority)),
                new Text(CliOutput.Format(job.Attempts)),
                new Text(job.Progress is { } p ? $"{p}%" : "-"),
                new Text(CliOutput.Format(job.EnqueuedAt)),
                new Text(CliOutput.Format(finished ? job.FinishedAt : job.DueAt)),
                new Text(Shorten(ErrorCell(job)) ?? "-"));
        }

        console.Write(table);
        console.WriteLine(report.More
            ? $"Showing the newest {report.Count}{(filtered ? " matching" : "")}; pass --max to see more."
            : $"{report.Count} job(s){(filtered ? " match" : "")}. Show one with: converge jobs show {storeArguments} ID");
    }

    static Command Show(CliOutput output) => OneJob(
        output,
        "show",
        "Show one job: every field, its progress, its batch, its failed attempts, and its body as JSON.",
        "The job id, as 'converge jobs list' shows it.",
        async (opened, job, json, cancellationToken) =>
        {
            var batch = job.BatchId is { } batchId ? await opened.Store.JobQueries().GetBatchAsync(batchId, cancellationToken) : null;
            var report = Detail(opened.Name, job, batch);
            return await output.ReportAsync(report, json, (console, r) => RenderShow(console, r, opened.Arguments));
        });

    static void RenderShow(IAnsiConsole console, ShowReport report, string storeArguments)
    {
        console.Write(new Text($"Job {report.Id}: {report.Type} on '{report.Queue}', "));
        console.Write(new Text(report.State, JobStates.StateStyle(report.State)));
        console.WriteLine();
        var fields = new Grid();
        fields.AddColumn(new GridColumn().NoWrap().PadRight(2));
        fields.AddColumn(new GridColumn());
        void Field(string name, object? value) => fields.AddRow(new Text(name), new Text(CliOutput.Format(value)));
        Field("Priority", report.Priority);
        Field("Attempts", report.Attempts);
        Field("Progress", report.Progress is { } p ? $"{p}%" + (report.ProgressNote is { } note ? $" ({note})" : "") : null);
        Field("Enqueued", report.EnqueuedAt);
        Field(report.State == "processing" ? "Lease until" : "Due", report.DueAt);
        Field("Finished", report.FinishedAt);
        Field("As of", report.AsOf);
        Field("Correlation id", report.CorrelationId);
        Field("Error", report.Error);
        Field("Dead letter", report.DeadLetterId?.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Field("Batch", report.Batch is { } b
            ? $"{b.Id}: {BatchState(b)}, {b.Succeeded} succeeded, {b.Failed} failed, {b.Pending} pending of {b.Total}"
            : report.BatchId);
        Field("Headers", report.Headers.Count == 0 ? null : string.Join(", ", report.Headers.Select(h => $"{h.Key}={h.Value}")));
        console.Write(fields);

        if (report.History.Count > 0)
        {
            var history = CliOutput.Listing("Attempt", "At (UTC)", "Error");
            history.Columns[0].RightAligned().NoWrap();
            history.Columns[1].NoWrap();
            foreach (var attempt in report.History)
            {
                CliOutput.AddRow(history, attempt.Attempt, attempt.At, attempt.Error);
            }

            console.WriteLine("Failed attempts:");
            console.Write(history);
        }

        if (report.Body is { } body)
        {
            console.WriteLine("Body:");
            console.Write(new Text(JsonSerializer.Serialize(body, Indented)));
            console.WriteLine();
        }
        else
        {
            console.WriteLine(report.State == "succeeded" ? "Body: not kept once a job has succeeded." : "Body: none.");
        }

        var hint = report.State switch
        {
            "dead" or "cancelled" => $"Put it back on its queue with: converge jobs retry {storeArguments} {report.Id}",
            "scheduled" or "enqueued" or "processing" => $"Cancel it with: converge jobs cancel {storeArguments} {report.Id}",
            _ => null,
        };
        if (hint is not null)
        {
            console.WriteLine(hint);
        }
    }

    static Command Retry(CliOutput output) => OneJob(
        output,
        "retry",
        "Put a dead or cancelled job back on its queue with a fresh attempt count (after fixing the cause).",
        "The id of a dead or cancelled job, as 'converge jobs list --state dead' shows it.",
        async (opened, job, json, cancellationToken) =>
        {
            var store = opened.Store;
            if (job.State is not (JobState.Dead or JobState.Cancelled))
            {
                throw new CliException(CliApp.Failure, $"job {job.Id} is {JobStates.ToText(job.State)}; only dead or cancelled jobs can be retried. {WhyNotRetry(job, opened.Arguments)}");
            }

            var deadLetterId = job.DeadLetterId
                ?? throw new CliException(CliApp.Failure, $"job {job.Id} is {JobStates.ToText(job.State)} but the store gives no dead-letter id for it; look for it with: converge dead-letters list {opened.Arguments} --source {ShellQuote.Quote(job.Queue)}");
            if (!await store.RetryDeadLetterAsync(deadLetterId, cancellationToken))
            {
                throw new CliException(CliApp.Failure, $"job {job.Id} left the dead letters (retried or discarded by someone else) before it could be retried; see where it is with: converge jobs show {opened.Arguments} {job.Id}");
            }

            var batch = job.BatchId is { } batchId ? await store.JobQueries().GetBatchAsync(batchId, cancellationToken) : null;
            var report = new RetryReport(opened.Name, job.Id, job.Queue, job.Type, JobStates.ToText(job.State), deadLetterId, job.BatchId, batch?.FinishedAt);
            return await output.ReportAsync(report, json, (console, r) =>
            {
                console.WriteLine($"Job {r.Id} ({r.Type}, was {r.PreviousState}) is back on queue '{r.Queue}' with a fresh attempt count.");
                if (r.BatchFinishedAt is { } finishedAt)
                {
                    console.WriteLine($"Its batch '{r.BatchId}' already finished at {CliOutput.Format(finishedAt)}; its callbacks ran then.");
                }

                console.WriteLine($"Follow it with: converge jobs show {opened.Arguments} {r.Id}");
        });
        });

    static string WhyNotRetry(JobInfo job, string storeArguments) => job.State switch
    {
        JobState.Succeeded => "It already succeeded; enqueue a new job to run it again.",
        JobState.Processing => $"A worker is running it now (attempt {job.Attempts}); failures are retried on their own.",
        JobState.Scheduled => $"It is waiting to run at {CliOutput.Format(job.DueAt)}.",
        _ => $"It is waiting for a worker of queue '{job.Queue}'. To stop it instead: converge jobs cancel {storeArguments} {job.Id}",
    };

    static Command Cancel(CliOutput output) => OneJob(
        output,
        "cancel",
        "Cancel a job: a waiting one moves to the dead letters (reason cancelled); a running one is asked to stop (its cancellation token fires).",
        "The id of a scheduled, enqueued or running job, as 'converge jobs list' shows it.",
        async (opened, job, json, cancellationToken) =>
        {
            if (job.State is JobState.Succeeded or JobState.Dead or JobState.Cancelled)
            {
                var state = job.State switch
                {
                    JobState.Succeeded => "already succeeded",
                    JobState.Dead => "already dead",
                    _ => "already cancelled",
                };
                throw new CliException(CliApp.Failure, $"job {job.Id} {state} at {CliOutput.Format(job.FinishedAt)}; there is nothing to cancel.");
            }

            var outcome = await opened.Store.Jobs().CancelJobAsync(job.Id, cancellationToken);
            if (outcome == JobCancelOutcome.NotFound)
            {
                throw new CliException(CliApp.Failure, $"job {job.Id} finished before it could be cancelled; see how with: converge jobs show {opened.Arguments} {job.Id}");
            }

            var report = new CancelReport(opened.Name, job.Id, job.Queue, job.Type, JobStates.ToText(job.State), outcome == JobCancelOutcome.Cancelled ? "cancelled" : "requested", Describe(outcome, job));
            return await output.ReportAsync(report, json, (console, r) => console.WriteLine(r.Message));
        });

    static string Describe(JobCancelOutcome outcome, JobInfo job) => outcome == JobCancelOutcome.Cancelled
        ? $"Cancelled job {job.Id} ({job.Type}): it was {JobStates.ToText(job.State)} on queue '{job.Queue}' and is now in the dead letters with reason 'cancelled'. 'converge jobs retry' puts it back."
        : $"Job {job.Id} ({job.Type}) is running; its worker was asked to stop (its cancellation token fires at the worker's next check, about a second). 'converge jobs show' tells how it ended.";

    /// <summary>A command about one job: its id, the store and the JSON switch; finds the job, then runs <paramref name="act"/>.</summary>
    static Command OneJob(CliOutput output, string name, string description, string idDescription, Func<OpenedStore, JobInfo, bool, CancellationToken, Task<int>> act)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var id = JobId(idDescription);
        var command = location.AddTo(new Command(name, description)
        {
            id, json,
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var job = await FindAsync(opened, parsed.GetValue(id), cancellationToken);
            return await act(opened, job, parsed.GetValue(json), cancellationToken);
        });
        return command;
    }

    static Command Batch(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var id = new Argument<string>("ID") { Description = "The batch id, as given to IJobClient.StartBatchAsync." };
        var command = location.AddTo(new Command("batch", "Show a batch of jobs: its counters (total, pending, succeeded, failed), whether it is sealed, and when it finished.")
        {
            id, json,
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var batchId = parsed.GetRequiredValue(id);
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var batch = await opened.Store.JobQueries().GetBatchAsync(batchId, cancellationToken)
                ?? throw new CliException(CliApp.Failure, $"no batch has id '{batchId}' in {opened.Name}. A job's batch shows in: converge jobs show {opened.Arguments} ID");
            var report = new BatchShowReport(opened.Name, Batch(batch));
            return await output.ReportAsync(report, parsed.GetValue(json), (console, r) =>
            {
                var b = r.Batch;
                console.WriteLine($"Batch {b.Id}: {BatchState(b)}");
                var fields = new Grid();
                fields.AddColumn(new GridColumn().NoWrap().PadRight(2));
                fields.AddColumn(new GridColumn());
                void Field(string name, object? value) => fields.AddRow(new Text(name), new Text(CliOutput.Format(value)));
                Field("Description", b.Description);
                Field("Total", b.Total);
                Field("Pending", b.Pending);
                Field("Succeeded", b.Succeeded);
                Field("Failed", b.Failed);
                Field("Sealed", b.Sealed ? "yes" : "no");
                Field("Created", b.CreatedAt);
                Field("Finished", b.FinishedAt);
                Field("On success", b.OnSuccess);
                Field("On complete", b.OnComplete);
                console.Write(fields);
                console.WriteLine($"Its jobs: converge jobs list {opened.Arguments} --batch {ShellQuote.Quote(b.Id)}");
            });
        });
        return command;
    }

    static Command Recurring(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var command = location.AddTo(new Command("recurring", "List the recurring job schedules: cron expression, time zone, next and last occurrence, and what happens to missed ones.")
        {
            json,
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var schedules = await opened.Store.JobQueries().ListRecurringJobsAsync(cancellationToken);
            var report = new RecurringReport(opened.Name, [.. schedules.OrderBy(s => s.Name, StringComparer.Ordinal).Select(Schedule)], schedules.Count);
            return await output.ReportAsync(report, parsed.GetValue(json), (console, r) =>
            {
                if (r.Count == 0)
                {
                    console.WriteLine("No recurring jobs. An application registers them with options.AddRecurringJob(...).");
                    return;
                }

                var table = CliOutput.Listing("Name", "Cron", "Time zone", "Queue", "Type", "Priority", "Next (UTC)", "Last (UTC)", "Misfire");
                foreach (var column in table.Columns.Skip(1))
                {
                    column.NoWrap();
                }

                foreach (var s in r.Schedules)
                {
                    CliOutput.AddRow(table, s.Name, s.Cron, s.TimeZone, s.Queue, s.Type, s.Priority, s.NextAt, s.LastAt, s.Misfire);
                }

                console.Write(table);
                console.WriteLine($"{r.Count} recurring job(s).");
            });
        });
        return command;
    }

    /// <summary>A job id argument that says what a job id looks like when it is not one.</summary>
    static Argument<Guid> JobId(string description) => new("ID")
    {
        Description = description,
        CustomParser = result =>
        {
            var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
            if (Guid.TryParse(text, out var id))
            {
                return id;
            }

            result.AddError($"'{text}' is not a job id. Job ids look like 0195f3a2-7c1e-7b3d-9a4f-2c8e5d6b1a90; list them with 'converge jobs list'.");
            return Guid.Empty;
        },
    };

    static async Task<JobInfo> FindAsync(OpenedStore opened, Guid id, CancellationToken cancellationToken) =>
        await opened.Store.JobQueries().GetJobAsync(id, cancellationToken)
            ?? throw new CliException(CliApp.Failure, $"no job has id {id} in {opened.Name}; list them with: converge jobs list {opened.Arguments}");

    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The first line of <paramref name="text"/>, cut to 60 characters.</summary>
    internal static string? Shorten(string? text)
    {
        if (text is null)
        {
            return null;
        }

        var line = text.Split('\n', 2)[0].TrimEnd('\r');
        return line.Length <= 60 ? line : line[..59] + "…";
    }

    /// <summary>The error, and for a dead job (whose error is the reason it died) the last attempt's error too.</summary>
    static string? ErrorCell(JobSummary job) =>
        job.LastError is { } last && job.Error is { } error && !last.Contains(error, StringComparison.Ordinal) ? $"{error}: {last}" : job.Error ?? job.LastError;

    static string BatchState(BatchReport batch) =>
        batch.FinishedAt is not null ? "finished" : batch.Sealed ? "sealed, running" : "open";

    static JobSummary Summary(JobInfo job) => new(
        job.Id,
        job.Queue,
        job.Type,
        JobStates.ToText(job.State),
        job.Priority,
        job.Attempts,
        job.Progress,
        job.EnqueuedAt,
        job.DueAt,
        job.FinishedAt,
        job.Error,
        job.History.Count > 0 ? job.History[^1].Error : null,
        job.BatchId,
        job.CorrelationId);

    static ShowReport Detail(string db, JobInfo job, JobBatchRecord? batch) => new(
        db,
        job.Id,
        job.Queue,
        job.Type,
        JobStates.ToText(job.State),
        job.Priority,
        job.Attempts,
        job.Progress,
        job.ProgressNote,
        job.EnqueuedAt,
        job.DueAt,
        job.FinishedAt,
        job.AsOf,
        job.CorrelationId,
        job.Error,
        job.DeadLetterId,
        job.BatchId,
        batch is null ? null : Batch(batch),
        job.Headers,
        job.Body is { } body ? SagaFormat.Data(body) : null,
        [.. job.History.Select(h => new AttemptReport(h.Attempt, h.At, h.Error))]);

    static BatchReport Batch(JobBatchRecord batch) => new(
        batch.Id,
        batch.Description,
        batch.Total,
        batch.Pending,
        batch.Succeeded,
        batch.Failed,
        batch.Sealed,
        batch.CreatedAt,
        batch.FinishedAt,
        batch.OnSuccess?.Envelope.MessageType,
        batch.OnComplete?.Envelope.MessageType);

    static ScheduleReport Schedule(RecurringJobRecord schedule) => new(
        schedule.Name,
        schedule.Cron,
        schedule.TimeZone,
        schedule.Queue,
        schedule.MessageType,
        schedule.Priority,
        schedule.NextAt == DateTimeOffset.MaxValue ? null : schedule.NextAt,
        schedule.LastAt,
        schedule.Misfire == MisfirePolicy.Skip ? "skip" : "run-once");

    internal sealed record FilterReport(string? Queue, string? State, string? Batch);

    internal sealed record JobSummary(
        Guid Id,
        string Queue,
        string Type,
        string State,
        int Priority,
        int Attempts,
        int? Progress,
        DateTimeOffset EnqueuedAt,
        DateTimeOffset? DueAt,
        DateTimeOffset? FinishedAt,
        string? Error,
        string? LastError,
        string? BatchId,
        string? CorrelationId);

    internal sealed record ListReport(string Db, FilterReport Filter, IReadOnlyList<JobSummary> Jobs, int Count, bool More);

    internal sealed record AttemptReport(int Attempt, DateTimeOffset At, string Error);

    internal sealed record BatchReport(
        string Id,
        string? Description,
        long Total,
        long Pending,
        long Succeeded,
        long Failed,
        bool Sealed,
        DateTimeOffset CreatedAt,
        DateTimeOffset? FinishedAt,
        string? OnSuccess,
        string? OnComplete);

    internal sealed record ShowReport(
        string Db,
        Guid Id,
        string Queue,
        string Type,
        string State,
        int Priority,
        int Attempts,
        int? Progress,
        string? ProgressNote,
        DateTimeOffset EnqueuedAt,
        DateTimeOffset? DueAt,
        DateTimeOffset? FinishedAt,
        DateTimeOffset? AsOf,
        string? CorrelationId,
        string? Error,
        long? DeadLetterId,
        string? BatchId,
        BatchReport? Batch,
        IReadOnlyDictionary<string, string> Headers,
        JsonElement? Body,
        IReadOnlyList<AttemptReport> History);

    internal sealed record RetryReport(string Db, Guid Id, string Queue, string Type, string PreviousState, long DeadLetterId, string? BatchId, DateTimeOffset? BatchFinishedAt);

    internal sealed record CancelReport(string Db, Guid Id, string Queue, string Type, string PreviousState, string Outcome, string Message);

    internal sealed record BatchShowReport(string Db, BatchReport Batch);

    internal sealed record ScheduleReport(string Name, string Cron, string TimeZone, string Queue, string Type, int Priority, DateTimeOffset? NextAt, DateTimeOffset? LastAt, string Misfire);

    internal sealed record RecurringReport(string Db, IReadOnlyList<ScheduleReport> Schedules, int Count);
}

/// <summary>Job states as the command line spells them.</summary>
internal static class JobStates
{
    public const string All = "scheduled, enqueued, processing, succeeded, dead or cancelled";

    public static string ToText(JobState state) => state.ToString().ToLowerInvariant();

    public static bool TryParse(string? text, out JobState state)
    {
        foreach (var candidate in Enum.GetValues<JobState>())
        {
            if (string.Equals(ToText(candidate), text?.Trim(), StringComparison.OrdinalIgnoreCase))
            {
                state = candidate;
                return true;
            }
        }

        state = default;
        return false;
    }

    public static JobState Parse(string text) =>
        TryParse(text, out var state) ? state : throw new CliException(CliApp.Usage, $"'{text}' is not a job state; use {All}.");

    public static Style StateStyle(string state) => state switch
    {
        "succeeded" => new Style(Color.Green),
        "dead" => new Style(Color.Red),
        "cancelled" => new Style(Color.Yellow),
        _ => Style.Plain,
    };
}
