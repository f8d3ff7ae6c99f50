using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Converge.Contracts;
using Converge.Sagas;
using Converge.Storage;
using Spectre.Console;

namespace Converge.Cli;

/// <summary><c>converge sagas list|show|resume</c>: saga instances, where each stands, what happened to one, and resuming a stuck one.</summary>
internal static class SagaCommands
{
    const string States = "running, compensating, completed, compensated or stuck";

    public static Command Create(CliOutput output) => new("sagas", "List saga instances with counts per definition, version and state, show one instance and its log, or resume a stuck one.")
    {
        List(output),
        Show(output),
        Resume(output),
    };

    static Command List(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var state = new Option<string>("--state") { Description = $"Only instances in this state: {States}.", HelpName = "STATE" };
        state.Validators.Add(result =>
        {
            var text = result.GetValueOrDefault<string>();
            if (!SagaStates.TryParse(text, out _))
            {
                result.AddError($"--state '{text}' is not a saga state; use {States}.");
            }
        });
        var definition = new Option<string>("--definition") { Description = "Only instances of this saga definition (its Name).", HelpName = "NAME" };
        var version = new Option<int?>("--version") { Description = "Only instances on this definition version.", HelpName = "N" };
        version.Validators.Add(result =>
        {
            if (result.ParsedNullable<int>() is < 1)
            {
                result.AddError("--version must be at least 1.");
            }
        });
        var max = new Option<int>("--max") { Description = "Show at most this many, most recently started first.", HelpName = "N", DefaultValueFactory = _ => 50 };
        max.Validators.Add(result =>
        {
            if (result.Parsed<int>() < 1)
            {
                result.AddError("--max must be at least 1.");
            }
        });

        var command = location.AddTo(new Command("list", "List saga instances, most recently started first: state, current step, when started and last changed (after the start); then counts per definition, version and state.")
        {
            state, definition, version, max, json,
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var store = opened.Store;
            SagaState? wanted = parsed.GetValue(state) is { } text ? SagaStates.Parse(text) : null;
            var name = parsed.GetValue(definition);
            var number = parsed.GetValue(version);
            var sagas = await store.SagaQueries().QuerySagasAsync(new SagaQuery { State = wanted, Definition = name, Version = number, Max = parsed.GetValue(max) }, cancellationToken);
            var counts = (await store.SagaQueries().CountSagasAsync(cancellationToken))
                .Where(c => (wanted is null || c.State == wanted) && (name is null || c.Definition == name) && (number is null || c.Version == number))
                .OrderBy(c => c.Definition, StringComparer.Ordinal).ThenBy(c => c.Version).ThenBy(c => c.State)
                .Select(c => new CountReport(c.Definition, c.Version, SagaStates.ToText(c.State), c.Count))
                .ToList();
            var report = new ListReport(
                opened.Name,
                new FilterReport(wanted is { } s ? SagaStates.ToText(s) : null, name, number),
                counts,
                [.. sagas.Select(Summary)],
                sagas.Count,
                counts.Sum(c => c.Count));
            if (parsed.GetValue(json))
            {
                await output.WriteJsonAsync(report);
                return CliApp.Success;
            }

            RenderList(output.Console(), report, opened.Arguments);
            return CliApp.Success;
        });
        return command;
    }

    static void RenderList(IAnsiConsole console, ListReport report, string storeArguments)
    {
        var filtered = report.Filter.State is not null || report.Filter.Definition is not null || report.Filter.Version is not null;
        if (report.Sagas.Count == 0)
        {
            console.WriteLine(filtered ? "No saga instances match." : "No saga instances.");
            return;
        }

        var table = CliOutput.Listing("Transaction id", "Saga", "State", "Step", "Started (UTC)", "Updated");
        foreach (var column in table.Columns.Skip(2))
        {
            column.NoWrap();
        }
        foreach (var s in report.Sagas)
        {
            table.AddRow(
                new Text(s.TransactionId),
                new Text($"{s.Definition}@{s.Version}"),
                new Text(s.State, SagaFormat.StateStyle(s.State)),
                new Text(s.CurrentStep ?? "-"),
                new Text(s.StartedAt.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture)),
                new Text("+" + SagaFormat.Duration(s.UpdatedAt - s.StartedAt)));
        }

        console.Write(table);

        var totals = CliOutput.Listing("Saga", "Running", "Compensating", "Stuck", "Completed", "Compensated", "Total");
        foreach (var column in totals.Columns.Skip(1))
        {
            column.RightAligned();
        }
        foreach (var saga in report.Counts.GroupBy(c => (c.Definition, c.Version)))
        {
            long Of(string state) => saga.Where(c => c.State == state).Sum(c => c.Count);
            CliOutput.AddRow(totals, $"{saga.Key.Definition}@{saga.Key.Version}", Of("running"), Of("compensating"), Of("stuck"), Of("completed"), Of("compensated"), saga.Sum(c => c.Count));
        }

