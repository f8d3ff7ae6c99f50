using System.Text.RegularExpressions;
using Npgsql;

namespace Converge.PostgreSql;

/// <summary>Options of the PostgreSQL store.</summary>
public sealed partial class PostgreSqlStoreOptions
{
    /// <summary>
    /// The Npgsql connection string. Required. Converge adds automatic statement preparation when the string does
    /// not set it; everything else (pool size, timeouts, TLS) is the caller's.
    /// </summary>
    public string ConnectionString { get; set; } = "";

    /// <summary>
    /// The schema that holds every Converge table: lower-case letters, digits and '_', starting with a letter or '_',
    /// at most 50 characters. Not a name PostgreSQL keeps for itself (starting with <c>pg_</c>, such as
    /// <c>pg_catalog</c>) or for its catalog views (<c>information_schema</c>). Created when missing. Default
    /// <c>converge</c>. Several applications, or several test runs, can share one database with a schema each.
    /// </summary>
    public string Schema { get; set; } = "converge";

    /// <summary>
    /// How long to wait before reconnecting the notification listener after it lost its connection. Default 1 s.
    /// While it is down, workers fall back to their polling interval.
    /// </summary>
    public TimeSpan ListenerReconnectDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Write transactions one job queue's worker runs at once (finished jobs committed in parallel groups). Default 2
    /// (on 2 cores, 4 and 8 measured slower: the commits then contend for the same index pages and CPU);
    /// each takes a connection from the pool while it commits.
    /// </summary>
    public int ParallelWriters { get; set; } = 2;

    internal void Validate()
    {
        if (ParallelWriters is < 1 or > 16)
        {
            throw new ArgumentException($"ParallelWriters must be between 1 and 16 (default 2); got {ParallelWriters}.", nameof(ParallelWriters));
        }

        if (string.IsNullOrWhiteSpace(ConnectionString))
        {
            throw new ArgumentException("The PostgreSQL store needs a connection string: options.UsePostgreSql(\"Host=127.0.0.1;Username=app;Database=app\").", nameof(ConnectionString));
        }

        try
        {
            _ = new NpgsqlConnectionStringBuilder(ConnectionString);
        }
        catch (ArgumentException exception)
        {
            throw new ArgumentException($"The PostgreSQL connection string is not valid: {exception.Message}", nameof(ConnectionString), exception);
        }

        if (Schema is null || !SchemaPattern().IsMatch(Schema))
        {
            throw new ArgumentException($"Schema '{Schema}' is not valid: use lower-case letters, digits and '_', starting with a letter or '_', at most 50 characters (for example 'converge').", nameof(Schema));
        }

        if (Schema.StartsWith("pg_", StringComparison.Ordinal))
        {
            throw new ArgumentException($"Schema '{Schema}' is reserved: PostgreSQL keeps schema names starting with 'pg_' for its own (pg_catalog, pg_toast, pg_temp_N) and refuses to create them. Choose a schema of your own (for example 'converge').", nameof(Schema));
        }

        if (Schema == "information_schema")
        {
            throw new ArgumentException("Schema 'information_schema' holds PostgreSQL's catalog views, not application tables. Choose a schema of your own (for example 'converge').", nameof(Schema));
        }

        if (ListenerReconnectDelay < TimeSpan.Zero)
        {
            throw new ArgumentException("ListenerReconnectDelay must not be negative (default 1 second).", nameof(ListenerReconnectDelay));
        }
    }

    // \z, not $: '$' also matches before a final newline, which would let "abc\n" through and create a schema "abc\n".
    [GeneratedRegex(@"^[a-z_][a-z0-9_]{0,49}\z")]
    private static partial Regex SchemaPattern();
}
