using System.Diagnostics;

namespace Converge.Cli.Tests;

/// <summary>
/// bench/peers_table.py, which turns the rounds of <c>bench/run.sh --peers</c> into the table of the speed targets: a
/// target is met only by verified runs, a run that failed its verification counts for nothing however fast it was, and
/// a peer that could not run says why instead of giving a ratio.
/// </summary>
public sealed class PeersTableTests
{
    static string RepositoryRoot()
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, "Converge.slnx")))
            {
                return folder.FullName;
            }
        }

        throw new InvalidOperationException("The tests run outside the repository: Converge.slnx not found above " + AppContext.BaseDirectory);
    }

    static string Table(TempFolder work, int rounds)
    {
        var start = new ProcessStartInfo("python3") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var argument in new[] { Path.Combine(RepositoryRoot(), "bench", "peers_table.py"), work.Path, work.File("out"), "test", "now", rounds.ToString(System.Globalization.CultureInfo.InvariantCulture), "true" })
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        var errors = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, errors);
        return File.ReadAllText(work.File("out.md"));
    }

    static string Row(string table, string path) => table.Split('\n').Single(l => l.StartsWith($"| {path} |", StringComparison.Ordinal));

    [Fact]
    public void Only_verified_runs_meet_a_target_and_a_peer_that_could_not_run_says_why()
    {
        using var work = new TempFolder();
        // Round 1 verified at 3x the peer; round 2 four times faster still, but its verification failed.
        File.WriteAllText(work.File("messages.1.json"), """{"per_second": 30000, "verified": true, "peak_working_set_mb": 100}""");
        File.WriteAllText(work.File("messages.2.json"), """{"per_second": 120000, "verified": false, "peak_working_set_mb": 100}""");
        File.WriteAllText(work.File("masstransit.1.txt"), "masstransit consume n=1 seconds=1 per_s=10000\n");
        File.WriteAllText(work.File("masstransit.2.txt"), "masstransit consume n=1 seconds=1 per_s=10000\n");
        File.WriteAllText(work.File("wolverine_sqlite.2.log"), "error: the peer did not build\n");
        File.WriteAllText(work.File("sagas.1.json"), """{"per_second": 100000, "verified": false, "peak_working_set_mb": 100}""");
        File.WriteAllText(work.File("masstransit_saga.1.txt"), "per_s=1000\n");

        var table = Table(work, rounds: 2);

        Assert.Contains("| 30,000 msg/s | 100 MB | MassTransit 8 in-memory, not durable: 10,000/s (runs 10,000–10,000) | 3.00 | ≥ 2 | yes |", Row(table, "SQLite, durable messages (outbox, handler row + inbox, complete)"), StringComparison.Ordinal);
        Assert.Contains("could not run (error: the peer did not build)", Row(table, "same, vs a durable peer"), StringComparison.Ordinal);
        Assert.EndsWith("| **no** |", Row(table, "same, vs a durable peer").TrimEnd(), StringComparison.Ordinal);
        Assert.Contains("| ? saga/s |", Row(table, "durable 3-step saga"), StringComparison.Ordinal);
        Assert.EndsWith("| **no** |", Row(table, "durable 3-step saga").TrimEnd(), StringComparison.Ordinal);
    }
}
