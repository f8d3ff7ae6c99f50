using System.CommandLine;
using Converge.Storage;
using Spectre.Console;

namespace Converge.Cli;

/// <summary><c>converge groups list|reset|pause|resume|delete</c>: the log's consumer groups, where each stands, moving one, and stopping one for a while.</summary>
internal static class GroupCommands
{
    public static Command Create(CliOutput output) => new("groups", "List the log's consumer groups with their position and lag, move one (rewind it to replay events, or skip it to the head), pause and resume one, or forget one no application runs.")
    {
        List(output),
        Reset(output),
        Pause(output, paused: true),
        Pause(output, paused: false),
        Delete(output),
    };

    static Command List(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var command = location.AddTo(new Command("list", "List every consumer group that has a checkpoint: its position, its lag behind the log's head, and its failures.")
        {
            json,
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var status = await opened.Store.Queries().GetStatusAsync(cancellationToken);
            var report = new GroupsReport(status.LogPosition, [.. status.ConsumerGroups.Select(g => new StatusCommand.GroupReport(g.Group, g.Position, g.Lag, g.FailedAttempts, g.LastError, g.Paused))]);
            return await output.ReportAsync(report, parsed.GetValue(json), Render);
        });
        return command;
    }

    static void Render(IAnsiConsole console, GroupsReport report)
    {
        console.WriteLine($"Log head: {report.LogPosition}");
        if (report.Groups.Count == 0)
        {
            console.WriteLine("Consumer groups: none has a checkpoint yet.");
            return;
        }

        var table = CliOutput.Table("Group", "Position", "Lag", "State", "Failed attempts", "Last error");
        foreach (var group in report.Groups)
        {
            CliOutput.AddRow(table, group.Group, group.Position, group.Lag, group.Paused ? "paused" : "running", group.FailedAttempts, group.LastError ?? string.Empty);
        }

        console.Write(table);
    }

    static Command Pause(CliOutput output, bool paused)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var group = new Argument<string>("group") { Description = "The consumer group's name (a projection version's is projection:NAME@VERSION)." };
        var create = new Option<bool>("--create") { Description = "Pause a group that has no checkpoint yet (it never ran): it gets one at position 0, paused." };
        var command = location.AddTo(paused
            ? new Command("pause", "Pause a consumer group: its runners, in every process, finish the batch they are handling and start no other until it is resumed (they look within their poll interval). The checkpoint stays where it is; the log keeps growing, so the lag grows.") { group, create, json }
            : new Command("resume", "Resume a paused consumer group: its runners go on from its checkpoint within their poll interval.") { group, json });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var name = parsed.GetValue(group)!;
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var store = opened.Store;
            var before = await store.GetConsumerGroupAsync(name, cancellationToken);
            if (before is null && !paused)
            {
                throw new CliException(CliApp.Failure, $"Consumer group '{name}' has no checkpoint, so it is not paused; converge groups list shows the groups there are.");
            }

            if (before is null && !parsed.GetValue(create))
            {
                throw new CliException(CliApp.Failure, $"Consumer group '{name}' has no checkpoint: it never ran, or the name is mistyped (converge groups list shows the groups there are; a projection version's group is projection:NAME@VERSION). To pause it before it first runs, pass --create.");
            }

            await using (var transaction = await store.BeginAsync(cancellationToken))
            {
                await transaction.ConsumerGroups().SetConsumerGroupPausedAsync(name, paused, cancellationToken);
                await transaction.CommitAsync(cancellationToken);
            }

