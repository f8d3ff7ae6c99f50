using System.CommandLine;
using Converge.Choreography;
using Converge.Sagas;
using Converge.Storage;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Converge.Cli;

/// <summary><c>converge flow TXID</c>: every message and event of one business transaction, as a causal tree.</summary>
internal static class FlowCommand
{
    public static Command Create(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var id = new Argument<string>("TXID") { Description = "The business transaction id (the messages' correlation id; a saga's transaction id)." };
        var command = location.AddTo(new Command("flow", "Show every message and event of one business transaction as a causal tree: where each is (queue, log, dead letters), its status, and what a saga did with it.")
        {
            id, json,
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var transactionId = parsed.GetRequiredValue(id);
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var store = opened.Store;
            var saga = await store.SagaQueries().GetSagaAsync(transactionId, cancellationToken);
            var flow = await FlowView.BuildAsync(store, transactionId, cancellationToken);
            if (flow.Count == 0 && saga is null)
            {
                throw new CliException(
                    CliApp.Failure,
                    $"nothing in {opened.Name} carries transaction id '{transactionId}': no message, event or saga instance. Handled messages are forgotten after options.InboxRetention; list saga instances with: converge sagas list {opened.Arguments}");
            }

            var report = new FlowReport(
                opened.Name,
                transactionId,
                saga is null ? null : new SagaReport(saga.Definition, saga.Version, SagaStates.ToText(saga.State), saga.Failure, saga.FailedStep, saga.StuckReason),
                [.. flow.Select(Step)],
                flow.Count);
            return await output.ReportAsync(report, parsed.GetValue(json), Render);
        });
        return command;
    }

    static void Render(IAnsiConsole console, FlowReport report)
    {
        var start = report.Steps.Count > 0 ? report.Steps.Min(s => s.SentAt) : (DateTimeOffset?)null;
        console.Write(new Text($"Flow of {report.TransactionId}: {report.Count} message(s)" + (start is { } at ? $" from {CliOutput.Format(at)}" : "")));
        if (report.Saga is { } saga)
        {
            console.Write(new Text($"; saga {saga.Definition}@{saga.Version} "));
            console.Write(new Text(saga.State, SagaFormat.StateStyle(saga.State)));
            if (saga.Failure is not null)
            {
                console.Write(new Text($" (step '{saga.FailedStep}' failed: {saga.Failure})"));
            }

            if (saga.StuckReason is not null)
            {
                console.Write(new Text($" [stuck: {saga.StuckReason}]"));
            }
        }

        console.WriteLine();
        if (report.Steps.Count == 0)
        {
            console.WriteLine("No message or event carries this transaction id any more (handled messages are forgotten after options.InboxRetention).");
            return;
        }

        var table = CliOutput.Listing("Message", "Where", "Status", "Id", "+ms");
        table.Columns[2].NoWrap();
        table.Columns[3].NoWrap();
        table.Columns[4].NoWrap().RightAligned();
        foreach (var step in report.Steps)
        {
            var indent = new string(' ', Math.Max(0, step.Depth - 1) * 2);
            table.AddRow(
                new Text(step.Depth == 0 ? step.MessageType : $"{indent}└ {step.MessageType}"),
                new Text(step.Where),
                new Text(step.Status, StatusStyle(step.Status)),
                new Text(SagaFormat.ShortId(step.MessageId)),
                new Text(CliOutput.Format(SagaFormat.Milliseconds(step.SentAt - start!.Value))));

            // What the saga did with the message, on rows of their own below it.
            var under = new string(' ', step.Depth * 2) + "· ";
            foreach (var e in step.Saga)
            {
                var style = SagaFormat.KindStyle(e.Kind, e.Detail);
                table.AddRow(new Text(under + (e.Step is null ? e.Kind : $"{e.Kind} {e.Step}"), style), Text.Empty, Text.Empty, Text.Empty, Text.Empty);
            }
        }

        console.Write(table);
        console.WriteLine("Each message is indented under the one whose handling sent it; · lines say what the saga did with it. +ms: sent, after the first message. Ids: last 8 hex digits (--json for full ids).");
    }

    static Style StatusStyle(string status) => status switch
    {
        "dead-lettered" => new Style(Color.Red),
        "pending" => new Style(Color.Yellow),
        _ => Style.Plain,
    };

    static StepReport Step(FlowStep step) => new(
        step.Depth,
        step.Item.MessageId,
        step.Item.MessageType,
        step.Item.CausationId,
        step.Item.Where,
        step.Item.Status,
        step.Item.SentAt,
        step.Item.HandledAt,
        [.. step.Saga.Select(e => new SagaEntryReport(e.Id, e.At, e.Kind, e.Step, e.MessageId, e.MessageType, e.Detail))]);

    internal sealed record FlowReport(string Db, string TransactionId, SagaReport? Saga, IReadOnlyList<StepReport> Steps, int Count);

    internal sealed record SagaReport(string Definition, int Version, string State, string? Failure, string? FailedStep, string? StuckReason);

    internal sealed record StepReport(
        int Depth,
        Guid MessageId,
        string MessageType,
        Guid? CausationId,
        string Where,
        string Status,
        DateTimeOffset SentAt,
        DateTimeOffset? HandledAt,
        IReadOnlyList<SagaEntryReport> Saga);

    internal sealed record SagaEntryReport(long Id, DateTimeOffset At, string Kind, string? Step, Guid? MessageId, string? MessageType, string? Detail);
}