        console.Write(totals);
        console.WriteLine(report.Total > report.Count
            ? $"Showing the newest {report.Count} of {report.Total}{(filtered ? " matching" : "")}; pass --max to see more."
            : $"{report.Count} saga instance(s){(filtered ? " match" : "")}. Show one with: converge sagas show {storeArguments} TXID");
        if (report.Sagas.Any(s => s.State == "stuck"))
        {
            console.WriteLine($"Stuck instances wait for an operator: fix the participant, then run: converge sagas resume {storeArguments} TXID");
        }
    }

    /// <summary>The instance <paramref name="transactionId"/>, or a failure (exit 1) that says where to look instead.</summary>
    static async Task<SagaInstance> FindAsync(OpenedStore opened, string transactionId, string hint, CancellationToken cancellationToken) =>
        await opened.Store.SagaQueries().GetSagaAsync(transactionId, cancellationToken)
            ?? throw new CliException(CliApp.Failure, $"no saga instance has transaction id '{transactionId}' in {opened.Name}; {hint} {opened.Arguments}");

    static Command Show(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var id = new Argument<string>("TXID") { Description = "The saga instance's transaction id, as 'converge sagas list' shows it." };
        var command = location.AddTo(new Command("show", "Show one saga instance (state, step, failure, data, remaining steps) and its log as a timeline, in milliseconds after the start.")
        {
            id, json,
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var transactionId = parsed.GetRequiredValue(id);
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var store = opened.Store;
            var instance = await FindAsync(opened, transactionId, "list them with: converge sagas list", cancellationToken);
            var log = await store.SagaQueries().ReadSagaLogAsync(transactionId, cancellationToken);
            var report = Detail(opened.Name, instance, log);
            return await output.ReportAsync(report, parsed.GetValue(json), RenderShow);
        });
        return command;
    }

    static void RenderShow(IAnsiConsole console, ShowReport report)
    {
        console.Write(new Text($"Saga {report.TransactionId}: {report.Definition}@{report.Version}, ", Style.Plain));
        console.Write(new Text(report.State, SagaFormat.StateStyle(report.State)));
        console.WriteLine();
        var fields = new Grid();
        fields.AddColumn(new GridColumn().NoWrap().PadRight(2));
        fields.AddColumn(new GridColumn());
        void Field(string name, string? value) => fields.AddRow(new Text(name), new Text(value ?? "-"));
        Field("Step", report.CurrentStep is null ? null : $"{report.CurrentStep} ({report.StepIndex + 1} of {report.Steps.Count}, attempt {report.Attempt})");
        Field("Steps", string.Join(", ", report.Steps));
        Field("Remaining", report.RemainingSteps.Count == 0 ? null : string.Join(", ", report.RemainingSteps));
        Field("Awaiting", report.Awaiting is { } awaiting ? SagaFormat.ShortId(awaiting) : null);
        Field("Failure", report.Failure is null ? null : $"step '{report.FailedStep}': {report.Failure}");
        if (report.StuckReason is not null)
        {
            Field("Stuck", report.StuckReason);
        }

        Field("Last error", report.LastError);
        Field("Started", CliOutput.Format(report.StartedAt));
        Field("Updated", $"{CliOutput.Format(report.UpdatedAt)} (+{SagaFormat.Duration(report.UpdatedAt - report.StartedAt)})");
        Field("Concurrency version", report.ConcurrencyVersion.ToString(CultureInfo.InvariantCulture));
        Field("Data", report.Data is { } data ? data.GetRawText() : null);
        console.Write(fields);

        if (report.Log.Count == 0)
        {
            console.WriteLine("Log: empty.");
            return;
        }

        var timeline = CliOutput.Listing("+ms", "Kind", "Step", "Message", "Id", "Detail");
        timeline.Columns[0].RightAligned().NoWrap();
        timeline.Columns[1].NoWrap();
        timeline.Columns[4].NoWrap();
        foreach (var e in report.Log)
        {
            var style = SagaFormat.KindStyle(e.Kind, e.Detail);
            timeline.AddRow(
                new Text(CliOutput.Format(e.OffsetMs), style),
                new Text(e.Kind, style),
                new Text(e.Step ?? "-", style),
                new Text(e.MessageType ?? "-", style),
                new Text(e.MessageId is { } m ? SagaFormat.ShortId(m) : "-", style),
                new Text(SagaFormat.ShortenIds(e.Detail) ?? "-", style));
        }

        console.Write(timeline);
        console.WriteLine($"{report.Log.Count} log entries; ids show their last 8 hex digits (--json for the full ids).");
    }

    static Command Resume(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var id = new Argument<string>("TXID") { Description = "The stuck saga instance's transaction id, as 'converge sagas list --state stuck' shows it." };
        var command = location.AddTo(new Command(
            "resume",
            "Resume a stuck saga instance once its participant is fixed: the application's process sends the step (or compensation) it gave up on again, counting attempts from 1. The request waits on the saga's queue until that process handles it.")
        {
            id, json,
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var transactionId = parsed.GetRequiredValue(id);
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var store = opened.Store;
            var instance = await FindAsync(opened, transactionId, "list the stuck ones with: converge sagas list --state stuck", cancellationToken);
            if (instance.State != SagaState.Stuck)
            {
                throw new CliException(CliApp.Failure, $"saga '{transactionId}' is {SagaStates.ToText(instance.State)}, not stuck, so there is nothing to resume; see where it stands with: converge sagas show {opened.Arguments} {transactionId}");
            }

            // The definitions live in the application, not here: ask its saga engine, through the saga's queue.
            string queue;
            Guid requestId;
            await using (var transaction = await store.BeginAsync(cancellationToken))
            {
                (queue, requestId) = await SagaResumeRequested.EnqueueAsync(transaction, instance, "converge sagas resume", CliApp.Clock.GetUtcNow(), cancellationToken);
                await transaction.CommitAsync(cancellationToken);
            }

            var report = new ResumeReport(opened.Name, transactionId, instance.Definition, instance.Version, SagaFormat.CurrentStep(instance), instance.Failure is not null, instance.StuckReason, instance.LastError, queue, requestId);
            return await output.ReportAsync(report, parsed.GetValue(json), (console, r) =>
            {
                var what = r.Compensating ? $"the compensation of step '{r.Step}'" : $"step '{r.Step}'";
                console.WriteLine($"Resume of saga {r.TransactionId} ({r.Definition}@{r.Version}) requested: its application sends {what} again, counting attempts from 1, when it handles the request on queue '{r.Queue}'.");
                console.WriteLine($"Was stuck because {r.StuckReason ?? "-"}; last error: {r.LastError ?? "-"}.");
                console.WriteLine($"Follow it with: converge sagas show {opened.Arguments} {r.TransactionId}");
            });
        });
        return command;
    }

    static SagaSummary Summary(SagaInstance s) =>
        new(s.TransactionId, s.Definition, s.Version, SagaStates.ToText(s.State), SagaFormat.CurrentStep(s), s.StepIndex, s.StartedAt, s.UpdatedAt, s.Failure, s.FailedStep, s.StuckReason, s.LastError);

    static ShowReport Detail(string db, SagaInstance s, IReadOnlyList<SagaLogEntry> log) => new(
        db,
        s.TransactionId,
        s.Definition,
        s.Version,
        SagaStates.ToText(s.State),
        SagaFormat.CurrentStep(s),
        s.StepIndex,
        s.Steps,
        s.RemainingSteps(),
        s.StepAttempt,
        s.Awaiting,
        s.Failure,
        s.FailedStep,
        s.StuckReason,
        s.LastError,
        SagaFormat.Data(s.Data),
        s.ConcurrencyVersion,
        s.StartedAt,
        s.UpdatedAt,
        [.. log.Select(e => new LogReport(e.Id, e.At, SagaFormat.Milliseconds(e.At - s.StartedAt), e.Kind, e.Step, e.MessageId, e.MessageType, e.Detail))],
        log.Count);

    internal sealed record FilterReport(string? State, string? Definition, int? Version);

    internal sealed record CountReport(string Definition, int Version, string State, long Count);

    internal sealed record SagaSummary(
        string TransactionId,
        string Definition,
        int Version,
        string State,
        string? CurrentStep,
        int StepIndex,
        DateTimeOffset StartedAt,
        DateTimeOffset UpdatedAt,
        string? Failure,
        string? FailedStep,
        string? StuckReason,
        string? LastError);

    internal sealed record ListReport(string Db, FilterReport Filter, IReadOnlyList<CountReport> Counts, IReadOnlyList<SagaSummary> Sagas, int Count, long Total);

    internal sealed record ResumeReport(string Db, string TransactionId, string Definition, int Version, string? Step, bool Compensating, string? StuckReason, string? LastError, string Queue, Guid RequestId);

    internal sealed record LogReport(long Id, DateTimeOffset At, long OffsetMs, string Kind, string? Step, Guid? MessageId, string? MessageType, string? Detail);

    internal sealed record ShowReport(
        string Db,
        string TransactionId,
        string Definition,
        int Version,
        string State,
        string? CurrentStep,
        int StepIndex,
        IReadOnlyList<string> Steps,
        IReadOnlyList<string> RemainingSteps,
        int Attempt,
        Guid? Awaiting,
        string? Failure,
        string? FailedStep,
        string? StuckReason,
        string? LastError,
        JsonElement? Data,
        long ConcurrencyVersion,
        DateTimeOffset StartedAt,
        DateTimeOffset UpdatedAt,
        IReadOnlyList<LogReport> Log,
        int Count);
}

