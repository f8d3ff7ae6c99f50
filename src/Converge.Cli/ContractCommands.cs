using System.CommandLine;
using System.Text.Json;
using Converge.Contracts;

namespace Converge.Cli;

/// <summary>
/// <c>converge contracts snapshot|check</c>: the message contracts an application's assembly registers, written as a
/// snapshot file to commit, and compared with it in CI.
/// </summary>
internal static class ContractCommands
{
    public static Command Create(CliOutput output) => new("contracts", "Describe the message contracts an application registers (a public class implementing Converge.Contracts.IConvergeContracts in its assembly), and check them against a committed snapshot for breaking changes.")
    {
        Snapshot(output),
        Check(output),
    };

    static Option<string> AssemblyOption() => new("--assembly")
    {
        Description = "The application's built assembly (.dll), beside its deps.json; every public class in it implementing IConvergeContracts is created and registers its contracts.",
        HelpName = "PATH",
        Required = true,
    };

    static Command Snapshot(CliOutput output)
    {
        var assembly = AssemblyOption();
        var file = new Option<string?>("--out") { Description = "Write the snapshot to this file (replacing it) instead of stdout.", HelpName = "FILE" };
        var command = new Command("snapshot", "Print or write the contract snapshot: every registered name@version with its JSON fields, and the aliases and upcasters that read older names. Sorted and deterministic, to commit beside the code.")
        {
            assembly, file,
        };
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var loaded = ContractAssembly.Load(parsed.GetValue(assembly)!);
            var json = loaded.Snapshot().ToJson();
            if (parsed.GetValue(file) is not { } path)
            {
                await output.Out.WriteAsync(json);
                return CliApp.Success;
            }

            try
            {
                await File.WriteAllTextAsync(path, json, cancellationToken);
            }
            catch (Exception exception) when (exception is IOException or UnauthorizedAccessException)
            {
                throw new CliException(CliApp.Usage, $"Cannot write '{path}': {exception.Message}");
            }

            await output.Out.WriteLineAsync($"Wrote the contracts of {loaded.Messages.All.Count} message type(s) from {string.Join(", ", loaded.Sources)} to {path}.");
            return CliApp.Success;
        });
        return command;
    }

    static Command Check(CliOutput output)
    {
        var assembly = AssemblyOption();
        var snapshot = new Option<string>("--snapshot")
        {
            Description = "The committed snapshot file, as 'converge contracts snapshot --out' wrote it.",
            HelpName = "FILE",
            Required = true,
        };
        var json = CommonOptions.Json();
        var command = new Command("check", "Compare the contracts the assembly registers with the committed snapshot. Exit 0 when compatible (added types, versions and optional fields), 1 on a breaking change (a type or version removed without an alias or upcaster, a field removed or retyped, a field made required), printing each with its fix; 2 on misuse.")
        {
            assembly, snapshot, json,
        };
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var snapshotPath = parsed.GetValue(snapshot)!;
            if (!File.Exists(snapshotPath))
            {
                throw new CliException(CliApp.Usage, $"Snapshot '{snapshotPath}' does not exist. Write it once with 'converge contracts snapshot --assembly PATH --out {snapshotPath}' and commit it; this command never creates it.");
            }

            ContractSnapshot committed;
            try
            {
                committed = ContractSnapshot.Parse(await File.ReadAllTextAsync(snapshotPath, cancellationToken));
            }
            catch (FormatException exception)
            {
                throw new CliException(CliApp.Usage, $"'{snapshotPath}': {exception.Message}");
            }

            var assemblyPath = parsed.GetValue(assembly)!;
            var comparison = ContractSnapshot.Compare(committed, ContractAssembly.Load(assemblyPath).Snapshot());
            var report = new ContractCheckReport(
                comparison.IsCompatible,
                snapshotPath,
                assemblyPath,
                [.. comparison.Changes.Where(c => c.IsBreaking).Select(ContractChangeReport.From)],
                [.. comparison.Changes.Where(c => !c.IsBreaking).Select(ContractChangeReport.From)]);
            if (parsed.GetValue(json))
            {
                await output.WriteJsonAsync(report);
            }
            else
            {
                await RenderAsync(output.Out, report);
            }

            if (comparison.IsCompatible)
            {
                return CliApp.Success;
            }

            await output.Error.WriteLineAsync($"error: {report.Breaking.Count} breaking contract change(s) against {snapshotPath}; fix each as shown, or, if the break is intended and no stored message depends on it, write a new snapshot.");
            return CliApp.Failure;
        });
        return command;
    }

    static async Task RenderAsync(TextWriter writer, ContractCheckReport report)
    {
        if (report.Breaking.Count > 0)
        {
            await writer.WriteLineAsync($"Breaking changes against {report.Snapshot}: {report.Breaking.Count}");
            foreach (var change in report.Breaking)
            {
                await writer.WriteLineAsync($"  x {Subject(change)}: {change.Description}");
                await writer.WriteLineAsync($"    fix: {change.Fix}");
            }
        }
        else
        {
            await writer.WriteLineAsync($"Compatible with {report.Snapshot}.");
        }

        if (report.CompatibleChanges.Count > 0)
        {
            await writer.WriteLineAsync($"Compatible changes not yet in the snapshot: {report.CompatibleChanges.Count} (record them with 'converge contracts snapshot --assembly {report.Assembly} --out {report.Snapshot}')");
            foreach (var change in report.CompatibleChanges)
            {
                await writer.WriteLineAsync($"  + {Subject(change)}: {change.Description}");
                if (change.Fix is not null)
                {
                    await writer.WriteLineAsync($"    note: {change.Fix}");
                }
            }
        }
    }

    static string Subject(ContractChangeReport change) => change.Field is null ? change.Type : $"{change.Type} field '{change.Field}'";
}

internal sealed record ContractCheckReport(bool Compatible, string Snapshot, string Assembly, IReadOnlyList<ContractChangeReport> Breaking, IReadOnlyList<ContractChangeReport> CompatibleChanges);

internal sealed record ContractChangeReport(string Kind, string Type, string? Field, string Description, string? Fix)
{
    public static ContractChangeReport From(ContractChange change) =>
        new(JsonNamingPolicy.SnakeCaseLower.ConvertName(change.Kind.ToString()), change.Type, change.Field, change.Description, change.Fix);
}
