using Converge.Dashboard.Rendering;
using Converge.Storage;

namespace Converge.Dashboard.Pages;

/// <summary>Dead letters: grouped by source, listed newest first, and one with its message, error and attempts.</summary>
internal static class DeadLetterPages
{
    public static async Task<Html> ListAsync(DashboardRequest request)
    {
        var queries = request.Store.DeadLetterQueries();
        var source = request.Query("source");
        var reason = request.Query("reason");
        var key = request.Query("key");
        var after = request.Query("after");
        var groups = await queries.GroupDeadLettersAsync(request.Aborted);
        Page<DeadLetter> page;
        try
        {
            page = await queries.ListDeadLettersAsync(new DeadLetterQuery { Source = source, Reason = reason, OrderingKey = key, After = after, Max = request.Options.PageSize }, request.Aborted);
        }
        catch (FormatException)
        {
            throw new DashboardNotFoundException($"'{after}' is not a position in this list; start again from the first page.");
        }

        var letters = page.Items;
        var groupTable = Layout.Table(
            ["Reason", "Source", "Dead letters", "Newest", ""],
            groups.Select(g => Layout.Row(
                Html.Of($"""<a href="{request.Link("/dead-letters", ("reason", g.Reason), ("source", g.Source))}">{g.Reason}</a>"""),
                g.Source,
                DashboardRequest.Count(g.Count),
                request.Ago(g.NewestAt),
                Html.Join([
                    request.Action("/dead-letters/retry", "Retry all", Html.Join([DashboardRequest.Hidden("reason", g.Reason), DashboardRequest.Hidden("source", g.Source)]), $"Retry all {g.Count} dead letters of {g.Source} ({g.Reason})?"),
                    request.Action("/dead-letters/discard", "Discard all", Html.Join([DashboardRequest.Hidden("reason", g.Reason), DashboardRequest.Hidden("source", g.Source)]), $"Discard all {g.Count} dead letters of {g.Source} ({g.Reason}) for good?", "danger"),
                ]))),
            "No dead letters.",
            "dead-letter-groups");

        var rows = letters.Select(l => Html.Of($"""
            <tr>
            <td>{(request.CanAct ? Html.Of($"""<input type="checkbox" name="id" value="{l.Id}" form="selection" aria-label="select dead letter {l.Id}">""") : Html.Empty)}</td>
            <td><a href="{request.Link("/dead-letters/" + l.Id.ToString(System.Globalization.CultureInfo.InvariantCulture))}">{l.Id}</a></td>
            <td>{l.Source}</td><td>{l.Envelope.MessageType}</td><td>{Layout.Badge(l.Reason)}</td><td>{l.Attempts}</td>
            <td>{(l.OrderingKey is { } k ? Html.Of($"""<a href="{request.Link("/dead-letters", ("source", l.Source), ("key", k))}">{k}</a>""") : Html.Empty)}</td><td>{request.Ago(l.DeadLetteredAt)}</td>
            <td>{request.Action("/dead-letters/" + l.Id.ToString(System.Globalization.CultureInfo.InvariantCulture) + "/retry", "Retry", kind: "primary")}{request.Action("/dead-letters/" + l.Id.ToString(System.Globalization.CultureInfo.InvariantCulture) + "/discard", "Discard", confirm: $"Discard dead letter {l.Id} for good?", kind: "danger")}</td>
            </tr>
            """));
        var list = Layout.Table(["", "Id", "Source", "Message", "Reason", "Attempts", "Key", "When", ""], rows, "No dead letters here.", "dead-letters");
        var selection = letters.Count > 0 ? request.Action("/dead-letters/retry", "Retry selected", kind: "primary", formId: "selection") : Html.Empty;
        var redrive = key is not null && source is not null && letters.Count > 0
            ? request.Action("/dead-letters/retry", $"Redrive key {key} in order", Html.Join([DashboardRequest.Hidden("source", source), DashboardRequest.Hidden("key", key)]), $"Retry every dead letter of key {key} on {source}, oldest first?", "primary")
            : Html.Empty;
        var title = (source, reason, key) switch
        {
            (null, null, null) => "Dead letters",
            _ => "Dead letters of " + string.Join(", ", new[] { source, reason, key is null ? null : "key " + key }.Where(p => p is not null)),
        };

        return Layout.Page(request, "/dead-letters", title, Html.Of($"""
            <section><h2>By reason and source</h2>{groupTable}</section>
            <section><h2>Newest first</h2>{selection}{redrive}{list}
            {Layout.Next(request, page.Next is not null, "/dead-letters", ("source", source), ("reason", reason), ("key", key), ("after", page.Next))}</section>
            """));
    }

    public static async Task<Html> ShowAsync(DashboardRequest request, long id)
    {
        var letter = await request.Store.DeadLetterQueries().GetDeadLetterAsync(id, request.Aborted)
            ?? throw new DashboardNotFoundException($"No dead letter has id {id}: it was retried or discarded.");
        var envelope = letter.Envelope;
        var history = Layout.Table(
            ["Attempt", "At", "Error"],
            letter.History.Select(a => Layout.Row(a.Attempt, DashboardRequest.Stamp(a.At), Html.Of($"<pre>{a.Error}</pre>"))),
            "No attempt recorded.");
        return Layout.Page(request, "/dead-letters", $"Dead letter {id}", Html.Of($"""
            <p>{Layout.Badge(letter.Reason)} {request.Action($"/dead-letters/{id}/retry", "Retry", kind: "primary")} {request.Action($"/dead-letters/{id}/discard", "Discard", confirm: $"Discard dead letter {id} for good?", kind: "danger")}</p>
            {Layout.Fields(
                ("Source", letter.Source),
                ("Message", $"{envelope.MessageType} {envelope.MessageId}"),
                ("Transaction", envelope.CorrelationId is { } c ? Html.Of($"""<a href="{request.Link("/flow", ("id", c))}">{c}</a>""") : Html.Raw("-")),
                ("Ordering key", letter.OrderingKey),
                ("Attempts", letter.Attempts),
                ("Sent", DashboardRequest.Stamp(envelope.SentAt)),
                ("Dead-lettered", DashboardRequest.Stamp(letter.DeadLetteredAt)))}
            <section><h2>Error</h2><pre>{letter.Exception ?? "-"}</pre></section>
            <section><h2>Body</h2><pre>{System.Text.Encoding.UTF8.GetString(envelope.Body.Span)}</pre></section>
            <section><h2>Attempts</h2>{history}</section>
            """));
    }
}