/// <summary>How saga states, log entries, ids and durations are shown, shared by <c>sagas</c> and <c>flow</c>.</summary>
internal static partial class SagaFormat
{
    /// <summary>
    /// The last 8 hex digits of an id. Not the first: a version 7 id starts with its timestamp, which messages sent
    /// in the same minute share.
    /// </summary>
    public static string ShortId(Guid id) => id.ToString("N")[^8..];

    /// <summary>Full ids (32 hex digits) in free text, such as a saga log detail, shortened as <see cref="ShortId"/> does.</summary>
    public static string? ShortenIds(string? text) => text is null ? null : FullId().Replace(text, m => m.Value[^8..]);

    [GeneratedRegex("\\b[0-9a-f]{32}\\b")]
    private static partial Regex FullId();

    /// <summary>The step in progress (forward, or being compensated); <c>null</c> once the instance has ended.</summary>
    public static string? CurrentStep(SagaInstance instance) =>
        !SagaStates.IsEnded(instance.State) && instance.StepIndex >= 0 && instance.StepIndex < instance.Steps.Count ? instance.Steps[instance.StepIndex] : null;

    /// <summary>Whole milliseconds, rounded down.</summary>
    public static long Milliseconds(TimeSpan span) => (long)Math.Floor(span.TotalMilliseconds);

