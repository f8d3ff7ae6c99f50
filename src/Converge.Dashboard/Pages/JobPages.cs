using System.Globalization;
using System.Text;
using Converge.Dashboard.Rendering;
using Converge.Jobs;
using Converge.Storage;

namespace Converge.Dashboard.Pages;

/// <summary>Jobs: a filtered list, one job with its arguments, progress, attempts and errors, batches, and recurring jobs.</summary>
internal static class JobPages
{
    public static async Task<Html> ListAsync(DashboardRequest request)
    {
        var jobs = Queries(request);
        var queue = request.Query("queue");
        var batch = request.Query("batch");
        JobState? state = Enum.TryParse<JobState>(request.Query("state"), ignoreCase: true, out var s) ? s : null;
        var after = request.Query("after");
        IReadOnlyList<JobInfo> list;
        try
        {
            list = await jobs.ListJobsAsync(new JobQuery { Queue = queue, State = state, BatchId = batch, After = after, Max = request.Options.PageSize }, request.Aborted);
        }
        catch (FormatException)
        {
            throw new DashboardNotFoundException($"'{after}' is not a position in this list; start again from the first page.");
        }


        var states = Html.Join(Enum.GetNames<JobState>().Select(n => n.ToLowerInvariant()).Prepend("").Select(name =>
            Html.Of($"""<option value="{name}"{(state?.ToString().Equals(name, StringComparison.OrdinalIgnoreCase) == true ? Html.Raw(" selected") : Html.Empty)}>{(name.Length == 0 ? "any" : name)}</option>""")));
        var filter = Html.Of($"""
            <form class="filter" method="get" action="{request.Link("/jobs")}">
            <label>Queue <input name="queue" value="{queue}"></label>
            <label>State <select name="state">{states}</select></label>
            <label>Batch <input name="batch" value="{batch}"></label>
            <button type="submit">Filter</button>
            </form>
            """);
        var batchLink = batch is null ? Html.Empty : Html.Of($"""<p><a href="{request.Link("/jobs/batches/" + Uri.EscapeDataString(batch))}">Batch {batch}: counters</a></p>""");
        var table = Layout.Table(
            ["Job", "Queue", "Type", "State", "Progress", "Attempts", "Enqueued", "Error"],
            list.Select(j => Layout.Row(
                Html.Of($"""<a href="{request.Link("/jobs/" + j.Id.ToString())}">{ShortId(j.Id)}</a>"""),
                j.Queue,
                j.Type,
                Layout.Badge(j.State.ToString().ToLowerInvariant()),
                j.Progress is { } p ? $"{p} %" : "-",
                j.Attempts,
                request.Ago(j.EnqueuedAt),
                j.Error is { } e ? FirstLine(e) : "-")),
            "No job matches.",
            "jobs");
        return Layout.Page(request, "/jobs", "Jobs", Html.Of($"""
            {filter}
            <p class="hint">Newest first, {request.Options.PageSize} a page. <a href="{request.Link("/jobs/recurring")}">Recurring jobs</a></p>
            {batchLink}
            {table}
            {Layout.Next(request, list.Count == request.Options.PageSize, "/jobs", ("queue", queue), ("state", state?.ToString().ToLowerInvariant()), ("batch", batch), ("after", list.Count > 0 ? list[^1].Cursor : null))}
            """));
    }

    public static async Task<Html> ShowAsync(DashboardRequest request, Guid id)
    {
        var job = await Queries(request).GetJobAsync(id, request.Aborted)
            ?? throw new DashboardNotFoundException($"No job has id {id} (finished jobs are forgotten after the inbox's retention).");
        var cancel = job.State is JobState.Scheduled or JobState.Enqueued or JobState.Processing
            ? request.Action($"/jobs/{id}/cancel", "Cancel", confirm: $"Cancel job {ShortId(id)} ({job.Type})?")
            : Html.Empty;
        var retry = job.State == JobState.Dead && job.DeadLetterId is { } letter
            ? request.Action($"/dead-letters/{letter}/retry", "Retry", kind: "primary")
            : Html.Empty;
        var history = Layout.Table(
            ["Attempt", "At", "Error"],
            job.History.Select(a => Layout.Row(a.Attempt, DashboardRequest.Stamp(a.At), Html.Of($"<pre>{a.Error}</pre>"))),
            "No failed attempt.");
        return Layout.Page(request, "/jobs", $"Job {ShortId(id)}", Html.Of($"""
            <p>{job.Type} {Layout.Badge(job.State.ToString().ToLowerInvariant())} {cancel} {retry}</p>
            {Layout.Fields(
                ("Id", id.ToString()),
                ("Queue", Html.Of($"""<a href="{request.Link("/jobs", ("queue", job.Queue))}">{job.Queue}</a>""")),
                ("Batch", job.BatchId is { } b ? Html.Of($"""<a href="{request.Link("/jobs/batches/" + Uri.EscapeDataString(b))}">{b}</a>""") : Html.Raw("-")),
                ("Transaction", job.CorrelationId is { } c ? Html.Of($"""<a href="{request.Link("/flow", ("id", c))}">{c}</a>""") : Html.Raw("-")),
                ("Progress", job.Progress is { } p ? $"{p} % {job.ProgressNote}" : "-"),
                ("Attempts", job.Attempts),
                ("Priority", job.Priority),
                ("Enqueued", DashboardRequest.Stamp(job.EnqueuedAt)),
                ("Due", DashboardRequest.Stamp(job.DueAt)),
                ("As of", DashboardRequest.Stamp(job.AsOf)),
                ("Finished", DashboardRequest.Stamp(job.FinishedAt)),
                ("Error", job.Error is { } e ? Html.Of($"<pre>{e}</pre>") : Html.Raw("-")))}
            <section><h2>Arguments</h2><pre>{Arguments(job.Body)}</pre></section>
            <section><h2>Attempts</h2>{history}</section>
            """));
    }

