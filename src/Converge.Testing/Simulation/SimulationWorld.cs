using Converge.Runtime;

namespace Converge.Testing.Simulation;

/// <summary>
/// The one thread a simulation runs on, and the seed that decides everything on it: which piece of ready work runs
/// next (across every process and the director), when the clock jumps, and the faults a process meets. The same seed
/// and scenario give the same run, step for step, whatever machine runs it.
/// </summary>
public sealed class SimulationWorld
{
    readonly List<(ProcessScheduler Scheduler, Task Task)> _ready = [];
    readonly List<string> _uncontrolled = [];
    readonly int _thread = Environment.CurrentManagedThreadId;
    ulong _trace = 14695981039346656037UL;

    /// <summary>A world whose every choice follows <paramref name="seed"/>; its clock starts at <paramref name="start"/>.</summary>
    public SimulationWorld(int seed, DateTimeOffset start)
    {
        Seed = seed;
        Random = new Random(seed);
        Clock = new SimulatedClock(start);
        RandomSource = new SeededRandomSource(Random);
    }

    /// <summary>Receives what <see cref="Trace"/> adds, with the simulated time; <c>null</c>: nothing is written.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>The seed.</summary>
    public int Seed { get; }

    /// <summary>The seeded generator behind every choice; use it only from the simulation's thread.</summary>
    public Random Random { get; }

    /// <summary>The clock of the store and of every process.</summary>
    public SimulatedClock Clock { get; }

    /// <summary>The runtime's random source (retry jitter), drawn from <see cref="Random"/>.</summary>
    public IRandomSource RandomSource { get; }

    /// <summary>Pieces of work run so far.</summary>
    public long Steps { get; private set; }

    /// <summary>Work that reached the simulation from another thread, which the seed does not control (none, or the run is not reproducible).</summary>
    public IReadOnlyList<string> Uncontrolled => _uncontrolled;

    /// <summary>A hash of every store operation in order, with the process that made it and the time: equal for equal runs.</summary>
    public string TraceHash => _trace.ToString("x16", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>A new scheduler, for a process or for the director.</summary>
    public ProcessScheduler NewScheduler(string name) => new(this, name);

    /// <summary>Adds <paramref name="what"/> to the trace.</summary>
    public void Trace(string what)
    {
        ArgumentNullException.ThrowIfNull(what);
        EnsureOnThread(what);
        foreach (var c in what)
        {
            _trace = (_trace ^ c) * 1099511628211UL;
        }

        _trace = (_trace ^ (ulong)Clock.GetTimestamp()) * 1099511628211UL;
        Log?.Invoke($"{Clock.GetUtcNow() - Simulator.Start:mm\\:ss\\.fff} {what}");
    }

    /// <summary>Notes work or a store operation that arrived from a thread other than the simulation's.</summary>
    public void EnsureOnThread(string what)
    {
        if (Environment.CurrentManagedThreadId != _thread)
        {
            lock (_uncontrolled)
            {
                // The first one's stack says where the escape came from.
                _uncontrolled.Add($"{what} on thread {Environment.CurrentManagedThreadId}" + (_uncontrolled.Count == 0 ? Environment.NewLine + Environment.StackTrace : ""));
            }
        }
    }

    /// <summary>Kills <paramref name="scheduler"/>'s process: its queued work is dropped, and it runs nothing more.</summary>
    public void Kill(ProcessScheduler scheduler)
    {
        ArgumentNullException.ThrowIfNull(scheduler);
        scheduler.Die();
        _ready.RemoveAll(r => r.Scheduler == scheduler);
    }

    /// <summary>
    /// Runs ready work, one piece at a time in the order the seed picks, until <paramref name="until"/> completes. When
    /// nothing is ready the clock moves to the next timer; now and then (<paramref name="jumpChance"/> a step) it jumps
    /// ahead by up to <paramref name="maxJump"/>, past leases and timeouts. Returns why it stopped early, or <c>null</c>.
    /// </summary>
    public string? RunUntil(Task until, DateTimeOffset deadline, long maxSteps, double jumpChance, TimeSpan maxJump)
    {
        ArgumentNullException.ThrowIfNull(until);
        while (!until.IsCompleted)
        {
            if (Steps >= maxSteps)
            {
                return $"still running after {maxSteps} steps";
            }

            if (jumpChance > 0 && Random.NextDouble() < jumpChance)
            {
                Clock.AdvanceTo(Clock.GetUtcNow() + maxJump * Random.NextDouble());
            }

            if (_ready.Count == 0)
            {
                if (Clock.NextDue is not { } due)
                {
                    return "nothing is ready and no timer is set: the run is stuck";
                }

                if (due > deadline)
                {
                    return $"not finished by {deadline:O}";
                }

                Clock.AdvanceTo(due);
                continue;
            }

            ProcessScheduler scheduler;
            Task task;
            lock (_ready)
            {
                // Locked only against work that arrived from another thread, which the run reports as uncontrolled.
                var pick = Random.Next(_ready.Count);
                (scheduler, task) = _ready[pick];
                _ready[pick] = _ready[^1];
                _ready.RemoveAt(_ready.Count - 1);
            }

            Steps++;
            scheduler.Execute(task);
        }

        return null;
    }

    internal void Enqueue(ProcessScheduler scheduler, Task task)
    {
        EnsureOnThread($"work of {scheduler.Name}");
        lock (_ready)
        {
            _ready.Add((scheduler, task));
        }
    }

    internal IEnumerable<Task> QueuedOf(ProcessScheduler scheduler) => [.. _ready.Where(r => r.Scheduler == scheduler).Select(r => r.Task)];

    sealed class SeededRandomSource(Random random) : IRandomSource
    {
        public double NextDouble() => random.NextDouble();
    }
}
