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