            var report = new GroupPauseReport(name, paused, before?.Paused ?? false, before is null, before?.Position ?? 0);
            return await output.ReportAsync(report, parsed.GetValue(json), (console, r) =>
                console.WriteLine((r.Paused, r.WasPaused, r.Created) switch
                {
                    (true, _, true) => $"Consumer group '{r.Group}' had no checkpoint: it now has one at position 0, paused (converge groups reset {r.Group} --head would start it at the head instead).",
                    (true, true, _) => $"Consumer group '{r.Group}' was already paused, at position {r.Position}.",
                    (true, false, _) => $"Consumer group '{r.Group}' paused at position {r.Position}: its runners stop after the batch they are handling.",
                    (false, false, _) => $"Consumer group '{r.Group}' was not paused; it runs from position {r.Position}.",
                    (false, true, _) => $"Consumer group '{r.Group}' resumed from position {r.Position}.",
                }));
        });
        return command;
    }

    static Command Delete(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var group = new Argument<string>("group") { Description = "The consumer group's name." };
        var command = location.AddTo(new Command("delete", "Forget a consumer group's checkpoint: for a group no application runs any more (a typo, a retired subscriber). A group still running somewhere starts again where its configuration says (by default from the start of the log). A projection version's group goes with converge projections drop instead.") { group, json });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var name = parsed.GetValue(group)!;
            if (name.StartsWith("projection:", StringComparison.Ordinal))
            {
                throw new CliException(CliApp.Usage, $"'{name}' is a projection version's group: drop the version with converge projections drop, which removes its tables too.");
            }

            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            bool deleted;
            await using (var transaction = await opened.Store.BeginAsync(cancellationToken))
            {
                deleted = await transaction.ConsumerGroups().DeleteConsumerGroupAsync(name, cancellationToken);
                await transaction.CommitAsync(cancellationToken);
            }

            if (!deleted)
            {
                throw new CliException(CliApp.Failure, $"Consumer group '{name}' has no checkpoint; converge groups list shows the groups there are.");
            }

            return await output.ReportAsync(new GroupDeleteReport(name), parsed.GetValue(json), (console, r) =>
                console.WriteLine($"Consumer group '{r.Group}' is forgotten: its checkpoint is gone."));
        });
        return command;
    }

    static Command Reset(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var group = new Argument<string>("group") { Description = "The consumer group's name." };
        var to = new Option<long?>("--to") { Description = "The position to move to: the group handles the events after it next (0 replays the whole log).", HelpName = "POSITION" };
        var head = new Option<bool>("--head") { Description = "Move to the log's head: the group skips every event there is now." };
        var command = location.AddTo(new Command("reset", "Move a consumer group's checkpoint: back to replay events, or forward to skip them. A running group picks the new position up within its poll interval (its batch in progress, if any, is rolled back); a group that never ran starts there. Its failure count is cleared.")
        {
            group, to, head, json,
        });
        command.Validators.Add(result =>
        {
            var position = result.GetValue(to);
            if (position is null == !result.GetValue(head))
            {
                result.AddError("Give either --to POSITION or --head.");
            }
            else if (position is < 0)
            {
                result.AddError("--to must be 0 or more.");
            }
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var name = parsed.GetValue(group)!;
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var store = opened.Store;
            var logHead = (await store.Queries().GetStatusAsync(cancellationToken)).LogPosition;
            var target = parsed.GetValue(head) ? logHead : parsed.GetValue(to)!.Value;
            if (target > logHead)
            {
                throw new CliException(CliApp.Usage, $"Position {target} is beyond the log's head ({logHead}); give --to between 0 and {logHead}, or --head.");
            }

            // A running group may save its own position between the read and the write; the target is absolute, so
            // reading again and retrying is safe.
            ConsumerGroupState? before = null;
            for (var attempt = 1; ; attempt++)
            {
                before = await store.GetConsumerGroupAsync(name, cancellationToken);
                await using var transaction = await store.BeginAsync(cancellationToken);
                if (await transaction.SaveConsumerGroupAsync(name, before?.Position ?? 0, target, 0, null, cancellationToken))
                {
                    await transaction.CommitAsync(cancellationToken);
                    break;
                }

                if (attempt == 10)
                {
                    throw new CliException(CliApp.Failure, $"Consumer group '{name}' kept moving while it was being reset (it is running and busy); run the command again.");
                }
            }

            var report = new GroupResetReport(name, before?.Position, target, logHead);
            return await output.ReportAsync(report, parsed.GetValue(json), (console, r) =>
                console.WriteLine(r.From is { } from
                    ? $"Consumer group '{r.Group}' moved from {from} to {r.To}: it handles the {r.Head - r.To} event(s) after {r.To} next."
                    : $"Consumer group '{r.Group}' had no checkpoint; it starts after {r.To} ({r.Head - r.To} event(s) to handle)."));
        });
        return command;
    }
}

internal sealed record GroupDeleteReport(string Group);

internal sealed record GroupPauseReport(string Group, bool Paused, bool WasPaused, bool Created, long Position);

internal sealed record GroupsReport(long LogPosition, IReadOnlyList<StatusCommand.GroupReport> Groups);

internal sealed record GroupResetReport(string Group, long? From, long To, long Head);
