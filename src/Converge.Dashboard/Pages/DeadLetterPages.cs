using Converge.Dashboard.Rendering;
using Converge.Storage;

namespace Converge.Dashboard.Pages;

/// <summary>Dead letters: grouped by source, listed newest first, and one with its message, error and attempts.</summary>
internal static class DeadLetterPages
{
    public static async Task<Html> ListAsync(DashboardRequest request)
    {
        var queries = request.Store.Queries();
        var source = request.Query("source");
        var status = await queries.GetStatusAsync(request.Aborted);
        var letters = await queries.ListDeadLettersAsync(source, request.Options.PageSize, request.Aborted);

        var groups = Layout.Table(
            ["Source", "Dead letters", ""],
            status.Queues.Where(q => q.DeadLetters > 0).Select(q => Layout.Row(
                Html.Of($"""<a href="{request.Link("/dead-letters", ("source", q.Queue))}">{q.Queue}</a>"""),
                DashboardRequest.Count(q.DeadLetters),
                Html.Join([
                    request.Action("/dead-letters/retry", "Retry all", DashboardRequest.Hidden("source", q.Queue), $"Retry all {q.DeadLetters} dead letters of {q.Queue}?"),
                    request.Action("/dead-letters/discard", "Discard all", DashboardRequest.Hidden("source", q.Queue), $"Discard all {q.DeadLetters} dead letters of {q.Queue} for good?", "danger"),
                ]))),
            "No dead letters.",
            "dead-letter-groups");

        var rows = letters.Select(l => Html.Of($"""
            <tr>
            <td>{(request.CanAct ? Html.Of($"""<input type="checkbox" name="id" value="{l.Id}" form="selection" aria-label="select dead letter {l.Id}">""") : Html.Empty)}</td>
            <td><a href="{request.Link("/dead-letters/" + l.Id.ToString(System.Globalization.CultureInfo.InvariantCulture))}">{l.Id}</a></td>
            <td>{l.Source}</td><td>{l.Envelope.MessageType}</td><td>{Layout.Badge(l.Reason)}</td><td>{l.Attempts}</td>
            <td>{l.OrderingKey}</td><td>{request.Ago(l.DeadLetteredAt)}</td>
            <td>{request.Action("/dead-letters/" + l.Id.ToString(System.Globalization.CultureInfo.InvariantCulture) + "/retry", "Retry", kind: "primary")}{request.Action("/dead-letters/" + l.Id.ToString(System.Globalization.CultureInfo.InvariantCulture) + "/discard", "Discard", confirm: $"Discard dead letter {l.Id} for good?", kind: "danger")}</td>
            </tr>
            """));
        var list = Layout.Table(["", "Id", "Source", "Message", "Reason", "Attempts", "Key", "When", ""], rows, "No dead letters here.", "dead-letters");
        var selection = letters.Count > 0 ? request.Action("/dead-letters/retry", "Retry selected", kind: "primary", formId: "selection") : Html.Empty;

        return Layout.Page(request, "/dead-letters", source is null ? "Dead letters" : $"Dead letters of {source}", Html.Of($"""
            <section><h2>By source</h2>{groups}</section>
            <section><h2>Newest first</h2>{selection}{list}</section>
            """));
    }

    public static async Task<Html> ShowAsync(DashboardRequest request, long id)
    {
        var letter = (await request.Store.Queries().ListDeadLettersAsync(null, int.MaxValue, request.Aborted)).FirstOrDefault(l => l.Id == id)
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
