using System.Diagnostics;
using System.Globalization;
using Converge.Dashboard.Pages;
using Converge.Dashboard.Rendering;
using Converge.Jobs;
using Converge.Projections;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Dashboard;

/// <summary>The dashboard's routes: pages (GET), actions (POST, antiforgery, recorded), the live feed and the assets.</summary>
internal sealed class DashboardSite(ConvergeDashboardOptions options, string pattern)
{
    public void MapPages(RouteGroupBuilder group)
    {
        Page(group, "", r => OverviewPage.RenderAsync(r));
        Page(group, "/sagas", r => SagaPages.ListAsync(r));
        Page(group, "/sagas/{id}", r => SagaPages.ShowAsync(r, Route(r, "id")));
        Page(group, "/flow", r => FlowPage.RenderAsync(r));
        Page(group, "/jobs", r => JobPages.ListAsync(r));
        Page(group, "/jobs/recurring", r => JobPages.RecurringAsync(r));
        Page(group, "/jobs/batches/{id}", r => JobPages.BatchAsync(r, Route(r, "id")));
        Page(group, "/jobs/{id:guid}", r => JobPages.ShowAsync(r, Guid.Parse(Route(r, "id"), CultureInfo.InvariantCulture)));
        Page(group, "/dead-letters", r => DeadLetterPages.ListAsync(r));
        Page(group, "/dead-letters/{id:long}", r => DeadLetterPages.ShowAsync(r, long.Parse(Route(r, "id"), CultureInfo.InvariantCulture)));
        Page(group, "/log", r => LogPage.RenderAsync(r));
        Page(group, "/audit", r => AuditPage.RenderAsync(r));
        group.MapGet("/log/tail", async (HttpContext http) =>
        {
            var started = Stopwatch.GetTimestamp();
            return Fragment(http, started, await LogPage.TailAsync(await RequestAsync(http)));
        });
        group.MapGet("/live", async (HttpContext http) => await LiveFeed.ServeAsync(await RequestAsync(http)));
        group.MapGet("/assets/{name}", (string name) => Assets.Serve(name));
    }

    public void MapActions(RouteGroupBuilder group)
    {
        Act(group, "/dead-letters/{id:long}/retry", (r, _) => DeadLetterActions.RetryOneAsync(r, RouteLong(r, "id")));
        Act(group, "/dead-letters/{id:long}/discard", (r, _) => DeadLetterActions.DiscardOneAsync(r, RouteLong(r, "id")));
        Act(group, "/dead-letters/retry", (r, form) => DeadLetterActions.ManyAsync(r, form, retry: true));
        Act(group, "/dead-letters/discard", (r, form) => DeadLetterActions.ManyAsync(r, form, retry: false));
        Act(group, "/sagas/{id}/resume", (r, _) => StoreActions.ResumeSagaAsync(r, Route(r, "id")));
        Act(group, "/jobs/{id:guid}/cancel", (r, _) => StoreActions.CancelJobAsync(r, Guid.Parse(Route(r, "id"), CultureInfo.InvariantCulture)));
        Act(group, "/jobs/recurring/{name}/trigger", (r, _) => StoreActions.TriggerRecurringAsync(r, Route(r, "name")));
        Act(group, "/groups/{name}/pause", (r, _) => StoreActions.PauseGroupAsync(r, Route(r, "name"), paused: true));
        Act(group, "/groups/{name}/resume", (r, _) => StoreActions.PauseGroupAsync(r, Route(r, "name"), paused: false));
        Act(group, "/groups/{name}/reset", (r, form) => StoreActions.ResetGroupAsync(r, Route(r, "name"), form["position"].ToString()));
        Act(group, "/projections/{name}/{version:int}/switch", (r, _) => StoreActions.SwitchProjectionAsync(r, Route(r, "name"), RouteInt(r, "version")));
        Act(group, "/projections/{name}/{version:int}/rebuild", (r, _) => StoreActions.RebuildProjectionAsync(r, Route(r, "name"), RouteInt(r, "version")));
    }

