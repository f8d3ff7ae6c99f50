using System.Diagnostics;
using System.Text.Json;

namespace Converge.Cli.Tests;

/// <summary>
/// The <c>converge</c> command as a user gets it: packed as a .NET tool and installed into a tool path, which
/// ./test.sh does before the tests and names in <c>CONVERGE_TEST_TOOL</c>. Its demos start worker processes of their
/// own, which must load native SQLite from the installed package, not from this build's output.
/// </summary>
[Collection(WorkerProcessRuns.Name)]
public sealed class InstalledToolTests
{
    public const string Variable = "CONVERGE_TEST_TOOL";

    static readonly TimeSpan RunTimeout = TimeSpan.FromMinutes(4);

    /// <summary>The installed command; a missing variable or file fails the test rather than skipping it, so a run without the tool cannot pass unnoticed.</summary>
    static string Tool
    {
        get
        {
            var tool = Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } value
                ? value
                : throw new InvalidOperationException($"{Variable} is not set, and these tests need the installed converge command. Run ./test.sh, which packs the tool, installs it into a tool path and sets it.");
            Assert.True(File.Exists(tool), $"{Variable} names {tool}, which does not exist: packing or installing the tool failed (see ./test.sh's output).");
            return tool;
        }
    }

    [Fact]
    public async Task The_installed_tool_runs_the_shop_demo_with_a_worker_process_per_service()
    {
        using var folder = new TempFolder();

        var result = await RunAsync(Tool, ["demo", "shop", "--processes", "--orders", "30", "--fail-rate", "0.2", "--db", folder.File("shop.db"), "--json"]);

        Assert.True(result.ExitCode == 0, result.ToString());
        var report = result.Json();
        Assert.Equal(3, report.GetProperty("processes").GetInt32());
        Assert.True(report.GetProperty("peak_working_set_mb").GetDouble() > 0, result.ToString());
        Assert.Equal(0, report.GetProperty("in_flight").GetInt32());
        Assert.Equal(0, report.GetProperty("violations").GetInt32());
        Assert.Equal(30, report.GetProperty("completed").GetInt32() + report.GetProperty("compensated").GetInt32() + report.GetProperty("rejected").GetInt32());
        foreach (var service in new[] { "customers", "payments", "shipping" })
        {
            Assert.Contains(service + ": process ", result.Error, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task The_installed_tool_replays_a_failing_seed_the_same_way_in_three_processes()
    {
        var found = await RunAsync(Tool, ["sim", "--scenario", "identity", "--seeds", "10", "--plant", "effect-outside-transaction"]);
        Assert.True(found.ExitCode == 1, found.ToString());
        var replay = found.Out.Split('\n').Select(l => l.Trim()).First(l => l.StartsWith("replay: converge sim ", StringComparison.Ordinal))["replay: converge ".Length..];

        var runs = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            var again = await RunAsync(Tool, replay.Split(' '));
            Assert.True(again.ExitCode == 1, again.ToString());
            runs.Add(string.Join('\n', again.Out.Split('\n').Where(l => l.StartsWith("identity ", StringComparison.Ordinal))));
        }

        Assert.True(runs[0].Split('\n').Length > 100, runs[0]);
        Assert.Equal(runs[0], runs[1]);
        Assert.Equal(runs[0], runs[2]);
    }

    [Fact]
    public async Task The_installed_tool_runs_the_month_close_in_two_worker_processes()
    {
        using var folder = new TempFolder();

        var result = await RunAsync(Tool, ["demo", "month-close", "--processes", "2", "--accounts", "100", "--latency", "1", "--period", "2026-11", "--db", folder.File("billing.db"), "--json"]);

        Assert.True(result.ExitCode == 0, result.ToString());
        var report = result.Json();
        Assert.Equal(2, report.GetProperty("processes").GetInt32());
        Assert.True(report.GetProperty("peak_working_set_mb").GetDouble() > 0, result.ToString());
        Assert.True(report.GetProperty("finished").GetBoolean(), result.ToString());
        Assert.Equal(0, report.GetProperty("violations").GetInt32());
        Assert.Equal(100, report.GetProperty("accounts").GetInt64());
        Assert.Contains("worker 2: process ", result.Error, StringComparison.Ordinal);
    }

    /// <summary>
    /// A worker whose native SQLite cannot load (this build's assemblies without their deps.json, as the tool's
    /// package once carried the samples) must report that failure, not the one its store's disposal used to throw
    /// on top of it while the host unwound.
    /// </summary>
    [Fact]
    public async Task A_worker_that_cannot_load_native_SQLite_reports_that_failure_rather_than_one_from_disposing_its_store()
    {
        using var folder = new TempFolder();
        var app = Directory.CreateDirectory(folder.File("app")).FullName;
        foreach (var file in Directory.EnumerateFiles(AppContext.BaseDirectory, "*.dll"))
        {
            File.Copy(file, Path.Combine(app, Path.GetFileName(file)));
        }

        File.Copy(Path.Combine(AppContext.BaseDirectory, "Converge.Cli.runtimeconfig.json"), Path.Combine(app, "Converge.Cli.runtimeconfig.json"));

        var result = await RunAsync(DotnetHost(), [Path.Combine(app, "Converge.Cli.dll"), DemoWorkers.Verb, DemoWorkers.Shop, "serve", folder.File("shop.db")]);

        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("DllNotFoundException", result.Error, StringComparison.Ordinal);
        Assert.Contains("e_sqlite3", result.Error, StringComparison.Ordinal);
        Assert.Contains("SqliteMessageStore.MigrateAsync", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("SqliteMessageStore.DisposeAsync", result.Error, StringComparison.Ordinal);
    }

    static string DotnetHost() =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host)
            ? host
            : Environment.ProcessPath is { } process && Path.GetFileNameWithoutExtension(process) == "dotnet" ? process : "dotnet";

    /// <summary>Runs <paramref name="program"/> to its end (killed after <see cref="RunTimeout"/>) and returns what it printed.</summary>
    static async Task<CliResult> RunAsync(string program, IEnumerable<string> arguments)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(RunTimeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            Assert.Fail($"{program} {string.Join(' ', start.ArgumentList)} did not end within {RunTimeout.TotalMinutes:0} minutes.\nstdout:\n{await stdout}\nstderr:\n{await stderr}");
        }

        return new CliResult(process.ExitCode, await stdout, await stderr);
    }
}
