using System.CommandLine;
using Converge.Projections;
using Spectre.Console;

namespace Converge.Cli;

/// <summary>
/// <c>converge projections list|status|compare|switch|rebuild|drop</c>: the projections in a store, their versions and
/// how far each is built, and the operations of a reprocessing (compare the new version with the live one, switch
/// readers to it, rebuild or drop a version).
/// </summary>
internal static class ProjectionCommands
{
    public static Command Create(CliOutput output) => new("projections", "List projections and their versions (state, position, lag, build rate), compare two versions, switch readers to a built one, rebuild or drop a version.")
    {
        List(output),
        Status(output),
        Compare(output),
        Switch(output),
        Rebuild(output),
        Drop(output),
    };

    static Command List(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var command = location.AddTo(new Command("list", "List every projection version: its state (building, built, live, retired, rebuilding, dropped), position, lag behind the log's head, build rate and failures.") { json });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var versions = await Catalog(opened.Store).ListAsync(cancellationToken);
            return await output.ReportAsync(new ProjectionsReport([.. versions.Select(Report)]), parsed.GetValue(json), Render);
        });
        return command;
    }

    static Command Status(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var name = Name();
        var command = location.AddTo(new Command("status", "Show one projection's versions: which is live, how far the others are built and how fast, and the views readers read.") { name, json });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var projection = parsed.GetValue(name)!;
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var catalog = Catalog(opened.Store);
            var versions = (await catalog.ListAsync(cancellationToken)).Where(v => v.Name == projection).ToList();
            if (versions.Count == 0)
            {
                throw new CliException(CliApp.Failure, $"There is no projection '{projection}' in this store; converge projections list shows the ones there are.");
            }

            var live = versions.FirstOrDefault(v => v.State == ProjectionState.Live);
            var views = live is null ? [] : live.Tables.Select(t => catalog.View(projection, t)).ToList();
            var report = new ProjectionStatusReport(projection, live?.Version, views, [.. versions.Select(Report)]);
            return await output.ReportAsync(report, parsed.GetValue(json), (console, r) =>
            {
                console.WriteLine(r.Live is { } version
                    ? $"Projection '{r.Projection}': version {version} is live; readers read {string.Join(", ", r.Views)}."
                    : $"Projection '{r.Projection}': no version is live yet (the first one becomes live once it is built).");
                Render(console, new ProjectionsReport(r.Versions));
            });
        });
        return command;
    }

    static Command Compare(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var name = Name();
        var from = new Option<int?>("--from") { Description = "The version compared; default: the live one.", HelpName = "VERSION" };
        var to = new Option<int?>("--to") { Description = "The version it is compared with; default: the newest other version.", HelpName = "VERSION" };
        var sample = new Option<int>("--sample") { Description = "Rows shown per table and side that only one version holds.", HelpName = "N", DefaultValueFactory = _ => 10 };
        sample.Validators.Add(r =>
        {
            if (r.Parsed<int>() is < 0 or > 10_000)
            {
                r.AddError("--sample must be between 0 and 10000, for example 10.");
            }
        });
        var command = location.AddTo(new Command("compare", "Compare two versions of a projection table by table: row counts, and a sample of the rows only one of them holds (whole rows; the tables must have the same columns). Exits 0 whether or not they differ: a new version usually differs, that is why it was built.") { name, from, to, sample, json });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var projection = parsed.GetValue(name)!;
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var catalog = Catalog(opened.Store);
            var versions = (await catalog.ListAsync(cancellationToken)).Where(v => v.Name == projection && v.State != ProjectionState.Dropped).ToList();
            var older = parsed.GetValue(from) ?? versions.FirstOrDefault(v => v.State == ProjectionState.Live)?.Version
                ?? throw new CliException(CliApp.Usage, $"Projection '{projection}' has no live version to compare; give --from VERSION (converge projections status {projection} lists them).");
            var newer = parsed.GetValue(to) ?? versions.Where(v => v.Version != older).Select(v => (int?)v.Version).Max()
                ?? throw new CliException(CliApp.Usage, $"Projection '{projection}' has no other version than {older} to compare with; give --to VERSION.");
            var comparison = await Refused(() => catalog.CompareAsync(projection, older, newer, parsed.GetValue(sample), cancellationToken));
            if (versions.FirstOrDefault(v => v.Version == older) is { } a && versions.FirstOrDefault(v => v.Version == newer) is { } b && a.Position != b.Position)
            {
                await output.Error.WriteLineAsync($"note: version {older} is at position {a.Position} and version {newer} at {b.Position}: rows the one behind has not reached yet show as differences too.");
            }
            return await output.ReportAsync(comparison, parsed.GetValue(json), RenderComparison);
        });
        return command;
    }

    static void RenderComparison(IAnsiConsole console, ProjectionComparison comparison)
    {
        console.WriteLine(comparison.Same
            ? $"Versions {comparison.From} and {comparison.To} of '{comparison.Name}' hold the same rows."
            : $"Versions {comparison.From} and {comparison.To} of '{comparison.Name}' differ:");
        var table = CliOutput.Table("Table", $"Rows in {comparison.From}", $"Rows in {comparison.To}", $"Only in {comparison.From} (sample)", $"Only in {comparison.To} (sample)");
        foreach (var t in comparison.Tables)
        {
            CliOutput.AddRow(table, t.Table, t.FromRows?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-", t.ToRows?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-", t.Note ?? string.Join(Environment.NewLine, t.OnlyInFrom), string.Join(Environment.NewLine, t.OnlyInTo));
        }

        console.Write(table);
    }

    static Command Switch(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var name = Name();
        var to = new Option<int>("--to") { Description = "The version readers read from now on; it must be built and not behind the live one.", HelpName = "VERSION", Required = true };
        var wait = new Option<double>("--wait") { Description = "Seconds to keep trying while the version is still building or behind the live one. Default 0: try once.", HelpName = "SECONDS" };
        wait.Validators.Add(r =>
        {
            if (r.Parsed<double>() is < 0 or > 86_400)
            {
                r.AddError("--wait must be a number of seconds from 0 to 86400, for example 30.");
            }
        });
        var command = location.AddTo(new Command("switch", "Switch readers to a built version in one transaction: the views point at its tables and the live version is retired (kept up to date, so it can be switched back, until dropped). Exits 1 when the version is still building or behind the live one.") { name, to, wait, json });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var projection = parsed.GetValue(name)!;
            var version = parsed.GetValue(to);
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            var catalog = Catalog(opened.Store);
            var deadline = CliApp.Clock.GetUtcNow() + TimeSpan.FromSeconds(parsed.GetValue(wait));
            var result = await catalog.SwitchAsync(projection, version, cancellationToken);
            while (!result.Switched && result.Previous != version && CliApp.Clock.GetUtcNow() < deadline)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(100), CliApp.Clock, cancellationToken);
                result = await catalog.SwitchAsync(projection, version, cancellationToken);
            }

            if (!result.Switched)
            {
                throw new CliException(CliApp.Failure, $"Not switched: {result.Reason}");
            }

            return await output.ReportAsync(result, parsed.GetValue(json), (console, r) =>
                console.WriteLine(r.Previous is { } previous
                    ? $"Readers of '{projection}' now read version {r.Version} (version {previous} is retired; converge projections drop {projection} --version {previous} removes it)."
                    : $"Readers of '{projection}' now read version {r.Version}."));
        });
        return command;
    }

    static Command Rebuild(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var name = Name();
        var version = Version("The version to build again from position 0; not the live one.");
        var command = location.AddTo(new Command("rebuild", "Build a version again from position 0: the application running it drops its tables, creates them anew and replays the log (within its poll interval). Refused for the live version: register a new version, let it build beside, and switch.") { name, version, json });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var projection = parsed.GetValue(name)!;
            var number = parsed.GetValue(version);
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            await Refused(() => Catalog(opened.Store).RebuildAsync(projection, number, cancellationToken));
            return await output.ReportAsync(new ProjectionActionReport(projection, number, "rebuilding"), parsed.GetValue(json), (console, r) =>
                console.WriteLine($"Version {r.Version} of '{r.Projection}' will be rebuilt from position 0 by the application that runs it; converge projections status {r.Projection} shows its progress."));
        });
        return command;
    }

    static Command Drop(CliOutput output)
    {
        var location = new StoreLocation();
        var json = CommonOptions.Json();
        var name = Name();
        var version = Version("The version to drop; not the live one.");
        var command = location.AddTo(new Command("drop", "Drop a version that is not live: its tables and checkpoint go in one transaction, and the applications running it stop it. Remove its registration from the application afterwards.") { name, version, json });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var projection = parsed.GetValue(name)!;
            var number = parsed.GetValue(version);
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            await Refused(() => Catalog(opened.Store).DropAsync(projection, number, cancellationToken));
            return await output.ReportAsync(new ProjectionActionReport(projection, number, "dropped"), parsed.GetValue(json), (console, r) =>
                console.WriteLine($"Version {r.Version} of '{r.Projection}' is dropped: its tables and checkpoint are gone."));
        });
        return command;
    }

    static Argument<string> Name() => new("projection") { Description = "The projection's name." };

    static Option<int> Version(string description)
    {
        var option = new Option<int>("--version") { Description = description, HelpName = "VERSION", Required = true };
        option.Validators.Add(r =>
        {
            if (r.Parsed<int>() < 1)
            {
                r.AddError("--version must be 1 or more.");
            }
        });
        return option;
    }

    static ProjectionCatalog Catalog(Storage.IMessageStore store) => new(store, CliApp.Clock);

    /// <summary>Turns the catalogue's refusal (an unknown, live or dropped version) into exit code 1 with its message.</summary>
    static async Task Refused(Func<ValueTask> action)
    {
        try
        {
            await action();
        }
        catch (InvalidOperationException exception)
        {
            throw new CliException(CliApp.Failure, exception.Message);
        }
    }

    /// <summary>As <see cref="Refused(Func{ValueTask})"/>, for an operation with a result.</summary>
    static async Task<T> Refused<T>(Func<ValueTask<T>> action)
    {
        try
        {
            return await action();
        }
        catch (InvalidOperationException exception)
        {
            throw new CliException(CliApp.Failure, exception.Message);
        }
    }

    static void Render(IAnsiConsole console, ProjectionsReport report)
    {
        if (report.Versions.Count == 0)
        {
            console.WriteLine("Projections: none registered in this store yet.");
            return;
        }

        var table = CliOutput.Table("Projection", "Version", "State", "Position", "Lag", "Build rate (events/s)", "Failed attempts", "Last error");
        foreach (var v in report.Versions)
        {
            CliOutput.AddRow(table, v.Projection, v.Version, v.State, v.Position, v.Lag, Math.Round(v.EventsPerSecond), v.FailedAttempts, v.LastError ?? string.Empty);
        }

        console.Write(table);
    }

    static ProjectionVersionReport Report(ProjectionVersionStatus v) => new(
        v.Name, v.Version, v.State.ToString().ToLowerInvariant(), v.Tables, v.Position, v.Lag, Math.Round(v.EventsPerSecond, 1), v.FailedAttempts, v.LastError, v.StartedAt, v.BuiltAt, v.LiveSince);
}

internal sealed record ProjectionVersionReport(string Projection, int Version, string State, IReadOnlyList<string> Tables, long Position, long Lag, double EventsPerSecond, int FailedAttempts, string? LastError, DateTimeOffset StartedAt, DateTimeOffset? BuiltAt, DateTimeOffset? LiveSince);

internal sealed record ProjectionsReport(IReadOnlyList<ProjectionVersionReport> Versions);

internal sealed record ProjectionStatusReport(string Projection, int? Live, IReadOnlyList<string> Views, IReadOnlyList<ProjectionVersionReport> Versions);

internal sealed record ProjectionActionReport(string Projection, int Version, string Action);