    async Task<DashboardRequest> RequestAsync(HttpContext http)
    {
        var canAct = options.AllowAnonymous;
        if (options.OperatorPolicy is { } operators)
        {
            var authorization = http.RequestServices.GetRequiredService<IAuthorizationService>();
            canAct = (await authorization.AuthorizeAsync(http.User, operators)).Succeeded;
        }

        return new DashboardRequest(http, options, http.Request.PathBase + pattern, canAct);
    }

    void Page(RouteGroupBuilder group, string route, Func<DashboardRequest, Task<Html>> render) =>
        group.MapGet(route, async (HttpContext http) =>
        {
            var started = Stopwatch.GetTimestamp();
            var request = await RequestAsync(http);
            try
            {
                return Document(http, started, await render(request), StatusCodes.Status200OK);
            }
            catch (DashboardNotFoundException missing)
            {
                return Document(http, started, Layout.Page(request, "", "Not found", Html.Of($"""<p class="empty">{missing.Message}</p>""")), StatusCodes.Status404NotFound);
            }
        });

    void Act(RouteGroupBuilder group, string route, Func<DashboardRequest, IFormCollection, Task<string>> act) =>
        group.MapPost(route, async (HttpContext http) =>
        {
            try
            {
                await http.RequestServices.GetRequiredService<IAntiforgery>().ValidateRequestAsync(http);
            }
            catch (AntiforgeryValidationException)
            {
                return Results.Text("This action needs the form's antiforgery token: use the dashboard's own buttons, from a page it served.", "text/plain", statusCode: StatusCodes.Status400BadRequest);
            }

            var form = await http.Request.ReadFormAsync(http.RequestAborted);
            var request = await RequestAsync(http);
            string notice;
            try
            {
                notice = await act(request, form);
            }
            catch (DashboardNotFoundException refused)
            {
                notice = refused.Message;
            }

            // Back to the page the button was on (only a page of this dashboard), with what happened.
            var back = form["return"].ToString();
            if (!back.StartsWith(request.Base, StringComparison.Ordinal) || back.StartsWith("//", StringComparison.Ordinal))
            {
                back = request.Base;
            }

            back = WithoutNotice(back);
            http.Response.Headers.Location = back + (back.Contains('?', StringComparison.Ordinal) ? "&" : "?") + "notice=" + Uri.EscapeDataString(notice);
            return Results.StatusCode(StatusCodes.Status303SeeOther);
        });

    static string WithoutNotice(string url)
    {
        var at = url.IndexOf("notice=", StringComparison.Ordinal);
        return at < 0 ? url : url[..(at - 1)];
    }

    static IResult Document(HttpContext http, long started, Html html, int status) =>
        Results.Content(Timed(http, started, html), "text/html; charset=utf-8", null, status);

    static IResult Fragment(HttpContext http, long started, Html html) => Results.Content(Timed(http, started, html), "text/html; charset=utf-8");

    /// <summary>
    /// The body as text, with a <c>Server-Timing: page;dur=12.3</c> header: the milliseconds from the endpoint's start
    /// (the operator check and the store's queries included) to the body built as text; sending it is not included.
    /// Browsers show it in their developer tools; <c>converge bench dashboard</c> reads it. It names no query and no data.
    /// </summary>
    static string Timed(HttpContext http, long started, Html html)
    {
        var body = html.ToString();
        var ms = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        http.Response.Headers["Server-Timing"] = "page;dur=" + ms.ToString("0.0", CultureInfo.InvariantCulture);
        return body;
    }

    static string Route(DashboardRequest request, string name) => request.Http.GetRouteValue(name)?.ToString() ?? string.Empty;

    static long RouteLong(DashboardRequest request, string name) => long.Parse(Route(request, name), CultureInfo.InvariantCulture);

    static int RouteInt(DashboardRequest request, string name) => int.Parse(Route(request, name), CultureInfo.InvariantCulture);
}

/// <summary>What a page asked for is not there (or no longer): shown as a 404 page, or as the notice of an action.</summary>
internal sealed class DashboardNotFoundException(string message) : Exception(message);
