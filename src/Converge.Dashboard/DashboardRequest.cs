using System.Globalization;
using System.Text;
using Converge.Dashboard.Rendering;
using Converge.Storage;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Http;

namespace Converge.Dashboard;

/// <summary>What a page or an action needs of one request: the store, the clock, links under the dashboard's path, and forms.</summary>
internal sealed class DashboardRequest
{
    public DashboardRequest(HttpContext http, ConvergeDashboardOptions options, string basePath, bool canAct)
    {
        Http = http;
        Options = options;
        Base = basePath;
        CanAct = canAct;
        Store = ConvergeDashboardEndpoints.Store(http);
        Time = http.RequestServices.GetService(typeof(TimeProvider)) as TimeProvider
            ?? throw new InvalidOperationException("The dashboard needs a TimeProvider service: call builder.Services.AddConvergeDashboard().");
        if (canAct)
        {
            var tokens = ((IAntiforgery)http.RequestServices.GetService(typeof(IAntiforgery))!).GetAndStoreTokens(http);
            AntiforgeryField = tokens.FormFieldName;
            AntiforgeryToken = tokens.RequestToken;
        }
    }

    public HttpContext Http { get; }

    public ConvergeDashboardOptions Options { get; }

    /// <summary>The dashboard's path, with the application's path base: every link starts with it.</summary>
    public string Base { get; }

    /// <summary>Whether the caller satisfies the operator policy, so actions are shown.</summary>
    public bool CanAct { get; }

    public IMessageStore Store { get; }

    public TimeProvider Time { get; }

    public CancellationToken Aborted => Http.RequestAborted;

    string? AntiforgeryField { get; }

    string? AntiforgeryToken { get; }

    public string? Query(string name) => Http.Request.Query.TryGetValue(name, out var value) && !string.IsNullOrWhiteSpace(value.ToString()) ? value.ToString().Trim() : null;

    /// <summary>A link under the dashboard, with the query parameters that have a value.</summary>
    public string Link(string path, params (string Name, string? Value)[] query)
    {
        var builder = new StringBuilder(Base).Append(path);
        var first = true;
        foreach (var (name, value) in query)
        {
            if (value is null)
            {
                continue;
            }

            builder.Append(first ? '?' : '&').Append(Uri.EscapeDataString(name)).Append('=').Append(Uri.EscapeDataString(value));
            first = false;
        }

        return builder.ToString();
    }

    /// <summary>This page's own address, to come back to after an action.</summary>
    public string Here => Http.Request.PathBase + Http.Request.Path + Http.Request.QueryString;

    /// <summary>
    /// A button that POSTs <paramref name="fields"/> to the action at <paramref name="path"/> with the antiforgery token;
    /// nothing when the caller may not act. <paramref name="confirm"/> asks the browser to confirm first.
    /// </summary>
    public Html Action(string path, string label, Html fields = default, string? confirm = null, string kind = "secondary", string? formId = null)
    {
        if (!CanAct)
        {
            return Html.Empty;
        }

        var confirmAttribute = confirm is null ? Html.Empty : Html.Of($" data-confirm=\"{confirm}\"");
        var idAttribute = formId is null ? Html.Empty : Html.Of($" id=\"{formId}\"");
        return Html.Of($"""<form method="post" action="{Link(path)}" class="action"{idAttribute}{confirmAttribute}><input type="hidden" name="{AntiforgeryField}" value="{AntiforgeryToken}"><input type="hidden" name="return" value="{Here}">{fields}<button type="submit" class="{kind}">{label}</button></form>""");
    }

    public static Html Hidden(string name, string? value) => Html.Of($"""<input type="hidden" name="{name}" value="{value}">""");

    public string Ago(DateTimeOffset? at)
    {
        if (at is not { } time)
        {
            return "-";
        }

        var elapsed = Time.GetUtcNow() - time;
        var future = elapsed < TimeSpan.Zero;
        var span = future ? -elapsed : elapsed;
        var text = span.TotalSeconds < 60 ? $"{span.TotalSeconds:F0} s"
            : span.TotalMinutes < 60 ? $"{span.TotalMinutes:F0} min"
            : span.TotalHours < 48 ? $"{span.TotalHours:F0} h"
            : $"{span.TotalDays:F0} d";
        return future ? "in " + text : text + " ago";
    }

    public static string Stamp(DateTimeOffset? at) => at?.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss.fff 'UTC'", CultureInfo.InvariantCulture) ?? "-";

    public static string Count(long value) => value.ToString("N0", CultureInfo.InvariantCulture);
}
