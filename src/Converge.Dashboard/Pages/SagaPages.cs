using System.Text.Json;
using Converge.Dashboard.Rendering;
using Converge.Sagas;
using Converge.Storage;

namespace Converge.Dashboard.Pages;

/// <summary>Saga instances: a filtered list with counts, and one instance with its data, remaining steps and log as a timeline.</summary>
internal static class SagaPages
{
    public static async Task<Html> ListAsync(DashboardRequest request)
    {
        var sagas = Queries(request);
        var definition = request.Query("definition");
        int? version = int.TryParse(request.Query("version"), out var v) ? v : null;
        SagaState? state = SagaStates.TryParse(request.Query("state"), out var s) ? s : null;
        var after = request.Query("after");
        IReadOnlyList<SagaInstance> instances;
        try
        {
            instances = await sagas.QuerySagasAsync(new SagaQuery { Definition = definition, Version = version, State = state, After = after, Max = request.Options.PageSize }, request.Aborted);
        }
        catch (FormatException)
        {
            throw new DashboardNotFoundException($"'{after}' is not a position in this list; start again from the first page.");
        }

        var counts = await sagas.CountSagasAsync(request.Aborted);

        var states = Html.Join(Enum.GetValues<SagaState>().Select(SagaStates.ToText).Prepend("any").Select(name =>
            Html.Of($"""<option value="{(name == "any" ? "" : name)}"{(state is { } current && SagaStates.ToText(current) == name ? Html.Raw(" selected") : Html.Empty)}>{name}</option>""")));
        var definitions = Html.Join(counts.Select(c => c.Definition).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).Prepend("").Select(name =>
            Html.Of($"""<option value="{name}"{(name == definition ? Html.Raw(" selected") : Html.Empty)}>{(name.Length == 0 ? "any" : name)}</option>""")));
        var filter = Html.Of($"""
            <form class="filter" method="get" action="{request.Link("/sagas")}">
            <label>Definition <select name="definition">{definitions}</select></label>
            <label>Version <input name="version" type="number" min="1" value="{version?.ToString(System.Globalization.CultureInfo.InvariantCulture)}"></label>
            <label>State <select name="state">{states}</select></label>
            <button type="submit">Filter</button>
            </form>
            """);

        var list = Layout.Table(
            ["Transaction", "Definition", "State", "Step", "Started", "Changed"],
            instances.Select(i => Layout.Row(
                Html.Of($"""<a href="{request.Link("/sagas/" + Uri.EscapeDataString(i.TransactionId))}">{i.TransactionId}</a>"""),
                $"{i.Definition}@{i.Version}",
                Layout.Badge(SagaStates.ToText(i.State)),
                CurrentStep(i),
                request.Ago(i.StartedAt),
                request.Ago(i.UpdatedAt))),
            "No saga instance matches.",
            "sagas");

        var countTable = Layout.Table(
            ["Definition", "Version", "State", "Instances"],
            counts.OrderBy(c => c.Definition, StringComparer.Ordinal).ThenBy(c => c.Version).ThenBy(c => c.State).Select(c => Layout.Row(
                c.Definition,
                c.Version,
                Html.Of($"""<a href="{request.Link("/sagas", ("definition", c.Definition), ("version", c.Version.ToString(System.Globalization.CultureInfo.InvariantCulture)), ("state", SagaStates.ToText(c.State)))}">{SagaStates.ToText(c.State)}</a>"""),
                DashboardRequest.Count(c.Count))),
            "No saga has started.");

