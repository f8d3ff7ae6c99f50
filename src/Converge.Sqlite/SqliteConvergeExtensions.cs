using Converge.Runtime;

namespace Converge.Sqlite;

/// <summary>Chooses the SQLite store.</summary>
public static class SqliteConvergeExtensions
{
    /// <summary>
    /// Stores everything in the SQLite file at <paramref name="path"/> (WAL mode, <c>synchronous=FULL</c> unless
    /// <paramref name="configure"/> says otherwise). Several processes may share the file on one machine. Also sets
    /// <see cref="RetryOptions.DatabaseErrors"/> to <see cref="SqliteErrors.IsTransient"/>, so a handler's UNIQUE or
    /// CHECK violation is dead-lettered at once while busy and locked errors are retried.
    /// </summary>
    public static ConvergeOptions UseSqlite(this ConvergeOptions options, string path, Action<SqliteStoreOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var storeOptions = new SqliteStoreOptions { Path = path };
        configure?.Invoke(storeOptions);
        storeOptions.Validate();
        options.StoreFactory = context => new SqliteMessageStore(storeOptions, context.TimeProvider);
        options.Retry.DatabaseErrors = SqliteErrors.IsTransient;
        return options;
    }
}
