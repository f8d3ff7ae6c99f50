namespace Converge.Bench;

/// <summary>The bench's scratch files: a SQLite database and its WAL and shared-memory companions.</summary>
internal static class BenchFiles
{
    static readonly string[] Suffixes = ["", "-wal", "-shm", "-journal"];

    public static string NewTempFolder()
    {
        var folder = Path.Combine(Path.GetTempPath(), "converge-bench-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        return folder;
    }

    public static bool Exists(string path) => Suffixes.Any(suffix => File.Exists(path + suffix));

    public static void Delete(string path)
    {
        foreach (var suffix in Suffixes)
        {
            File.Delete(path + suffix);
        }
    }

    public static void DeleteFolder(string folder)
    {
        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (IOException)
        {
            // Left for the system's temp clean-up.
        }
    }
}

/// <summary>The shape every bench shares: a fresh file per run, an unreported warm-up first, progress per run.</summary>
internal static class BenchRuns
{
    /// <summary>Stops <paramref name="host"/> unless a run already did (to verify the store at rest), then disposes it.</summary>
    public static async Task StopAndDisposeAsync(Microsoft.Extensions.Hosting.IHost host, bool stopped)
    {
        if (!stopped)
        {
            await host.StopAsync(CancellationToken.None);
        }

        if (host is IAsyncDisposable asyncDisposable)
        {
            await asyncDisposable.DisposeAsync();
        }
        else
        {
            host.Dispose();
        }
    }

    /// <summary>
    /// Runs <paramref name="runOnce"/> once to warm up (with at most <paramref name="warmupCount"/> items; 0 skips it),
    /// then <paramref name="runs"/> times on a new file at <paramref name="dbPath"/> (or a temporary one), reporting
    /// each run with <paramref name="describe"/>.
    /// </summary>
    public static async Task<List<T>> RunAsync<T>(
        string? dbPath, string? postgres, int count, int runs, int warmupCount, string unit, TextWriter progress,
        Func<string, int, bool, Task<T>> runOnce, Func<T, string> describe)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(runs, 1);
        if (postgres is not null && dbPath is not null)
        {
            throw new ArgumentException("Give the bench a SQLite file or a PostgreSQL connection, not both.", nameof(postgres));
        }

        if (dbPath is { } given && BenchFiles.Exists(given))
        {
            throw new InvalidOperationException($"{given} already exists; the bench needs a new file (it is recreated for every run).");
        }

        var temp = dbPath is null && postgres is null ? BenchFiles.NewTempFolder() : null;
        try
        {
            var path = dbPath ?? (temp is null ? "" : Path.Combine(temp, "bench.db"));
            if (warmupCount > 0)
            {
                var warmup = Math.Min(warmupCount, count);
                await progress.WriteLineAsync($"warm-up: {warmup} {unit}");
                var location = BenchStores.Fresh(postgres, path, ".warmup");
                try
                {
                    await runOnce(location, warmup, true);
                }
                finally
                {
                    await BenchStores.DeleteAsync(postgres, location);
                }
            }

            var results = new List<T>();
            for (var run = 1; run <= runs; run++)
            {
                var location = BenchStores.Fresh(postgres, path);
                if (postgres is null)
                {
                    BenchFiles.Delete(location);
                }

                T result;
                try
                {
                    result = await runOnce(location, count, false);
                }
                finally
                {
                    if (postgres is not null)
                    {
                        await BenchStores.DeleteAsync(postgres, location);
                    }
                }

                results.Add(result);
                await progress.WriteLineAsync($"run {run}/{runs}: {describe(result)} (verified)");
            }

            return results;
        }
        finally
        {
            if (temp is not null)
            {
                BenchFiles.DeleteFolder(temp);
            }
        }
    }
}
