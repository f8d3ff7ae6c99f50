using Converge.Runtime;

namespace Converge.PostgreSql;

/// <summary>Chooses the PostgreSQL store.</summary>
public static class PostgreSqlConvergeExtensions
{
    /// <summary>
    /// Stores everything in PostgreSQL at <paramref name="connectionString"/>, in the schema
    /// <see cref="PostgreSqlStoreOptions.Schema"/> (default <c>converge</c>, created when missing). Any number of
    /// processes may share the database: claims skip rows other processes hold, and commits wake workers everywhere
    /// through <c>LISTEN/NOTIFY</c>. Also sets <see cref="RetryOptions.DatabaseErrors"/> to
    /// <see cref="PostgreSqlErrors.IsTransient"/>, so an integrity violation is dead-lettered at once while
    /// serialization failures, deadlocks and lost connections are retried.
    /// </summary>
    public static ConvergeOptions UsePostgreSql(this ConvergeOptions options, string connectionString, Action<PostgreSqlStoreOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var storeOptions = new PostgreSqlStoreOptions { ConnectionString = connectionString };
        configure?.Invoke(storeOptions);
        storeOptions.Validate();
        options.StoreFactory = context => new PostgreSqlMessageStore(storeOptions, context.TimeProvider);
        options.Retry.DatabaseErrors = PostgreSqlErrors.IsTransient;
        return options;
    }
}
