using Converge.Choreography;
using Converge.Dashboard.Rendering;

namespace Converge.Dashboard.Pages;

/// <summary>The causal tree of one transaction id across queues, the log, dead letters and the saga log (what <c>converge flow</c> prints).</summary>
internal static class FlowPage
{
    public static async Task<Html> RenderAsync(DashboardRequest request)
    {
        if (request.Query("id") is not { } transactionId)
        {
            return Layout.Page(request, "/flow", "Flow", Html.Of($"""<p class="empty">Enter a transaction id in the search box to see every message and event it caused.</p>"""));
        }

        var steps = await FlowView.BuildAsync(request.Store, transactionId, request.Aborted);
        if (steps.Count == 0)
        {
            return Layout.Page(request, "/flow", $"Flow of {transactionId}", Html.Of($"""<p class="empty">Nothing in this store carries transaction id '{transactionId}'.</p>"""));
        }

        var saga = steps.Any(s => s.Saga.Count > 0 || s.Item.Where == FlowView.SagaLogPlace)
            ? Html.Of($"""<p><a href="{request.Link("/sagas/" + Uri.EscapeDataString(transactionId))}">Saga timeline of {transactionId}</a></p>""")
            : Html.Empty;
        var tree = Html.Join(steps.Select(step => Html.Of($"""
            <li class="flow-item status-{step.Item.Status}" style="--depth:{step.Depth}">
            <span class="message">{step.Item.MessageType}</span>
            <span class="where">{step.Item.Where}</span>
            {Layout.Badge(step.Item.Status)}
            <span class="at">{DashboardRequest.Stamp(step.Item.SentAt)}</span>
            {Html.When(step.Saga.Count > 0, Html.Of($"""<ul class="saga-entries">{Html.Join(step.Saga.Select(e => Html.Of($"<li>{e.Kind} {e.Step} {e.Detail}</li>")))}</ul>"""))}
            </li>
            """)));
        return Layout.Page(request, "/flow", $"Flow of {transactionId}", Html.Of($"""
            {saga}
            <ol class="flow" id="flow">{tree}</ol>
            <p class="hint">{steps.Count} messages and events, each under the one that caused it.</p>
            """));
    }
}
