using System.Globalization;
using Converge.Dashboard.Rendering;
using Converge.Projections;
using Converge.Storage;

namespace Converge.Dashboard.Pages;

/// <summary>The log: its head and a live tail, consumer groups with their lag and controls, and projection versions.</summary>
internal static class LogPage
{
    const int TailSize = 20;

    public static async Task<Html> RenderAsync(DashboardRequest request)
    {
        var status = await request.Store.Queries().GetStatusAsync(request.Aborted);
        var groups = Layout.Table(
            ["Group", "Position", "Lag", "Failures", "Last error", "State", ""],
            status.ConsumerGroups.Select(g => Html.Of($"""
                <tr id="group-{g.Group}"><td>{g.Group}</td><td>{DashboardRequest.Count(g.Position)}</td>
                <td data-live="group.{g.Group}.lag">{DashboardRequest.Count(g.Lag)}</td><td>{g.FailedAttempts}</td><td>{g.LastError ?? "-"}</td>
                <td data-live="group.{g.Group}.state">{(g.Paused ? "paused" : g.FailedAttempts > 0 ? "failing" : "running")}</td>
                <td>{(g.Paused
                    ? request.Action($"/groups/{Uri.EscapeDataString(g.Group)}/resume", "Resume", kind: "primary")
                    : request.Action($"/groups/{Uri.EscapeDataString(g.Group)}/pause", "Pause", confirm: $"Pause consumer group {g.Group} in every process?"))}
                {request.Action($"/groups/{Uri.EscapeDataString(g.Group)}/reset", "Reset to", Html.Of($"""<input name="position" type="number" min="0" required value="{g.Position}" aria-label="new position of {g.Group}">"""), $"Move {g.Group}'s checkpoint? Events after it are handled again; events before it are skipped.", "danger")}</td></tr>
                """)),
            "No consumer group has a checkpoint.",
            "groups");

        var projections = await ProjectionsAsync(request);
        var tail = await TailAsync(request, status.LogPosition);
        return Layout.Page(request, "/log", "Log", Html.Of($"""
            <section class="figures"><div><span class="figure" data-live="log_head">{DashboardRequest.Count(status.LogPosition)}</span>events (the head)</div></section>
            <section><h2>Consumer groups</h2>{groups}</section>
            {projections}
            <section><h2>Latest events</h2><div data-tail="{request.Link("/log/tail")}">{tail}</div></section>
            """));
    }

    /// <summary>The newest events, newest first; the page reloads it when the head moves.</summary>
    public static async Task<Html> TailAsync(DashboardRequest request, long? head = null)
    {
        var top = head ?? await request.Store.GetLogHeadAsync(request.Aborted);
        var events = await request.Store.ReadLogAsync(Math.Max(0, top - TailSize), TailSize, request.Aborted);
        return Layout.Table(
            ["Position", "Stream", "Version", "Event", "Transaction", "Sent"],
            events.Reverse().Select(e => Layout.Row(
                DashboardRequest.Count(e.Position),
                e.Stream,
                e.StreamVersion,
                e.Envelope.MessageType,
                e.Envelope.CorrelationId is { } c ? Html.Of($"""<a href="{request.Link("/flow", ("id", c))}">{c}</a>""") : Html.Raw("-"),
                DashboardRequest.Stamp(e.Envelope.SentAt))),
            "The log is empty.",
            "tail");
    }

    static async Task<Html> ProjectionsAsync(DashboardRequest request)
    {
        if (request.Store is not IDatabaseStore)
        {
            return Html.Empty;
        }

        var versions = await new ProjectionCatalog(request.Store, request.Time).ListAsync(request.Aborted);
        var rows = versions.Select(v => Html.Of($"""
            <tr id="projection-{v.Name}"><td>{v.Name}</td><td>{v.Version}</td><td>{Layout.Badge(v.State.ToString().ToLowerInvariant())}</td>
            <td>{DashboardRequest.Count(v.Position)}</td><td>{DashboardRequest.Count(v.Lag)}</td><td>{Progress(v)}</td><td>{v.EventsPerSecond.ToString("N0", CultureInfo.InvariantCulture)}/s</td><td>{v.LastError ?? "-"}</td>
            <td>{Html.When(v.State == ProjectionState.Built, request.Action($"/projections/{Uri.EscapeDataString(v.Name)}/{v.Version}/switch", "Switch readers here", confirm: $"Switch the readers of {v.Name} to version {v.Version}?", kind: "primary"))}
            {Html.When(v.State is not (ProjectionState.Live or ProjectionState.Dropped), request.Action($"/projections/{Uri.EscapeDataString(v.Name)}/{v.Version}/rebuild", "Rebuild", confirm: $"Drop the tables of {v.Name} version {v.Version} and build them again from the start of the log?", kind: "danger"))}</td></tr>
            """));
        return Html.Of($"""
            <section><h2>Projections</h2>{Layout.Table(["Projection", "Version", "State", "Position", "Lag", "Built", "Rate", "Last error", ""], rows, "No projection is registered.", "projections")}</section>
            """);
    }

    static Html Progress(ProjectionVersionStatus version)
    {
        var total = version.Position + version.Lag;
        var percent = total == 0 ? 100 : (int)(100 * version.Position / total);
        return Html.Of($"""<progress max="100" value="{percent}" aria-label="{version.Name} version {version.Version} built {percent} percent"></progress> {percent} %""");
    }
}