    /// <summary>A short duration: <c>850ms</c>, <c>2.4s</c>, <c>3m05s</c>, <c>2h10m</c>, <c>3d04h</c>.</summary>
    public static string Duration(TimeSpan span)
    {
        if (span < TimeSpan.Zero)
        {
            span = TimeSpan.Zero;
        }

        return span.TotalSeconds < 1 ? $"{Milliseconds(span)}ms"
            : span.TotalMinutes < 1 ? (Math.Floor(span.TotalSeconds * 10) / 10).ToString("0.0", CultureInfo.InvariantCulture) + "s"
            : span.TotalHours < 1 ? string.Create(CultureInfo.InvariantCulture, $"{(int)span.TotalMinutes}m{span.Seconds:00}s")
            : span.TotalDays < 1 ? string.Create(CultureInfo.InvariantCulture, $"{(int)span.TotalHours}h{span.Minutes:00}m")
            : string.Create(CultureInfo.InvariantCulture, $"{(int)span.TotalDays}d{span.Hours:00}h");
    }

    /// <summary>The saga data as JSON: itself when it is JSON, else its text as a JSON string; <c>null</c> when empty.</summary>
    public static JsonElement? Data(ReadOnlyMemory<byte> data)
    {
        if (data.IsEmpty)
        {
            return null;
        }

        try
        {
            using var document = JsonDocument.Parse(data);
            return document.RootElement.Clone();
        }
        catch (JsonException)
        {
            return JsonSerializer.SerializeToElement(Encoding.UTF8.GetString(data.Span));
        }
    }

    public static Style StateStyle(string state) => state switch
    {
        "completed" => new Style(Color.Green),
        "compensating" or "compensated" => new Style(Color.Yellow),
        "stuck" => new Style(Color.Red),
        _ => Style.Plain,
    };

    /// <summary>Failures red, compensation yellow, ignored replies grey, injected faults purple, completion green.</summary>
    public static Style KindStyle(string kind, string? detail) => kind switch
    {
        SagaLogKinds.StepFailed or SagaLogKinds.TimeoutFired => new Style(Color.Red),
        SagaLogKinds.ReplyReceived when detail?.StartsWith("failure", StringComparison.Ordinal) == true => new Style(Color.Red),
        SagaLogKinds.CompensationSent => new Style(Color.Yellow),
        SagaLogKinds.ReplyReceived when detail?.StartsWith("compensated", StringComparison.Ordinal) == true => new Style(Color.Yellow),
        SagaLogKinds.StateChanged when detail?.Contains("-> stuck", StringComparison.Ordinal) == true => new Style(Color.Red),
        SagaLogKinds.StateChanged when detail?.EndsWith("completed", StringComparison.Ordinal) == true => new Style(Color.Green),
        SagaLogKinds.StateChanged when detail?.Contains("compensat", StringComparison.Ordinal) == true => new Style(Color.Yellow),
        SagaLogKinds.ReplyIgnored => new Style(Color.Grey),
        SagaLogKinds.FaultInjected => new Style(Color.Fuchsia),
        _ => Style.Plain,
    };
}
