using System.Data.Common;
using Converge.PostgreSql;
using Converge.RabbitMq;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Transports;
using Npgsql;

namespace Converge.Bench;

/// <summary>
/// Where a bench run keeps its store: a new SQLite file, or, with a PostgreSQL connection string, a new schema in
/// that database (dropped after the run, like the temporary file).
/// </summary>
internal static class BenchStores
{
    /// <summary>A location for a fresh run: a schema name on PostgreSQL, else the file <paramref name="path"/> itself.</summary>
    public static string Fresh(string? postgres, string path, string suffix = "") =>
        postgres is null ? path + suffix : "bench_" + Guid.NewGuid().ToString("N")[..12] + suffix.Replace('.', '_');

    /// <summary>Points <paramref name="options"/> at <paramref name="location"/>, with the store's tables first on the search path.</summary>
    public static void Use(ConvergeOptions options, string? postgres, string location, SqliteDurability durability, Uri? rabbitMq = null)
    {
        if (postgres is null)
        {
            options.UseSqlite(location, s => s.Durability = durability);
        }
        else
        {
            var connection = new NpgsqlConnectionStringBuilder(postgres) { SearchPath = location };
            options.UsePostgreSql(connection.ConnectionString, s => s.Schema = location);
        }

        if (rabbitMq is not null)
        {
            // A run's queues apart from every other run's on the broker.
            options.UseRabbitMq(rabbitMq, r => r.QueuePrefix = "bench-" + Guid.NewGuid().ToString("N")[..12] + ".");
        }
    }

    /// <summary>A connection for the bench's own tables, beside the store's.</summary>
    public static async Task<DbConnection> OpenConnectionAsync(IMessageStore store) => store switch
    {
        TransportedStore transported => await OpenConnectionAsync(transported.Store),
        SqliteMessageStore sqlite => sqlite.OpenConnection(),
        PostgreSqlMessageStore postgres => await postgres.OpenConnectionAsync(),
        _ => throw new NotSupportedException($"The bench does not know the store '{store.Name}'."),
    };

    /// <summary>
    /// One of Converge's tables as the bench's SQL names it: prefixed on SQLite, plain on PostgreSQL (where the
    /// search path finds it in the run's schema).
    /// </summary>
    public static string Table(IMessageStore store, string name) =>
        store is PostgreSqlMessageStore or TransportedStore { Store: PostgreSqlMessageStore } ? name : "converge_" + name;

    /// <summary>A column type for a message id in the bench's own tables.</summary>
    public static string IdColumnType(IMessageStore store) => store is PostgreSqlMessageStore or TransportedStore { Store: PostgreSqlMessageStore } ? "uuid" : "BLOB";

    /// <summary>Where the run's store is, for messages.</summary>
    public static string Describe(IMessageStore store) => store switch
    {
        TransportedStore transported => Describe(transported.Store) + " with " + transported.Transport.Name,
        SqliteMessageStore sqlite => sqlite.Path,
        PostgreSqlMessageStore postgres => "schema " + postgres.SchemaName,
        _ => store.Name,
    };

    /// <summary>Removes a run's store: its SQLite files, or its schema.</summary>
    public static async Task DeleteAsync(string? postgres, string location)
    {
        if (postgres is null)
        {
            BenchFiles.Delete(location);
            return;
        }

        await using var connection = new NpgsqlConnection(postgres);
        await connection.OpenAsync();
        await using var drop = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{location}\" CASCADE", connection);
        await drop.ExecuteNonQueryAsync();
    }
}
