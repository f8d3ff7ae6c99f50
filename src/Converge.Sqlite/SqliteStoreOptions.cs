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

    /// <summary>
    /// Prefix of every table Converge creates: lower-case letters, digits and '_', starting with a letter, at most 41
    /// characters, and not starting with <c>sqlite_</c> (SQLite reserves those table names). Default <c>converge_</c>.
    /// </summary>
    public string TablePrefix { get; set; } = "converge_";

    /// <summary>How long a writer waits for another process's write lock before failing. Default 30 s.</summary>
    public TimeSpan BusyTimeout { get; set; } = TimeSpan.FromSeconds(30);

    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(Path))
        {
            throw new ArgumentException("The SQLite store needs a file: options.UseSqlite(\"converge.db\").", nameof(Path));
        }

        if (TablePrefix is null || !PrefixPattern().IsMatch(TablePrefix))
        {
            throw new ArgumentException($"TablePrefix '{TablePrefix}' is not valid: use lower-case letters, digits and '_', starting with a letter, at most 41 characters (for example 'converge_').", nameof(TablePrefix));
        }

        if (TablePrefix.StartsWith(ReservedPrefix, StringComparison.Ordinal))
        {
            throw new ArgumentException($"TablePrefix '{TablePrefix}' is reserved: SQLite keeps table names starting with '{ReservedPrefix}' for itself and refuses to create them. Choose another prefix (for example 'converge_').", nameof(TablePrefix));
        }

        if (BusyTimeout < TimeSpan.Zero)
        {
            throw new ArgumentException("BusyTimeout must not be negative (default 30 seconds).", nameof(BusyTimeout));
        }
    }

    /// <summary>SQLite refuses to create tables whose names start with this (https://www.sqlite.org/fileformat2.html#intschema).</summary>
    const string ReservedPrefix = "sqlite_";

    // \z, not $: '$' also matches before a final newline, which would let "abc\n" through.
    [GeneratedRegex(@"^[a-z][a-z0-9_]{0,40}\z")]
    private static partial Regex PrefixPattern();
}
