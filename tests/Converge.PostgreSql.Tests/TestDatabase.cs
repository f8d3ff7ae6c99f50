using Npgsql;

namespace Converge.PostgreSql.Tests;

/// <summary>
/// The PostgreSQL server the tests run against, from <c>CONVERGE_TEST_POSTGRES</c> (set by <c>./test.sh</c>, which
/// starts a throw-away server). Each test class takes schemas of its own and drops them when it ends.
/// </summary>
public sealed class TestDatabase : IAsyncDisposable
{
    public const string Variable = "CONVERGE_TEST_POSTGRES";

    readonly List<string> _schemas = [];
    readonly string _prefix = "t" + Guid.NewGuid().ToString("N")[..12];

    public static string ConnectionString =>
        Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } value
            ? value
            : throw new InvalidOperationException($"{Variable} is not set. Run ./test.sh, which starts PostgreSQL, or start one with scripts/services.sh start DIR and source DIR/services.env.");

    /// <summary>A schema name unique to this test class and <paramref name="name"/>; dropped on dispose.</summary>
    public string Schema(string name)
    {
        var schema = _prefix + "_" + name.ToLowerInvariant();
        lock (_schemas)
        {
            if (!_schemas.Contains(schema))
            {
                _schemas.Add(schema);
            }
        }

        return schema;
    }

    /// <summary>The connection string with <paramref name="schema"/> first on the search path, so test tables live beside the store's.</summary>
    public static string ConnectionStringFor(string schema) =>
        new NpgsqlConnectionStringBuilder(ConnectionString) { SearchPath = schema }.ConnectionString;

    public async ValueTask DisposeAsync()
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        foreach (var schema in _schemas)
        {
            await using var drop = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", connection);
            await drop.ExecuteNonQueryAsync();
        }
    }
}