    public static async Task<Html> BatchAsync(DashboardRequest request, string id)
    {
        var batch = await Queries(request).GetBatchAsync(id, request.Aborted)
            ?? throw new DashboardNotFoundException($"No batch has id '{id}'.");
        return Layout.Page(request, "/jobs", $"Batch {id}", Html.Of($"""
            <p>{batch.Description}</p>
            {Layout.Fields(
                ("Total", DashboardRequest.Count(batch.Total)),
                ("Pending", DashboardRequest.Count(batch.Pending)),
                ("Succeeded", DashboardRequest.Count(batch.Succeeded)),
                ("Failed", DashboardRequest.Count(batch.Failed)),
                ("Sealed", batch.Sealed ? "yes" : "no, jobs may still be added"),
                ("Created", DashboardRequest.Stamp(batch.CreatedAt)),
                ("Finished", DashboardRequest.Stamp(batch.FinishedAt)))}
            <p><a href="{request.Link("/jobs", ("batch", id))}">Jobs of this batch</a></p>
            """));
    }

    public static async Task<Html> RecurringAsync(DashboardRequest request)
    {
        var schedules = await Queries(request).ListRecurringJobsAsync(request.Aborted);
        var table = Layout.Table(
            ["Name", "Cron", "Time zone", "Queue", "Next", "Last", "Missed runs", ""],
            schedules.OrderBy(r => r.NextAt).Select(r => Layout.Row(
                r.Name,
                r.Cron,
                r.TimeZone,
                Html.Of($"""<a href="{request.Link("/jobs", ("queue", r.Queue))}">{r.Queue}</a>"""),
                $"{DashboardRequest.Stamp(r.NextAt)} ({request.Ago(r.NextAt)})",
                request.Ago(r.LastAt),
                r.Misfire.ToString(),
                request.Action("/jobs/recurring/" + Uri.EscapeDataString(r.Name) + "/trigger", "Trigger now", confirm: $"Run '{r.Name}' now, besides its schedule?"))),
            "No recurring job is scheduled.",
            "recurring");
        return Layout.Page(request, "/jobs", "Recurring jobs", table);
    }

    internal static string ShortId(Guid id) => id.ToString("N")[^8..];

    static string FirstLine(string text)
    {
        var end = text.IndexOfAny(['\r', '\n']);
        var line = end < 0 ? text : text[..end];
        return line.Length > 160 ? line[..160] + "…" : line;
    }

    static string Arguments(ReadOnlyMemory<byte>? body)
    {
        if (body is not { } bytes)
        {
            return "-";
        }

        try
        {
            using var document = System.Text.Json.JsonDocument.Parse(bytes);
            return System.Text.Json.JsonSerializer.Serialize(document.RootElement, Indented);
        }
        catch (System.Text.Json.JsonException)
        {
            return string.Create(CultureInfo.InvariantCulture, $"({bytes.Length} bytes that are not JSON: {Encoding.UTF8.GetString(bytes.Span[..Math.Min(bytes.Length, 200)])})");
        }
    }

    static readonly System.Text.Json.JsonSerializerOptions Indented = new() { WriteIndented = true };

    static IJobQueries Queries(DashboardRequest request) =>
        StoreContracts.Find<IJobQueries>(request.Store) ?? throw new DashboardNotFoundException($"The {request.Store.Name} store keeps no jobs.");
}
