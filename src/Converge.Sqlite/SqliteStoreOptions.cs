using System.Text.RegularExpressions;

namespace Converge.Sqlite;

/// <summary>How durably SQLite commits. See https://www.sqlite.org/pragma.html#pragma_synchronous.</summary>
public enum SqliteDurability
{
    /// <summary>
    /// <c>synchronous=FULL</c> (the default): every commit is on disk before it returns, so nothing
    /// acknowledged is lost even if the machine loses power.
    /// </summary>
    Full,

    /// <summary>
    /// <c>synchronous=NORMAL</c>: faster commits; still safe against a crashed process, but the last commits
    /// before a power loss or operating-system crash can be rolled back. The database is never corrupted.
    /// Messages acknowledged just before such a crash may be lost, and handled ones redelivered.
    /// </summary>
    Normal,
}

/// <summary>Options of the SQLite store.</summary>
public sealed partial class SqliteStoreOptions
{
    /// <summary>The database file. Required; created when missing.</summary>
    public string Path { get; set; } = "";

    /// <summary>Commit durability. Default <see cref="SqliteDurability.Full"/>.</summary>
    public SqliteDurability Durability { get; set; } = SqliteDurability.Full;

    /// <summary>Prefix of every table Converge creates: lower-case letters, digits and '_'. Default <c>converge_</c>.</summary>
    public string TablePrefix { get; set; } = "converge_";

    /// <summary>How long a writer waits for another process's write lock before failing. Default 30 s.</summary>
    public TimeSpan BusyTimeout { get; set; } = TimeSpan.FromSeconds(30);

    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(Path))
        {
            throw new ArgumentException("The SQLite store needs a file: options.UseSqlite(\"converge.db\").", nameof(Path));
        }

        if (!PrefixPattern().IsMatch(TablePrefix))
        {
            throw new ArgumentException($"TablePrefix '{TablePrefix}' is not valid: use lower-case letters, digits and '_', starting with a letter (for example 'converge_').", nameof(TablePrefix));
        }

        if (BusyTimeout < TimeSpan.Zero)
        {
            throw new ArgumentException("BusyTimeout must not be negative (default 30 seconds).", nameof(BusyTimeout));
        }
    }

    [GeneratedRegex("^[a-z][a-z0-9_]{0,40}$")]
    private static partial Regex PrefixPattern();
}
