using System.Data.Common;
using Converge.Storage;

namespace Converge.Projections;

/// <summary>What a projection's calls receive: its name, version, table names and the transaction to write in.</summary>
public sealed class ProjectionContext
{
    readonly IDatabaseStore _database;

    internal ProjectionContext(string name, int version, IDatabaseStore database, IStoreTransaction transaction)
    {
        Name = name;
        Version = version;
        _database = database;
        StoreTransaction = transaction;
        Database = transaction.Database();
    }

    /// <summary>The projection's name.</summary>
    public string Name { get; }

    /// <summary>The version being built or kept up to date.</summary>
    public int Version { get; }

    /// <summary>The SQL dialect of the store's database.</summary>
    public SqlDialect Dialect => _database.Dialect;

    /// <summary>The open transaction: the projection's writes commit with the checkpoint, or not at all.</summary>
    public IDatabaseTransaction Database { get; }

    /// <summary>The same transaction as the ADO.NET one, for commands of the caller's own (Dapper, EF Core).</summary>
    public DbTransaction Transaction => Database.Transaction;

    /// <summary>The store transaction, to append events or send messages as part of the batch.</summary>
    public IStoreTransaction StoreTransaction { get; }

    /// <summary>
    /// The quoted physical name of this version's table <paramref name="table"/> (one of
    /// <see cref="IProjection.Tables"/>), ready to put in SQL: for example <c>"converge_order_totals_v2_totals"</c>.
    /// </summary>
    public string Table(string table) => _database.TableName(ProjectionNames.Table(Name, Version, table));
}
