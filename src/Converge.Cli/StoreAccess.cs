using Converge.PostgreSql;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Converge.Cli;

/// <summary>Opens an existing Converge store for the inspection commands, without ever creating or migrating one.</summary>
internal static class StoreAccess
{
    /// <summary>
    /// Opens the store <paramref name="target"/> names and checks that it holds Converge's tables. Never creates a
    /// file, a schema or a table: an inspection command pointed at the wrong place must leave it as it was.
    /// </summary>
    public static Task<OpenedStore> OpenExistingAsync(StoreTarget target, CancellationToken cancellationToken) => target switch
    {
        SqliteTarget sqlite => OpenSqliteAsync(sqlite),
        PostgreSqlTarget postgres => OpenPostgreSqlAsync(postgres, cancellationToken),
        _ => throw new ArgumentOutOfRangeException(nameof(target), target, "Unknown kind of store."),
    };

    /// <summary>
    /// Refuses a store an older Converge wrote: this tool's queries read the tables and indexes of its own schema
    /// version, and it never migrates (the application does, when it starts).
    /// </summary>
    static void RequireCurrent(string store, int version, int latest)
    {
        if (version < latest)
        {
            throw new CliException(CliApp.Usage, $"{store} holds Converge schema version {version}, written by an older Converge; this tool reads version {latest}. Start your application once with this version of Converge (it migrates the store when it starts), or use the converge tool of the application's version. (This command never migrates a store.)");
        }
    }

    static async Task<OpenedStore> OpenSqliteAsync(SqliteTarget target)
    {
        var path = target.Path;
        var tablePrefix = target.TablePrefix;
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full))
        {
            throw new CliException(CliApp.Usage, $"{path} is a folder. Pass the store's database file: --db path/to/app.db");
        }

        if (!File.Exists(full))
        {
            throw new CliException(CliApp.Usage, $"{path} does not exist, so it is not a Converge store. Check the path, or start an application with options.UseSqlite(\"{path}\") first. (This command never creates the file.)");
        }

        SqliteMessageStore store;
        try
        {
            store = new SqliteMessageStore(new SqliteStoreOptions { Path = full, TablePrefix = tablePrefix }, CliApp.Clock);
        }
        catch (ArgumentException exception)
        {
            throw new CliException(CliApp.Usage, WithoutParameterName(exception));
        }

        try
        {
            var version = store.GetSchemaVersion();
            if (version == 0)
            {
                var prefixHint = tablePrefix == StoreLocation.DefaultTablePrefix
                    ? " If the application sets SqliteStoreOptions.TablePrefix, pass the same --table-prefix."
                    : "";
                throw new CliException(CliApp.Usage, $"{path} is not a Converge store: no Converge tables (prefix '{tablePrefix}'). Start an application with options.UseSqlite(\"{path}\") first.{prefixHint}");
            }

            RequireCurrent(path, version, store.LatestSchemaVersion);
            return new OpenedStore(store, store.Path, version, target);
        }
        catch (SqliteException exception) when (exception.SqliteErrorCode is 26 /* SQLITE_NOTADB */)
        {
            await store.DisposeAsync();
            throw new CliException(CliApp.Usage, $"{path} is not a SQLite database, so not a Converge store. Pass the file your application passes to options.UseSqlite(...).");
        }
        catch
        {
            await store.DisposeAsync();
            throw;
        }
    }

    static async Task<OpenedStore> OpenPostgreSqlAsync(PostgreSqlTarget target, CancellationToken cancellationToken)
    {
        // The store's options check the connection string and the schema name before anything connects, so a typo
        // is reported as misuse without waiting for a server.
        PostgreSqlMessageStore store;
        try
        {
            store = new PostgreSqlMessageStore(new PostgreSqlStoreOptions { ConnectionString = target.ConnectionString, Schema = target.Schema }, CliApp.Clock);
        }
        catch (ArgumentException exception)
        {
            throw new CliException(CliApp.Usage, WithoutParameterName(exception));
        }

        try
        {
            var server = WithoutPassword(target.ConnectionString);

            // Only reads the migrations table; MigrateAsync is never called, so nothing is created here.
            var version = await store.GetSchemaVersionAsync(cancellationToken);
            if (version == 0)
            {
                var schemaHint = target.Schema == StoreLocation.DefaultSchema
                    ? " (the schema the application sets in PostgreSqlStoreOptions.Schema)"
                    : "";
                throw new CliException(CliApp.Usage, $"{server} is not a Converge store: schema '{target.Schema}' has no Converge tables. Start an application with options.UsePostgreSql(...) first, or pass --schema{schemaHint}. (This command never creates the schema.)");
            }

            RequireCurrent($"{server}, schema {store.SchemaName}", version, store.LatestSchemaVersion);
            return new OpenedStore(store, $"{server}, schema {store.SchemaName}", version, target);
        }
        catch
        {
            await store.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// The message without the " (Parameter 'Schema')" that .NET appends: it names a property of the options class,
    /// which the user never typed.
    /// </summary>
    internal static string WithoutParameterName(ArgumentException exception)
    {
        var message = exception.Message;
        var suffix = $" (Parameter '{exception.ParamName}')";
        return exception.ParamName is not null && message.EndsWith(suffix, StringComparison.Ordinal) ? message[..^suffix.Length] : message;
    }

    /// <summary>
    /// The connection string without its password, for tables, JSON and error messages, which end up pasted into
    /// tickets and chats. The hints still repeat what the user typed, so they can be run as they are.
    /// </summary>
    static string WithoutPassword(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString) { Password = null };
        return builder.ConnectionString;
    }
}

/// <summary>A store opened by <see cref="StoreAccess.OpenExistingAsync"/>, with what the commands print about it.</summary>
internal sealed class OpenedStore : IAsyncDisposable
{
    public OpenedStore(IMessageStore store, string name, int schemaVersion, StoreTarget target)
    {
        Store = store;
        Name = name;
        SchemaVersion = schemaVersion;
        Target = target;
    }

    public IMessageStore Store { get; }

    /// <summary>Where the store is, for people: the SQLite file's full path, or the PostgreSQL server, database and schema (never a password).</summary>
    public string Name { get; }

    /// <summary>The schema version found when the store was opened, never 0.</summary>
    public int SchemaVersion { get; }

    public StoreTarget Target { get; }

    /// <summary>The store options as the user gave them, quoted, for suggested commands.</summary>
    public string Arguments => Target.Arguments;

    public ValueTask DisposeAsync() => Store.DisposeAsync();
}
