using System.CommandLine;
using Converge.Storage;
using Spectre.Console;

namespace Converge.Cli;

/// <summary><c>converge status</c>: queue depths, dead letters, log head, consumer-group lag and inbox size.</summary>
internal static class StatusCommand
{
    public static Command Create(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var command = location.AddTo(new Command("status", "Show queue depths (ready, scheduled, in flight, dead letters), the log head, consumer-group lag and inbox records.")
        {
            json,
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var status = await opened.Store.Queries().GetStatusAsync(cancellationToken);
            var report = new StatusReport(
                opened.Name,
                opened.SchemaVersion,
                [.. status.Queues.Select(q => new QueueReport(q.Queue, q.Ready, q.Scheduled, q.InFlight, q.DeadLetters, q.Stranded))],
                status.DeadLetters,
                status.LogPosition,
                [.. status.ConsumerGroups.Select(g => new GroupReport(g.Group, g.Position, g.Lag, g.FailedAttempts, g.LastError, g.Paused))],
                status.InboxRecords)
            {
                HeldKeys = [.. status.HeldKeys.Select(h => new HeldKeyReport(h.Queue, h.Key, h.DeadLetters, h.Waiting))],
            };
            return await output.ReportAsync(report, parsed.GetValue(json), Render);
        });
        return command;
    }

    static void Render(IAnsiConsole console, StatusReport report)
    {
        console.WriteLine($"Store {report.Db} (schema version {report.SchemaVersion})");
        var queues = CliOutput.Table("Queue", "Ready", "Scheduled", "In flight", "Dead letters");
        foreach (var q in report.Queues)
        {
            CliOutput.AddRow(queues, q.Queue, q.Ready, q.Scheduled, q.InFlight, q.DeadLetters);
        }

        if (report.Queues.Count == 0)
        {
            console.WriteLine("Queues: none hold messages or dead letters.");
        }
        else
        {
            console.Write(queues);
        }

        foreach (var q in report.Queues.Where(q => q.Stranded > 0))
        {
            // Not a column: such rows come from outside Converge, and a line that names them is hard to miss.
            console.WriteLine($"Stranded: queue '{q.Queue}' holds {q.Stranded} row(s) no consumer will ever claim: their visible_at is more than 100 years ahead or not a number, which Converge never writes. Find them with SQL (the queue table's rows WHERE queue = '{q.Queue}'), then fix their visible_at or delete them.");
        }

        if (report.HeldKeys.Count > 0)
        {
            // Held keys stop their messages silently: the table says what waits and how to release it.
            var held = CliOutput.Table("Queue", "Held key", "Dead letters", "Waiting behind");
            foreach (var h in report.HeldKeys)
            {
                CliOutput.AddRow(held, h.Queue, h.Key, h.DeadLetters, h.Waiting);
            }

            console.Write(held);
            console.WriteLine($"{report.HeldKeys.Count} ordering key(s) held by dead letters; their messages wait. Release one with: converge dead-letters retry --key KEY --source QUEUE (or discard --key).");
        }

        var summary = CliOutput.Table("Dead letters (all)", "Log head", "Inbox records");
        CliOutput.AddRow(summary, report.DeadLetters, report.LogPosition, report.InboxRecords);
        console.Write(summary);

        if (report.ConsumerGroups.Count == 0)
        {
            console.WriteLine("Consumer groups: none has a checkpoint yet.");
            return;
        }

        var groups = CliOutput.Table("Consumer group", "Position", "Lag", "Failed attempts", "Last error");
        foreach (var g in report.ConsumerGroups)
        {
            CliOutput.AddRow(groups, g.Group, g.Position, g.Lag, g.FailedAttempts, g.LastError);
        }

        console.Write(groups);
    }

    internal sealed record StatusReport(
        string Db,
        int SchemaVersion,
        IReadOnlyList<QueueReport> Queues,
        long DeadLetters,
        long LogPosition,
        IReadOnlyList<GroupReport> ConsumerGroups,
        long InboxRecords)
    {
        /// <summary>Ordering keys held by dead letters, and how many messages wait behind each.</summary>
        public IReadOnlyList<HeldKeyReport> HeldKeys { get; init; } = [];
    }

    internal sealed record HeldKeyReport(string Queue, string Key, long DeadLetters, long Waiting);

    // Stranded: rows whose visible_at no consumer will reach (QueueStatus.Stranded).
    internal sealed record QueueReport(string Queue, long Ready, long Scheduled, long InFlight, long DeadLetters, long Stranded);

    internal sealed record GroupReport(string Group, long Position, long Lag, int FailedAttempts, string? LastError, bool Paused);
}
