using Converge.Contracts;
using Converge.Hosting;
using Converge.Storage;
using Converge.Testing.Faults;
using Converge.Testing.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.Testing.Simulation;

/// <summary>
/// Runs a <see cref="SimulationScenario"/> under one seed: processes share an in-memory store on a simulated clock,
/// all their work runs on one thread in the order the seed picks, and the seed draws crashes, store faults, clock jumps
/// and restarts. When the work has settled (or cannot), the scenario judges the outcome. Every run of a seed is the
/// same run: its trace hash and crash points repeat.
/// </summary>
public static class Simulator
{
    /// <summary>The moment every simulation starts at.</summary>
    public static readonly DateTimeOffset Start = new(2026, 11, 30, 23, 0, 0, TimeSpan.Zero);

    /// <summary>How often the director looks whether the work has settled: every 100 simulated milliseconds.</summary>
    static readonly TimeSpan LookEvery = TimeSpan.FromMilliseconds(100);

    /// <summary>Runs <paramref name="scenario"/> under <paramref name="seed"/> on the calling thread, which it holds until the run ends.</summary>
    public static SimulationResult Run(SimulationScenario scenario, int seed, SimulationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        options ??= new SimulationOptions();
        var previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(null);
        try
        {
            MessageIds.ReseedThisThread(seed);
            var world = new SimulationWorld(seed, Start) { Log = options.Log };
            using var run = new SimulationRun(world, scenario, options);
            var director = world.NewScheduler("director");
            var directing = director.Run(run.DirectAsync);
            var stopped = world.RunUntil(directing, Start + options.Deadline, options.MaxSteps, options.ClockJumpChance, options.MaxClockJump);
            var violations = new List<string>();
            if (stopped is not null)
            {
                violations.Add(stopped + "; " + run.Pending);
            }
            else if (directing.Exception is { } failed)
            {
                violations.Add("the run failed: " + failed.GetBaseException());
            }
            else
            {
                violations.AddRange(run.Violations);
            }

            violations.AddRange(world.Uncontrolled.Take(5).Select(u => "uncontrolled: " + u));
            return new SimulationResult(
                scenario.Name,
                seed,
                violations,
                [.. run.Processes.Where(p => p.DiedAt is not null).Select(p => p.DiedAt!)],
                world.Steps,
                run.Processes.Sum(p => p.Operations),
                run.Processes.Sum(p => p.Faults),
                world.Clock.GetUtcNow() - Start,
                world.TraceHash);
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }
    }

    /// <summary>The command that replays one seed of one scenario.</summary>
    public static string ReplayCommand(SimulationResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        return $"converge sim --scenario {result.Scenario} --seeds 1 --from {result.Seed} --verbose";
    }

    /// <summary>One run's processes and the director that starts, restarts and watches them.</summary>
    sealed class SimulationRun(SimulationWorld world, SimulationScenario scenario, SimulationOptions options) : IDisposable
    {
        // Wake-ups complete on the simulation's thread: through the thread pool they would land at moments no seed chose.
        readonly InMemoryMessageStore _store = new(world.Clock, deterministic: true);
        int _crashes;

        public List<SimulatedProcess> Processes { get; } = [];

        public IReadOnlyList<string> Violations { get; private set; } = [];

        public string Pending { get; private set; } = "nothing checked yet";

        public void Dispose()
        {
            foreach (var process in Processes)
            {
                process.Dispose();
            }

            _store.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }

        public async Task DirectAsync()
        {
            for (var i = 0; i < options.Processes; i++)
            {
                StartProcess();
            }

            var replaced = new HashSet<SimulatedProcess>();
            var restartDelays = new Dictionary<SimulatedProcess, TimeSpan>();
            while (true)
            {
                await Task.Delay(LookEvery, world.Clock);
                foreach (var dead in Processes.Where(p => p.DiedWhen is not null && !replaced.Contains(p)).ToList())
                {
                    var delay = restartDelays.TryGetValue(dead, out var drawn) ? drawn : restartDelays[dead] = options.MaxRestartDelay * world.Random.NextDouble();
                    if (world.Clock.GetUtcNow() >= dead.DiedWhen!.Value + delay)
                    {
                        replaced.Add(dead);
                        StartProcess();
                    }
                }

                var leftovers = await StoreLeftovers.ReadAsync(_store);
                if (leftovers.Queued.Count == 0 && await scenario.SettledAsync(_store, CancellationToken.None))
                {
                    break;
                }


                var alive = Processes.Count(p => p.DiedAt is null);
                Pending = $"{alive} process(es) alive, {Processes.Count - alive} dead; {(leftovers.All.Count > 0 ? string.Join(", ", leftovers.All) : "queues empty, the scenario unsettled")}";
            }

            Violations = [.. await scenario.JudgeAsync(_store, CancellationToken.None), .. (await StoreLeftovers.ReadAsync(_store)).All];
        }

        void StartProcess()
        {
            var crashAt = _crashes < options.MaxCrashes && world.Random.NextDouble() < options.CrashChance ? 1 + world.Random.Next(options.CrashWithin) : 0;
            if (crashAt > 0)
            {
                _crashes++;
            }

            var process = new SimulatedProcess(world, "p" + (Processes.Count + 1), crashAt, options.FaultChance);
            Processes.Add(process);
            var services = new ServiceCollection();
            services.AddLogging();
            services.AddConverge(o =>
            {
                scenario.Configure(o);
                o.TimeProvider = world.Clock;
                o.Random = world.RandomSource;
                o.Scheduler = process.Scheduler;
                o.StoreFactory = _ => process.Reach(_store);
            });
            scenario.ConfigureServices(services);
            var provider = services.BuildServiceProvider();
            process.Services = provider;
            _ = process.Scheduler.Run(async () =>
            {
                try
                {
                    foreach (var hosted in provider.GetServices<IHostedService>())
                    {
                        await hosted.StartAsync(process.Death);
                    }

                    await PlaceAsync(process, provider);
                }
                catch (Exception failure) when (failure is SimulatedCrashException or OperationCanceledException || process.DiedAt is not null)
                {
                    // It died starting: its replacement starts and places what is missing.
                }
                catch (SimulatedStoreFaultException fault)
                {
                    // It could not start: its supervisor restarts it, as after a crash.
                    process.Kill($"{process.Name} start failed: {fault.Message}");
                }
            });
        }

        /// <summary>The clients' work, retried after a store fault until it is done or the process dies.</summary>
        async Task PlaceAsync(SimulatedProcess process, IServiceProvider services)
        {
            var store = services.GetRequiredService<IMessageStore>();
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    await scenario.PlaceAsync(services, store, process.Death);
                    return;
                }
                catch (SimulatedStoreFaultException)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(50 * Math.Min(attempt, 10)), world.Clock, process.Death);
                }
            }
        }
    }
}
