using Converge.Dashboard.Rendering;
using Converge.Jobs;
using Converge.Projections;
using Converge.Sagas;
using Converge.Storage;

namespace Converge.Dashboard.Pages;

/// <summary>The first page: queues, consumer groups, projections, stuck sagas and the recurring jobs due next.</summary>
internal static class OverviewPage
{
    /// <summary>How recently a queue that holds nothing must have handled a message to keep its row.</summary>
    static readonly TimeSpan ActiveWindow = TimeSpan.FromSeconds(10);

    public static async Task<Html> RenderAsync(DashboardRequest request)
    {
        var store = request.Store;
        var status = await store.Queries().GetStatusAsync(request.Aborted);

        // Queues that hold nothing now but handled messages in the last ten seconds get a row too, for their rates. The
        // count reads every message handled in the window, so the window stays short: a busy store handles thousands a second.
        var active = StoreContracts.Find<IActivityQueries>(store) is { } activity
            ? await activity.CountActivitySinceAsync(request.Time.GetUtcNow() - ActiveWindow, request.Aborted)
            : [];
        var rows = status.Queues
            .Concat(active.Where(a => status.Queues.All(q => q.Queue != a.Queue)).Select(a => new QueueStatus(a.Queue, 0, 0, 0, 0)))
            .OrderBy(q => q.Queue, StringComparer.Ordinal)
            .ToList();
        var queues = Layout.Table(
            ["Queue", "Ready", "Scheduled", "In flight", "Dead letters", "Ready over time", "Handled/s", "Dead-lettered/s"],
            rows.Select(q => Html.Of($"""
                <tr><td>{q.Queue}</td>
                <td data-live="queue.{q.Queue}.ready">{DashboardRequest.Count(q.Ready)}</td>
                <td data-live="queue.{q.Queue}.scheduled">{DashboardRequest.Count(q.Scheduled)}</td>
                <td data-live="queue.{q.Queue}.in_flight">{DashboardRequest.Count(q.InFlight)}</td>
                <td><a href="{request.Link("/dead-letters", ("source", q.Queue))}" data-live="queue.{q.Queue}.dead_letters">{DashboardRequest.Count(q.DeadLetters)}</a></td>
                <td>{Spark(q.Queue, "ready", "ready messages")}</td>
                <td><span data-live="queue.{q.Queue}.handled_per_s">-</span> {Spark(q.Queue, "handled_per_s", "messages handled per second")}</td>
                <td><span data-live="queue.{q.Queue}.dead_lettered_per_s">-</span> {Spark(q.Queue, "dead_lettered_per_s", "messages dead-lettered per second")}</td></tr>
                """)),
            "No queue holds messages or dead letters.",
            "queues");

        var groups = Layout.Table(
            ["Consumer group", "Position", "Lag", "Failures", "State"],
            status.ConsumerGroups.Select(g => Html.Of($"""
                <tr><td><a href="{request.Link("/log")}#group-{g.Group}">{g.Group}</a></td><td>{DashboardRequest.Count(g.Position)}</td>
                <td data-live="group.{g.Group}.lag">{DashboardRequest.Count(g.Lag)}</td><td>{g.FailedAttempts}</td>
                <td data-live="group.{g.Group}.state">{(g.Paused ? "paused" : g.FailedAttempts > 0 ? "failing" : "running")}</td></tr>
                """)),
            "No consumer group has a checkpoint.");

        var stuck = await StuckSagasAsync(request);
        var projections = await ProjectionsAsync(request);
        var recurring = await RecurringAsync(request);
        return Layout.Page(request, "", "Overview", Html.Of($"""
            <section class="figures">
            <div><span class="figure" data-live="dead_letters">{DashboardRequest.Count(status.DeadLetters)}</span><a href="{request.Link("/dead-letters")}">dead letters</a></div>
            <div><span class="figure" data-live="log_head">{DashboardRequest.Count(status.LogPosition)}</span><a href="{request.Link("/log")}">events in the log</a></div>
            {stuck}
            </section>
            <section><h2>Queues</h2>{queues}</section>
            <section><h2>Consumer groups</h2>{groups}</section>
            {projections}
            {recurring}
            """));
    }

    static Html Spark(string queue, string figure, string what) =>
        Html.Of($"""<svg class="spark" data-spark="queue.{queue}.{figure}" viewBox="0 0 120 24" role="img" aria-label="{what} of {queue} while this page is open"></svg>""");

    static async Task<Html> StuckSagasAsync(DashboardRequest request)
    {
        if (StoreContracts.Find<ISagaQueries>(request.Store) is not { } sagas)
        {
            return Html.Empty;
        }

        var stuck = (await sagas.CountSagasAsync(request.Aborted)).Where(c => c.State == SagaState.Stuck).Sum(c => c.Count);
        return Html.Of($"""<div><span class="figure{(stuck > 0 ? Html.Raw(" alarm") : Html.Empty)}" data-live="stuck_sagas">{DashboardRequest.Count(stuck)}</span><a href="{request.Link("/sagas", ("state", "stuck"))}">stuck sagas</a></div>""");
    }

    static async Task<Html> ProjectionsAsync(DashboardRequest request)
    {
        if (request.Store is not IDatabaseStore)
        {
            return Html.Empty;
        }

        var versions = await new ProjectionCatalog(request.Store, request.Time).ListAsync(request.Aborted);
        if (versions.Count == 0)
        {
            return Html.Empty;
        }

        return Html.Of($"""
            <section><h2>Projections</h2>{Layout.Table(
                ["Projection", "Version", "State", "Position", "Lag"],
                versions.Select(v => Layout.Row(Html.Of($"""<a href="{request.Link("/log")}#projection-{v.Name}">{v.Name}</a>"""), v.Version, Layout.Badge(v.State.ToString().ToLowerInvariant()), DashboardRequest.Count(v.Position), DashboardRequest.Count(v.Lag))),
                "")}</section>
            """);
    }

    static async Task<Html> RecurringAsync(DashboardRequest request)
    {
        if (StoreContracts.Find<IJobQueries>(request.Store) is not { } jobs)
        {
            return Html.Empty;
        }

        var recurring = (await jobs.ListRecurringJobsAsync(request.Aborted)).OrderBy(r => r.NextAt).Take(10).ToList();
        if (recurring.Count == 0)
        {
            return Html.Empty;
        }

        return Html.Of($"""
            <section><h2>Recurring jobs due next</h2>{Layout.Table(
                ["Name", "Schedule", "Next", "Last"],
                recurring.Select(r => Layout.Row(r.Name, $"{r.Cron} ({r.TimeZone})", request.Ago(r.NextAt), request.Ago(r.LastAt))),
                "")}<p><a href="{request.Link("/jobs/recurring")}">All recurring jobs</a></p></section>
            """);
    }
}
