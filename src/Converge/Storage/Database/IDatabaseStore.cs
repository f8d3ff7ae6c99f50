using System.Data.Common;

namespace Converge.Storage;

/// <summary>
/// Optional: a store on an ADO.NET database that the application shares. It offers the outbox on the application's own
/// transaction (<see cref="Enlist"/>) and read connections for jobs that re-read the world. A store without it (the
/// in-memory one) still sends and publishes in its own transactions.
/// </summary>
public interface IDatabaseStore
{
    /// <summary>
    /// Wraps the caller's own open transaction on the same database (the outbox). A transaction begun by
    /// <see cref="IStore.BeginAsync"/> is recognised and returned as is. The caller commits or rolls back; Converge's
    /// writes share its fate. Throws when the transaction belongs to another kind of database.
    /// </summary>
    IStoreTransaction Enlist(DbTransaction transaction);

    /// <summary>
    /// Opens a read-only connection to the store's database for a job that re-reads the world before it acts,
    /// outside any write transaction. The caller disposes it.
    /// </summary>
    ValueTask<DbConnection> OpenReadConnectionAsync(CancellationToken cancellationToken);

    /// <summary>The SQL the database speaks, for code that writes its own statements (projections).</summary>
    SqlDialect Dialect { get; }

    /// <summary>
    /// Quotes <paramref name="name"/> and places it beside the store's own tables: in the store's schema on PostgreSQL,
    /// behind the store's table prefix on SQLite. <c>TableName("projections")</c> is the catalogue of projections the
    /// store's migrations create; a projection's read tables and views are named this way too.
    /// </summary>
    string TableName(string name);
}

/// <summary>The SQL dialect of a <see cref="IDatabaseStore"/>.</summary>
public enum SqlDialect
{
    /// <summary>SQLite 3.35 or later (RETURNING, UPSERT).</summary>
    Sqlite,

    /// <summary>PostgreSQL 13 or later.</summary>
    PostgreSql,
}

/// <summary>Optional: a <see cref="IStoreTransaction"/> on an ADO.NET database, which the application's own statements can join.</summary>
public interface IDatabaseTransaction
{
    /// <summary>
    /// The underlying transaction; use its connection for the caller's own writes (an EF Core <c>DbContext</c> can join
    /// it). A transaction Converge owns must be committed with <see cref="IStoreTransaction.CommitAsync"/>, never through
    /// this object: a store may hold the transaction's sends until that commit writes them in one statement.
    /// </summary>
    DbTransaction Transaction { get; }

    /// <summary>
    /// Executes <paramref name="sql"/> with <paramref name="parameters"/> in this transaction and returns the number
    /// of rows affected. Stores may prepare the statement once per connection and reuse it, which makes repeated
    /// small writes much cheaper than a new command each time.
    /// </summary>
    ValueTask<int> ExecuteAsync(string sql, IReadOnlyList<KeyValuePair<string, object?>> parameters, CancellationToken cancellationToken);

    /// <summary>
    /// Runs <paramref name="sql"/> in this transaction for its effect alone: nobody reads what it returns. A store may
    /// hold it back and send it with the statements that follow (PostgreSQL sends everything it held in one round
    /// trip), so an error it raises (a constraint it breaks) may surface at a later call on this transaction: at the
    /// release of the savepoint it was written under (<see cref="IStoreTransaction.ReleaseSavepointAsync"/>) or at
    /// <see cref="FlushWritesAsync"/> at the latest, and otherwise at the next statement or the commit. Writes run in the
    /// order they were made, after the transaction's held sends; a rollback to a savepoint drops the writes held since.
    /// Default: <see cref="ExecuteAsync"/> at once.
    /// </summary>
    async ValueTask WriteAsync(string sql, IReadOnlyList<KeyValuePair<string, object?>> parameters, CancellationToken cancellationToken) =>
        await ExecuteAsync(sql, parameters, cancellationToken);

    /// <summary>
    /// Sends the writes <see cref="WriteAsync"/> held back, so that their errors surface here; does nothing (and sends
    /// nothing, not even a held savepoint) when none is held. Default: nothing is ever held.
    /// </summary>
    ValueTask FlushWritesAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;
}
