using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;

namespace Converge.Cli;

/// <summary>
/// The <c>converge</c> command line: <c>status</c>, <c>dead-letters list|retry|discard</c>, <c>sagas list|show|resume</c>,
/// <c>jobs list|show|retry|cancel|batch|recurring</c>, <c>flow</c>, <c>groups list|reset|pause|resume</c>,
/// <c>projections list|status|compare|switch|rebuild|drop</c>, <c>contracts snapshot|check</c>, <c>bench messages|sagas|jobs|log|ceiling</c>, <c>demo</c> and <c>sim</c>. Every command prints a table, or one JSON object with <c>--json</c>.
/// </summary>
public static class CliApp
{
    /// <summary>Exit code of a command that did what was asked.</summary>
    public const int Success = 0;

    /// <summary>Exit code of a command that ran but failed: an unknown id, a bench that did not verify.</summary>
    public const int Failure = 1;

    /// <summary>Exit code of a command that could not run as given: bad arguments, or a file or schema that is not a Converge store.</summary>
    public const int Usage = 2;

    /// <summary>The clock of the stores the commands open: the command line's composition root.</summary>
#pragma warning disable RS0030 // The command line's entry chooses the wall clock, once, for every command.
    internal static TimeProvider Clock { get; } = TimeProvider.System;
#pragma warning restore RS0030

    /// <summary>Parses <paramref name="args"/> and runs the command, writing results to <paramref name="stdout"/> and errors to <paramref name="stderr"/>.</summary>
    /// <returns>The process exit code: <see cref="Success"/>, <see cref="Failure"/> or <see cref="Usage"/>.</returns>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(stdout);
        ArgumentNullException.ThrowIfNull(stderr);
        var output = new CliOutput(stdout, stderr);
        var root = BuildRoot(output);
        var parsed = root.Parse(args);
        if (parsed.Action is ParseErrorAction)
        {
            await ExplainMisuseAsync(root, parsed, stderr, cancellationToken);
            return Usage;
        }

        return await parsed.InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr }, cancellationToken);
    }

    /// <summary>
    /// A plain command named "converge" rather than a <see cref="RootCommand"/>, whose name would be the executable's
    /// file name (Converge.Cli, or the test host) in help and usage lines.
    /// </summary>
    static Command BuildRoot(CliOutput output) => new("converge", "Inspect and operate Converge stores (SQLite with --db, PostgreSQL with --postgres): queues, dead letters, sagas, jobs, consumer groups and projections; run the demos, benchmark, simulate, and check message contracts against a committed snapshot. Exit codes: 0 done, 1 failed, 2 misuse or not a Converge store.")
    {
        new HelpOption(),
        new VersionOption(),
        StatusCommand.Create(output),
        DeadLetterCommands.Create(output),
        SagaCommands.Create(output),
        JobCommands.Create(output),
        FlowCommand.Create(output),
        DashboardCommand.Create(output),
        GroupCommands.Create(output),
        ProjectionCommands.Create(output),
        ContractCommands.Create(output),
        BenchCommands.Create(output),
        DemoCommands.Create(output),
        SimCommand.Create(output),
    };

    /// <summary>Prints what was wrong, then the help of the command the user was aiming at.</summary>
    static async Task ExplainMisuseAsync(Command root, ParseResult parsed, TextWriter stderr, CancellationToken cancellationToken)
    {
        foreach (var error in parsed.Errors)
        {
            await stderr.WriteLineAsync($"error: {error.Message}");
        }

        var path = new List<string>();
        for (SymbolResult? result = parsed.CommandResult; result is CommandResult command && command.Parent is not null; result = result.Parent)
        {
            path.Insert(0, command.Command.Name);
        }

        await stderr.WriteLineAsync();
        var label = string.Join(' ', ["converge", .. path]);
        await stderr.WriteLineAsync($"How to use '{label}':");
        var help = root.Parse([.. path, "--help"]);
        await help.InvokeAsync(new InvocationConfiguration { Output = stderr, Error = stderr }, cancellationToken);
    }
}
