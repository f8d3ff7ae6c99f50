namespace Converge.Testing.Simulation;

/// <summary>The faults and limits of one simulated run; the seed draws the rest.</summary>
public sealed record SimulationOptions
{
    /// <summary>Processes that share the store from the start. Default 2.</summary>
    public int Processes { get; init; } = 2;

    /// <summary>Crashes at most, over the whole run. Default 3.</summary>
    public int MaxCrashes { get; init; } = 3;

    /// <summary>The chance that a process dies at some store operation of its first <see cref="CrashWithin"/>. Default 0.6.</summary>
    public double CrashChance { get; init; } = 0.6;

    /// <summary>The range of store operations a crash falls in. Default 400.</summary>
    public int CrashWithin { get; init; } = 400;

    /// <summary>
    /// The chance that a store call fails: the connection drops, taking its transaction with it, or (for a commit) the
    /// commit happens and its acknowledgement is lost. Default 0.003: a few faults in most runs. A failure counts as
    /// its message's attempt like any other, so at rates near 0.01 a message handled alone now and then fails its five
    /// attempts and is dead-lettered, as it would be on a database that failed one transaction in ten.
    /// </summary>
    public double FaultChance { get; init; } = 0.003;

    /// <summary>The chance, at each step, that the clock jumps ahead. Default 0.002.</summary>
    public double ClockJumpChance { get; init; } = 0.002;

    /// <summary>The longest jump. Default 3 seconds, past a lease of the scenarios' 1 second.</summary>
    public TimeSpan MaxClockJump { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>How long after a crash its replacement starts: up to this, drawn. Default 3 seconds.</summary>
    public TimeSpan MaxRestartDelay { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Simulated time the work has to settle. Default 30 minutes.</summary>
    public TimeSpan Deadline { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>Steps the work has to settle. Default 2,000,000.</summary>
    public long MaxSteps { get; init; } = 2_000_000;

    /// <summary>Receives every store operation as it happens (<c>00:01.250 p1 #12 IQueueStore.ClaimAsync</c>), for a replay that shows its run; <c>null</c> (default): none.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>No faults, crashes or jumps: only the order of work follows the seed.</summary>
    public static SimulationOptions Calm { get; } = new() { CrashChance = 0, FaultChance = 0, ClockJumpChance = 0 };
}

/// <summary>What one seed did and what was wrong after it.</summary>
/// <param name="Scenario">The scenario's name.</param>
/// <param name="Seed">The seed.</param>
/// <param name="Violations">The broken properties, and why the run stopped early if it did; empty when all is well.</param>
/// <param name="Crashes">The operations processes died at, as <c>p1 #137 IQueueTransaction.CompleteAsync</c>.</param>
/// <param name="Steps">Pieces of work run.</param>
/// <param name="Operations">Store operations over all processes.</param>
/// <param name="Faults">Store faults met: failed calls and lost acknowledgements.</param>
/// <param name="SimulatedTime">Simulated time the run took.</param>
/// <param name="Trace">A hash of every store operation in order: the same for every replay of the seed.</param>
public sealed record SimulationResult(
    string Scenario,
    int Seed,
    IReadOnlyList<string> Violations,
    IReadOnlyList<string> Crashes,
    long Steps,
    int Operations,
    int Faults,
    TimeSpan SimulatedTime,
    string Trace)
{
    /// <summary>Whether every property held.</summary>
    public bool Passed => Violations.Count == 0;
}
