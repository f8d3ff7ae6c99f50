using System.Data.Common;
using Npgsql;

namespace Converge.PostgreSql;

/// <summary>
/// Which PostgreSQL errors are worth retrying; <c>UsePostgreSql</c> installs <see cref="IsTransient"/> as
/// <see cref="Runtime.RetryOptions.DatabaseErrors"/>.
/// </summary>
public static class PostgreSqlErrors
{
    /// <summary>
    /// Judges a <see cref="PostgresException"/> by its SQLSTATE: class 23 (integrity constraint violations: unique,
    /// foreign key, check, not null, exclusion) is permanent; <c>40001</c> (serialization failure), <c>40P01</c>
    /// (deadlock), class 08 (connection), class 53 (insufficient resources) and <c>57P01</c>-<c>57P05</c> (the server
    /// shutting down or not accepting connections yet) are transient; any other SQLSTATE asks Npgsql's
    /// <see cref="NpgsqlException.IsTransient"/> (true for lock-not-available, I/O and system errors, among others).
    /// An <see cref="NpgsqlException"/> without a SQLSTATE (a broken socket, a timeout) and another provider's
    /// exception are judged by their own <see cref="DbException.IsTransient"/>.
    /// </summary>
    public static bool IsTransient(DbException exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        if (exception is not PostgresException { SqlState: { Length: 5 } state } postgres)
        {
            return exception.IsTransient;
        }

        return state switch
        {
            _ when state.StartsWith("23", StringComparison.Ordinal) => false,
            "40001" or "40P01" => true,
            _ when state.StartsWith("08", StringComparison.Ordinal) || state.StartsWith("53", StringComparison.Ordinal) => true,
            "57P01" or "57P02" or "57P03" or "57P04" or "57P05" => true,
            _ => postgres.IsTransient,
        };
    }
}
