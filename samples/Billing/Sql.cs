using System.Data.Common;
using System.Globalization;

namespace Converge.Samples.Billing;

/// <summary>
/// Small helpers for reading with plain ADO.NET (the read connection a job opens, or the demo's own), on SQLite or
/// PostgreSQL alike: parameters are named <c>@name</c>, which both understand.
/// </summary>
internal static class Sql
{
    public static DbCommand Command(this DbConnection connection, string sql, params (string Name, object? Value)[] parameters)
    {
        var command = connection.CreateCommand();
        command.CommandText = sql;
        foreach (var (name, value) in parameters)
        {
            var parameter = command.CreateParameter();
            parameter.ParameterName = name;
            parameter.Value = value ?? DBNull.Value;
            command.Parameters.Add(parameter);
        }

        return command;
    }

    /// <summary>The first row mapped by <paramref name="map"/>, or <c>default</c> when there is none.</summary>
    public static async Task<T?> ReadOneAsync<T>(this DbConnection connection, string sql, Func<DbDataReader, T> map, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters)
    {
        await using var command = connection.Command(sql, parameters);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? map(reader) : default;
    }

    /// <summary>Every row mapped by <paramref name="map"/>.</summary>
    public static async Task<List<T>> ReadAllAsync<T>(this DbConnection connection, string sql, Func<DbDataReader, T> map, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters)
    {
        await using var command = connection.Command(sql, parameters);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var rows = new List<T>();
        while (await reader.ReadAsync(cancellationToken))
        {
            rows.Add(map(reader));
        }

        return rows;
    }

    public static async Task<long> ScalarAsync(this DbConnection connection, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters)
    {
        await using var command = connection.Command(sql, parameters);
        var value = await command.ExecuteScalarAsync(cancellationToken);
        return value is null or DBNull ? 0 : Convert.ToInt64(value, CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// A whole number, whatever type the database gives it: PostgreSQL's sum of a BIGINT column is numeric, and
    /// SQLite answers a 32-bit int for small ones.
    /// </summary>
    public static long Int64(this DbDataReader reader, int ordinal) => Convert.ToInt64(reader.GetValue(ordinal), CultureInfo.InvariantCulture);

    public static string? NullableString(this DbDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);

    public static long? NullableInt64(this DbDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetInt64(ordinal);
}
