using Converge.Dashboard.Rendering;

namespace Converge.Dashboard.Rendering;

/// <summary>The page around every view: navigation, the transaction search, a notice after an action, and the live script.</summary>
internal static class Layout
{
    static readonly (string Path, string Label)[] Sections =
    [
        ("", "Overview"),
        ("/sagas", "Sagas"),
        ("/jobs", "Jobs"),
        ("/dead-letters", "Dead letters"),
        ("/log", "Log"),
        ("/audit", "Operator actions"),
    ];

    public static Html Page(DashboardRequest request, string section, string title, Html body)
    {
        var nav = Html.Join(Sections.Select(s => Html.Of(
            $"""<a href="{request.Link(s.Path)}"{(s.Path == section ? Html.Raw(" class=\"current\" aria-current=\"page\"") : Html.Empty)}>{s.Label}</a>""")));
        var notice = request.Query("notice") is { } text ? Html.Of($"""<p class="notice" role="status">{text}</p>""") : Html.Empty;
        var mode = request.CanAct ? "operator" : "read-only";
        return Html.Of($"""
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>{title} · {request.Options.Title}</title>
            <link rel="stylesheet" href="{request.Link("/assets/dashboard.css")}">
            <script src="{request.Link("/assets/dashboard.js")}" defer></script>
            </head>
            <body data-live="{request.Link("/live")}">
            <header>
            <a class="brand" href="{request.Link("")}">{request.Options.Title}</a>
            <nav>{nav}</nav>
            <form class="search" method="get" action="{request.Link("/flow")}" role="search">
            <input name="id" placeholder="Transaction id" aria-label="Find a transaction by id" value="{request.Query("id")}">
            <button type="submit">Find</button>
            </form>
            <span class="mode" title="What this session may do">{mode}</span>
            </header>
            <main>
            <h1>{title}</h1>
            {notice}
            {body}
            </main>
            </body>
            </html>
            """);
    }

    /// <summary>A table with a header row; <paramref name="empty"/> stands in when there are no rows.</summary>
    public static Html Table(string[] headers, IEnumerable<Html> rows, string empty, string? id = null)
    {
        var list = rows.ToList();
        if (list.Count == 0)
        {
            return Html.Of($"""<p class="empty">{empty}</p>""");
        }

        var head = Html.Join(headers.Select(h => Html.Of($"<th scope=\"col\">{h}</th>")));
        var idAttribute = id is null ? Html.Empty : Html.Of($" id=\"{id}\"");
        return Html.Of($"""<table{idAttribute}><thead><tr>{head}</tr></thead><tbody>{Html.Join(list)}</tbody></table>""");
    }

    /// <summary>A row of cells, each encoded unless it is <see cref="Html"/> already.</summary>
    public static Html Row(params object?[] cells) => Html.Of($"<tr>{Html.Join(cells.Select(Cell))}</tr>");

    static Html Cell(object? cell) => cell is Html html ? Html.Of($"<td>{html}</td>") : Html.Of($"<td>{cell?.ToString()}</td>");

    /// <summary>A definition list of name and value pairs.</summary>
    public static Html Fields(params (string Name, object? Value)[] fields) => Html.Of(
        $"""<dl class="fields">{Html.Join(fields.Select(f => f.Value is Html html ? Html.Of($"<dt>{f.Name}</dt><dd>{html}</dd>") : Html.Of($"<dt>{f.Name}</dt><dd>{f.Value?.ToString() ?? "-"}</dd>")))}</dl>""");

    /// <summary>A "next page" link when the page was full.</summary>
    public static Html Next(DashboardRequest request, bool full, string path, params (string Name, string? Value)[] query) =>
        full ? Html.Of($"""<p class="pager"><a rel="next" href="{request.Link(path, query)}">Next page</a></p>""") : Html.Empty;

    public static Html Badge(string text) => Html.Of($"""<span class="badge badge-{text.Replace(' ', '-')}">{text}</span>""");
}
