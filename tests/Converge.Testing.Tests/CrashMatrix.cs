using System.Diagnostics;
using Converge.Storage;
using Converge.Testing.Faults;
using Xunit.Abstractions;

namespace Converge.Testing.Tests;

/// <summary>What a crash-point matrix found: the operation each crash hit, and what was wrong after each.</summary>
public sealed record CrashMatrixResult(IReadOnlyList<string> Points, IReadOnlyList<string> Violations, int Operations, TimeSpan Elapsed);

/// <summary>
/// Runs a scenario with its host killed at store operation 1, 2, ... until a run ends without a crash. One run: a host
/// behind the plan does the work until it dies or the work settles; after a crash, a new host on the same database
/// (once the dead one's leases ran out) finishes it; then the scenario judges the outcome.
/// </summary>
public static class CrashMatrix
{
    /// <summary>
    /// The matrix over <paramref name="scenario"/>, which creates a fresh database for each run: a crash at operation
    /// 1, then 1 + <paramref name="every"/>, and so on (every one by default; a sample where a run costs more).
    /// </summary>
    public static async Task<CrashMatrixResult> RunAsync(Func<CrashPlan, Task<List<string>>> scenario, int every = 1)
    {
        var points = new List<string>();
        var violations = new List<string>();
        var started = Stopwatch.GetTimestamp();
        for (var at = 1; ; at += every)
        {
            var plan = new CrashPlan(at);
            var found = await scenario(plan);
            violations.AddRange(found.Select(v => $"crash at {at} ({plan.CrashedAt}): {v}"));
            if (!plan.Crashed)
            {
                return new CrashMatrixResult(points, violations, plan.Operations, Stopwatch.GetElapsedTime(started));
            }

            points.Add(plan.CrashedAt!);
        }
    }

    /// <summary>
    /// One run: <paramref name="start"/> a host (behind <paramref name="plan"/>, or not), <paramref name="work"/> on it,
    /// and wait until it dies or <paramref name="settled"/>; after a crash, jump <paramref name="clock"/> past the
    /// leases, start a new host, <paramref name="work"/> again (work must skip what is done) and wait until settled.
    /// </summary>
    public static async Task CrashThenRecoverAsync(
        CrashPlan plan,
        JumpingClock clock,
        Func<CrashPlan?, Task<ConvergeTestHost>> start,
        Func<ConvergeTestHost, Task> work,
        Func<Task<bool>> settled)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ConvergeTestHost? doomed = null;
        try
        {
            doomed = await start(plan);
            await work(doomed);
            await Eventually.UntilAsync(async () => plan.Crashed || await settled(), () => "the work to settle or the host to die");
        }
        catch (SimulatedCrashException)
        {
            // The host died starting or doing the work: what it committed goes on.
        }
        finally
        {
            if (doomed is not null)
            {
                await doomed.DisposeAsync();
            }
        }

        if (plan.Crashed)
        {
            // The new host starts after the dead one's leases have run out, as a process restarted by its supervisor does.
            clock.Jump(TimeSpan.FromSeconds(2));
            await using var restarted = await start(null);
            await work(restarted);
            await Eventually.UntilAsync(settled, () => $"the work to settle after a crash at {plan.At} ({plan.CrashedAt})");
        }
    }

    /// <summary>What is still queued or dead-lettered in <paramref name="store"/>.</summary>
    public static async Task<List<string>> LeftoversAsync(IMessageStore store) => (await StoreLeftovers.ReadAsync(store)).All;

    /// <summary>
    /// How far apart a sampled matrix's crash points are: <paramref name="sample"/> in the test command, every
    /// operation when <c>CONVERGE_CRASH_MATRIX=full</c> (the full matrix's own run, minutes on a server).
    /// </summary>
    public static int Every(int sample) => Environment.GetEnvironmentVariable("CONVERGE_CRASH_MATRIX") == "full" ? 1 : sample;

    /// <summary>Whether nothing is ready, in flight or scheduled in <paramref name="store"/>.</summary>
    public static async Task<bool> QueuesEmptyAsync(IMessageStore store) => (await StoreLeftovers.ReadAsync(store)).Queued.Count == 0;

    /// <summary>Writes the matrix's size, the operations it crashed at by kind, and the first violations.</summary>
    public static void Report(ITestOutputHelper output, string title, CrashMatrixResult result)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(result);
        output.WriteLine($"{title}: {result.Points.Count} crash points over runs of up to {result.Operations} store operations, {result.Violations.Count} violation(s), {result.Elapsed.TotalSeconds:F1} s");
        foreach (var kind in result.Points.GroupBy(p => p).OrderByDescending(g => g.Count()))
        {
            output.WriteLine($"  {kind.Count(),4}  {kind.Key}");
        }

        foreach (var violation in result.Violations.Take(10))
        {
            output.WriteLine(violation);
        }
    }
}