        return Layout.Page(request, "/sagas", "Sagas", Html.Of($"""
            {filter}
            <p class="hint">Most recently started first, {request.Options.PageSize} a page.</p>
            {list}
            {Layout.Next(request, instances.Count == request.Options.PageSize, "/sagas", ("definition", definition), ("version", version?.ToString(System.Globalization.CultureInfo.InvariantCulture)), ("state", state is { } st ? SagaStates.ToText(st) : null), ("after", instances.Count > 0 ? SagaQuery.CursorOf(instances[^1]) : null))}
            <section><h2>Instances by definition, version and state</h2>{countTable}</section>
            """));
    }

    public static async Task<Html> ShowAsync(DashboardRequest request, string transactionId)
    {
        var sagas = Queries(request);
        var instance = await sagas.GetSagaAsync(transactionId, request.Aborted)
            ?? throw new DashboardNotFoundException($"No saga instance has transaction id '{transactionId}'.");
        var log = await sagas.ReadSagaLogAsync(transactionId, request.Aborted);
        var remaining = instance.RemainingSteps();
        var resume = instance.State == SagaState.Stuck
            ? request.Action("/sagas/" + Uri.EscapeDataString(transactionId) + "/resume", "Resume", confirm: $"Send {(instance.Failure is null ? "step" : "the compensation of step")} '{CurrentStep(instance)}' of {transactionId} again?", kind: "primary")
            : Html.Empty;

        var steps = Html.Join(instance.Steps.Select((step, index) => Html.Of(
            $"""<li class="{StepClass(instance, index)}">{step}</li>""")));
        var timeline = Html.Join(log.Select(e => Html.Of($"""
            <li class="event kind-{e.Kind}">
            <span class="offset">+{(e.At - instance.StartedAt).TotalMilliseconds:F0} ms</span>
            <span class="kind">{e.Kind}</span>
            <span class="step">{e.Step}</span>
            <span class="message">{e.MessageType}</span>
            <span class="detail">{e.Detail}</span>
            </li>
            """)));

        return Layout.Page(request, "/sagas", $"Saga {transactionId}", Html.Of($"""
            <p>{instance.Definition}@{instance.Version} {Layout.Badge(SagaStates.ToText(instance.State))} {resume}
            <a href="{request.Link("/flow", ("id", transactionId))}">Flow of this transaction</a></p>
            {Layout.Fields(
                ("Step", instance.State is SagaState.Completed or SagaState.Compensated ? "-" : $"{CurrentStep(instance)} (attempt {instance.StepAttempt})"),
                ("Remaining", remaining.Count == 0 ? "-" : string.Join(", ", remaining)),
                ("Failure", instance.Failure is null ? null : $"step '{instance.FailedStep}': {instance.Failure}"),
                ("Stuck because", instance.StuckReason),
                ("Last error", instance.LastError),
                ("Started", DashboardRequest.Stamp(instance.StartedAt)),
                ("Changed", DashboardRequest.Stamp(instance.UpdatedAt)))}
            <section><h2>Steps</h2><ol class="steps">{steps}</ol></section>
            <section><h2>Timeline</h2><ol class="timeline" id="timeline">{timeline}</ol></section>
            <section><h2>Data</h2><pre>{Data(instance.Data)}</pre></section>
            """));
    }

    internal static string CurrentStep(SagaInstance instance) =>
        instance.StepIndex >= 0 && instance.StepIndex < instance.Steps.Count ? instance.Steps[instance.StepIndex] : "-";

    static string StepClass(SagaInstance instance, int index) => instance.State switch
    {
        SagaState.Completed => "done",
        SagaState.Compensated => index <= instance.StepIndex ? "compensated" : "skipped",
        SagaState.Compensating => index < instance.StepIndex ? "to-compensate" : index == instance.StepIndex ? "current" : "skipped",
        _ => index < instance.StepIndex ? "done" : index == instance.StepIndex ? "current" : "pending",
    };

    static string Data(ReadOnlyMemory<byte> data)
    {
        try
        {
            using var document = JsonDocument.Parse(data);
            return JsonSerializer.Serialize(document.RootElement, Indented);
        }
        catch (JsonException)
        {
            return $"({data.Length} bytes that are not JSON)";
        }
    }

    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    static ISagaQueries Queries(DashboardRequest request) =>
        StoreContracts.Find<ISagaQueries>(request.Store) ?? throw new DashboardNotFoundException($"The {request.Store.Name} store keeps no sagas.");
}
