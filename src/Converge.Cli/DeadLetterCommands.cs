using System.CommandLine;
using Converge.Contracts;
using Converge.Storage;
using Spectre.Console;

namespace Converge.Cli;

/// <summary><c>converge dead-letters list|retry|discard</c>.</summary>
internal static class DeadLetterCommands
{
    public static Command Create(CliOutput output) => new("dead-letters", "List dead letters, put them back on their queues, or discard them.")
    {
        List(output),
        Act(output, "retry", "Move dead letters back onto their queues with a fresh attempt count (after fixing the cause).", retry: true),
        Act(output, "discard", "Delete dead letters for good.", retry: false),
    };

    static Command List(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var source = new Option<string>("--source") { Description = "Only dead letters from this queue (or log:GROUP for parked events).", HelpName = "QUEUE" };
        var max = new Option<int>("--max") { Description = "Show at most this many, newest first.", HelpName = "N", DefaultValueFactory = _ => 50 };
        max.Validators.Add(result =>
        {
            if (result.Parsed<int>() < 1)
            {
                result.AddError("--max must be at least 1.");
            }
        });

        var command = location.AddTo(new Command("list", "List dead letters, newest first: why, how often tried, and the last error.") { source, max, json });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var store = opened.Store;
            var from = parsed.GetValue(source);
            var limit = parsed.GetValue(max);
            var letters = await store.Queries().ListDeadLettersAsync(from, limit, cancellationToken);
            long? total = from is null ? (await store.Queries().GetStatusAsync(cancellationToken)).DeadLetters : null;
            var report = new ListReport(opened.Name, from, [.. letters.Select(Entry)], letters.Count, total);
            if (parsed.GetValue(json))
            {
                await output.WriteJsonAsync(report);
                return CliApp.Success;
            }

            var console = output.Console();
            if (letters.Count == 0)
            {
                console.WriteLine(from is null ? "No dead letters." : $"No dead letters from '{from}'.");
                return CliApp.Success;
            }

            var table = CliOutput.Table("Id", "Source", "Message type", "Reason", "Attempts", "Dead-lettered at", "Message id", "Correlation id", "Last error");
            foreach (var e in report.DeadLetters)
            {
                CliOutput.AddRow(table, e.Id, e.Source, e.MessageType, e.Reason, e.Attempts, e.DeadLetteredAt, e.MessageId, e.CorrelationId, e.LastError);
            }

            console.Write(table);
            console.WriteLine(total is { } all && all > letters.Count
                ? $"Showing the newest {letters.Count} of {all}; pass --max to see more."
                : $"{letters.Count} dead letter(s). Retry with: converge dead-letters retry {opened.Arguments} ID (or --all)");
            return CliApp.Success;
        });
        return command;
    }

    static Command Act(CliOutput output, string name, string description, bool retry)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var id = new Argument<long?>("ID") { Description = "The dead letter's id, as 'converge dead-letters list' shows it.", Arity = ArgumentArity.ZeroOrOne };
        var all = new Option<bool>("--all") { Description = $"{(retry ? "Retry" : "Discard")} every dead letter (of --source, when given)." };
        var source = new Option<string>("--source", "--queue") { Description = "With --all or --key: only dead letters from this queue (or log:GROUP).", HelpName = "QUEUE" };
        var key = new Option<string>("--key")
        {
            Description = retry
                ? "Retry every dead letter of this ordering key (of --source, when given), in their original order: they go back ahead of the messages their key held, which follow once none is left."
                : "Discard every dead letter of this ordering key (of --source, when given): the messages their key held go on.",
            HelpName = "KEY",
        };
        var command = location.AddTo(new Command(name, description) { id, all, key, source, json });
        command.Validators.Add(result =>
        {
            // Tokens, not the value: an ID that is not a number is reported by the parser, and reading it would throw.
            var hasId = result.GetResult(id) is { Tokens.Count: > 0 };
            var hasAll = result.GetValue(all);
            var hasKey = result.GetResult(key) is { Tokens.Count: > 0 };
            var chosen = (hasId ? 1 : 0) + (hasAll ? 1 : 0) + (hasKey ? 1 : 0);
            if (chosen != 1)
            {
                result.AddError(chosen > 1
                    ? $"Pass one of an ID, --all or --key, not several."
                    : $"Say which dead letters to {name}: an ID (as 'converge dead-letters list' shows it), --key KEY, or --all.");
            }
            else if (hasKey && string.IsNullOrWhiteSpace(result.GetValue(key)))
            {
                result.AddError("--key needs an ordering key that is not empty.");
            }
            else if (hasId && result.GetValue(source) is not null)
            {
                result.AddError("--source selects dead letters for --all or --key; with an ID, leave it out.");
            }
        });

        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var report = parsed.GetValue(id) is { } one
                ? await OneAsync(opened, name, retry, one, cancellationToken)
                : await AllAsync(opened.Store, name, retry, parsed.GetValue(source), parsed.GetValue(key), cancellationToken);
            await RecordAsync(opened.Store, retry, parsed.GetValue(id) is not null, report, cancellationToken);
            if (parsed.GetValue(json))
            {
                await output.WriteJsonAsync(report);
            }
            else
            {
                var console = output.Console();
                var verb = retry ? "Moved back to its queue" : "Discarded";
                if (report.Letters.Count == 0 && report.Skipped.Count == 0)
                {
                    var ofKey = report.Key is null ? "" : $" of key '{report.Key}'";
                    console.WriteLine(report.Source is null ? $"No dead letters{ofKey} to {name}." : $"No dead letters{ofKey} from '{report.Source}' to {name}.");
                }
                else
                {
                    var table = CliOutput.Table("Id", "Source", "Result");
                    foreach (var letter in report.Letters)
                    {
                        CliOutput.AddRow(table, letter.Id, letter.Source, verb);
                    }

                    foreach (var skipped in report.Skipped)
                    {
                        CliOutput.AddRow(table, skipped.Id, skipped.Source, skipped.Why);
                    }

                    console.Write(table);
                    console.WriteLine($"{report.Count} dead letter(s) {(retry ? "retried" : "discarded")}, {report.Skipped.Count} skipped.");
                }
            }

            return CliApp.Success;
        });
        return command;
    }

    static async Task<ActionReport> OneAsync(OpenedStore opened, string name, bool retry, long id, CancellationToken cancellationToken)
    {
        var store = opened.Store;

        // Look the letter up first, so a failure says exactly why (unknown, or a parked event that has no queue). By id
        // when the store can; listing every dead letter to find one is slow with many of them.
        var letter = (StoreContracts.Find<IDeadLetterQueries>(store) is { } queries
                ? await queries.GetDeadLetterAsync(id, cancellationToken)
                : (await store.Queries().ListDeadLettersAsync(null, int.MaxValue, cancellationToken)).FirstOrDefault(l => l.Id == id))
            ?? throw new CliException(CliApp.Failure, $"No dead letter has id {id} in {opened.Name}. List them with: converge dead-letters list {opened.Arguments}");
        if (retry && letter.LogPosition is { } position)
        {
            throw new CliException(CliApp.Failure, $"Dead letter {id} is an event parked by consumer group '{letter.Source["log:".Length..]}' (log position {position}); it has no queue to go back to. Handle it by hand, then discard it.");
        }

        var done = retry
            ? await store.RetryDeadLetterAsync(id, cancellationToken)
            : await store.DiscardDeadLetterAsync(id, cancellationToken);
        if (!done)
        {
            throw new CliException(CliApp.Failure, $"Dead letter {id} was removed by someone else before it could be {(retry ? "retried" : "discarded")}.");
        }

        return new ActionReport(name, null, [new ActedLetter(id, letter.Source)], 1, []) { Key = letter.OrderingKey };
    }

    static async Task<ActionReport> AllAsync(IMessageStore store, string name, bool retry, string? source, string? key, CancellationToken cancellationToken)
    {
        var letters = await store.Queries().ListDeadLettersAsync(source, int.MaxValue, cancellationToken);
        var acted = new List<ActedLetter>();
        var skipped = new List<SkippedLetter>();

        // Oldest first, so retried messages go back in the order they originally failed. Order within a key does not
        // depend on it: a retried dead letter takes back its own place in its key, and the key stays held until the
        // last of its dead letters is gone.
        foreach (var letter in letters.Reverse().Where(l => key is null || l.OrderingKey == key))
        {
            if (retry && letter.LogPosition is not null)
            {
                skipped.Add(new SkippedLetter(letter.Id, letter.Source, "skipped: a parked log event has no queue"));
                continue;
            }

            var done = retry
                ? await store.RetryDeadLetterAsync(letter.Id, cancellationToken)
                : await store.DiscardDeadLetterAsync(letter.Id, cancellationToken);
            if (done)
            {
                acted.Add(new ActedLetter(letter.Id, letter.Source));
            }
            else
            {
                skipped.Add(new SkippedLetter(letter.Id, letter.Source, "skipped: already removed by someone else"));
            }
        }

        return new ActionReport(name, source, acted, acted.Count, skipped) { Key = key };
    }

    /// <summary>
    /// Records what was done in the store's operator log, when it has one, so the dashboard shows the CLI's actions
    /// beside its own. After the fact: each dead letter was acted on in a transaction of its own.
    /// </summary>
    static async Task RecordAsync(IMessageStore store, bool retry, bool one, ActionReport report, CancellationToken cancellationToken)
    {
        if (report.Count == 0 || StoreContracts.Find<IOperatorLog>(store) is not { } log)
        {
            return;
        }

        var target = one
            ? "dead-letter:" + report.Letters[0].Id.ToString(System.Globalization.CultureInfo.InvariantCulture)
            : "dead-letters:" + (report.Source ?? "*") + (report.Key is null ? "" : "#" + report.Key);
        await log.RecordAsync(
            new OperatorAction
            {
                At = CliApp.Clock.GetUtcNow(),
                Actor = Environment.UserName,
                Action = retry ? OperatorActions.RetryDeadLetters : OperatorActions.DiscardDeadLetters,
                Target = target,
                Detail = $"converge dead-letters {report.Action}: ids {string.Join(',', report.Letters.Select(l => l.Id))}; {report.Skipped.Count} skipped",
            },
            cancellationToken);
    }

    static EntryReport Entry(DeadLetter letter) => new(
        letter.Id,
        letter.Source,
        letter.Envelope.MessageType,
        letter.Reason,
        letter.Attempts,
        letter.DeadLetteredAt,
        letter.Envelope.MessageId,
        letter.Envelope.CorrelationId,
        letter.History.Count > 0 ? letter.History[^1].Error : FirstLine(letter.Exception),
        letter.LogPosition)
    { OrderingKey = letter.OrderingKey };

    static string? FirstLine(string? text) => text?.Split('\n', 2)[0].TrimEnd('\r');

    internal sealed record ListReport(string Db, string? Source, IReadOnlyList<EntryReport> DeadLetters, int Count, long? Total);

    internal sealed record EntryReport(
        long Id,
        string Source,
        string MessageType,
        string Reason,
        int Attempts,
        DateTimeOffset DeadLetteredAt,
        Guid MessageId,
        string? CorrelationId,
        string? LastError,
        long? LogPosition)
    {
        public string? OrderingKey { get; init; }
    }

    internal sealed record ActionReport(string Action, string? Source, IReadOnlyList<ActedLetter> Letters, int Count, IReadOnlyList<SkippedLetter> Skipped)
    {
        /// <summary>The ordering key whose dead letters were acted on (--key), or the key of the one dead letter.</summary>
        public string? Key { get; init; }
    }

    internal sealed record ActedLetter(long Id, string Source);

    internal sealed record SkippedLetter(long Id, string Source, string Why);
}
