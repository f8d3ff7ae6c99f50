using System.CommandLine;
using System.Diagnostics;
using Converge.Testing.Simulation;
using Converge.Testing.Simulation.Scenarios;
using Spectre.Console;

namespace Converge.Cli;

/// <summary>
/// <c>converge sim --scenario NAME --seeds N [--from S]</c>: runs the deterministic simulation of a scenario over seeds
/// S .. S+N-1 and, for each seed that breaks a property, prints what broke and the one command that replays it.
/// </summary>
internal static class SimCommand
{
    const string PlantOutsideTransaction = "effect-outside-transaction";

    public static Command Create(CliOutput output)
    {
        var scenario = new Option<string>("--scenario")
        {
            Description = "The workload: shop (orders as a saga with compensation), month-close (a batch of jobs and a consumer group), identity (fanned-out checks collected by a consumer group), or all.",
            HelpName = "NAME",
            Required = true,
        };
        scenario.AcceptOnlyFromAmong([.. SimulationScenarios.Names, "all"]);
        var seeds = new Option<int>("--seeds") { Description = "How many seeds to run.", HelpName = "N", DefaultValueFactory = _ => 1000 };
        var from = new Option<int>("--from") { Description = "The first seed.", HelpName = "S", DefaultValueFactory = _ => 0 };
        var parallel = new Option<int>("--parallel") { Description = "Seeds run at once, each on a thread of its own; a seed's run is the same whatever runs beside it.", HelpName = "N", DefaultValueFactory = _ => Environment.ProcessorCount };
        var verbose = new Option<bool>("--verbose") { Description = "Print every store operation of every run, with the simulated time and the process that made it (for replaying one seed)." };
        var plant = new Option<string>("--plant")
        {
            Description = $"Plant a bug, to see the simulation find it: {PlantOutsideTransaction} (handlers keep their effects outside the transaction that records their message as handled).",
            HelpName = "BUG",
        };
        plant.AcceptOnlyFromAmong(PlantOutsideTransaction);
        var json = CommonOptions.Json();
        seeds.Validators.Add(result =>
        {
            if (result.Parsed<int>() < 1)
            {
                result.AddError("--seeds must be 1 or more.");
            }
        });
        from.Validators.Add(result =>
        {
            if (result.Parsed<int>() < 0)
            {
                result.AddError("--from must be 0 or more.");
            }
        });
        parallel.Validators.Add(result =>
        {
            if (result.Parsed<int>() < 1)
            {
                result.AddError("--parallel must be 1 or more.");
            }
        });
        var command = new Command("sim", "Run the deterministic simulation of a scenario over seeds: processes share an in-memory store on a simulated clock, all their work runs on one thread in the order the seed picks, and the seed draws crashes at store operations, failed store calls, lost commit acknowledgements, clock jumps past leases and restarts. After each run the scenario's properties are judged (every effect once, sagas done or undone in reverse order, batch counters exact, consumer groups never skipping or repeating an event). Prints each failing seed with the command that replays it; exits 1 if any failed.")
        {
            scenario, seeds, from, parallel, verbose, plant, json,
        };
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var names = parsed.GetRequiredValue(scenario) is "all" ? SimulationScenarios.Names : [parsed.GetRequiredValue(scenario)];
            var planted = parsed.GetValue(plant) is PlantOutsideTransaction ? PlantedBug.EffectOutsideTransaction : PlantedBug.None;
            var first = parsed.GetValue(from);
            var count = parsed.GetValue(seeds);
            if ((long)first + count - 1 > int.MaxValue)
            {
                throw new CliException(CliApp.Usage, $"--from {first} with --seeds {count} runs past the last seed, {int.MaxValue}.");
            }

            var reports = new List<SimReport>();
            foreach (var name in names)
            {
                reports.Add(await RunAsync(output, name, planted, first, count, parsed.GetValue(parallel), parsed.GetValue(verbose), parsed.GetValue(json), cancellationToken));
            }

            var summary = new SimSummary(reports.Sum(r => r.Seeds), reports.Sum(r => r.Failed), reports);
            await output.ReportAsync(summary, parsed.GetValue(json), Render);
            return summary.Failed > 0 ? CliApp.Failure : CliApp.Success;
        });
        return command;
    }

    static async Task<SimReport> RunAsync(CliOutput output, string name, PlantedBug planted, int first, int count, int parallel, bool verbose, bool json, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        var results = new SimulationResult?[count];
        var log = new object();
        var options = new SimulationOptions();
        await Parallel.ForAsync(0, count, new ParallelOptions { MaxDegreeOfParallelism = verbose ? 1 : parallel, CancellationToken = cancellationToken }, (i, _) =>
        {
            var seed = first + i;
            var run = verbose ? options with { Log = line => output.Out.WriteLine($"{name} {seed} {line}") } : options;
            var result = Simulator.Run(SimulationScenarios.Create(name, planted), seed, run);
            results[i] = result;
            if (!result.Passed && !json)
            {
                lock (log)
                {
                    output.Out.WriteLine($"{name} seed {seed}: {string.Join("; ", result.Violations.Take(5))}");
                    output.Out.WriteLine($"  crashes: {(result.Crashes.Count == 0 ? "none" : string.Join("; ", result.Crashes))}");
                    output.Out.WriteLine($"  replay: {Replay(result, planted)}");
                }
            }

            return ValueTask.CompletedTask;
        });
        var done = results.Select(r => r!).ToList();
        var failed = done.Where(r => !r.Passed).ToList();
        var elapsed = Stopwatch.GetElapsedTime(started);
        return new SimReport(
            name,
            planted == PlantedBug.None ? null : PlantOutsideTransaction,
            first,
            count,
            count - failed.Count,
            failed.Count,
            done.Sum(r => r.Crashes.Count),
            done.SelectMany(r => r.Crashes).Select(CrashKind).Distinct(StringComparer.Ordinal).Count(),
            done.Sum(r => (long)r.Faults),
            done.Sum(r => r.Steps),
            done.Sum(r => (long)r.Operations),
            Math.Round(elapsed.TotalSeconds, 1),
            Math.Round(count / Math.Max(elapsed.TotalSeconds, 0.001), 1),
            [.. failed.Take(20).Select(r => new SimFailure(r.Seed, r.Violations, r.Crashes, r.Trace, Replay(r, planted)))]);
    }

    /// <summary>The store operation a crash hit, without the process and its count: <c>IQueueTransaction.CompleteAsync</c>.</summary>
    static string CrashKind(string crash) => crash.Split(' ')[^1];

    static string Replay(SimulationResult result, PlantedBug planted) =>
        Simulator.ReplayCommand(result) + (planted == PlantedBug.None ? "" : " --plant " + PlantOutsideTransaction);

    static void Render(IAnsiConsole console, SimSummary summary)
    {
        var reports = summary.Scenarios;
        var table = CliOutput.Table("scenario", "seeds", "passed", "failed", "crashes", "crash points", "store faults", "steps", "store ops", "seconds", "seeds/s");
        foreach (var r in reports)
        {
            CliOutput.AddRow(table, r.Scenario + (r.Planted is null ? "" : $" (planted: {r.Planted})"), $"{r.From}..{r.From + r.Seeds - 1}", r.Passed, r.Failed, r.Crashes, r.CrashPoints, r.StoreFaults, r.Steps, r.StoreOperations, r.Seconds, r.SeedsPerSecond);
        }

        console.Write(table);
        foreach (var failure in reports.SelectMany(r => r.Failures.Take(1).Select(f => (r.Scenario, f))))
        {
            console.WriteLine($"first failure of {failure.Scenario}: seed {failure.f.Seed}, trace {failure.f.Trace}; replay: {failure.f.Replay}");
        }
    }

    sealed record SimSummary(int Seeds, int Failed, IReadOnlyList<SimReport> Scenarios);

    sealed record SimFailure(int Seed, IReadOnlyList<string> Violations, IReadOnlyList<string> Crashes, string Trace, string Replay);

    sealed record SimReport(
        string Scenario,
        string? Planted,
        int From,
        int Seeds,
        int Passed,
        int Failed,
        int Crashes,
        int CrashPoints,
        long StoreFaults,
        long Steps,
        long StoreOperations,
        double Seconds,
        double SeedsPerSecond,
        IReadOnlyList<SimFailure> Failures);
}
