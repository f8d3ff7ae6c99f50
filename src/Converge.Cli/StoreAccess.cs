using Converge.Sqlite;
using Microsoft.Data.Sqlite;

namespace Converge.Cli;

/// <summary>Opens an existing Converge store for the inspection commands, without ever creating or migrating one.</summary>
internal static class StoreAccess
{
    public static async Task<SqliteMessageStore> OpenExistingAsync(string path, string tablePrefix)
    {
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
            store = new SqliteMessageStore(new SqliteStoreOptions { Path = full, TablePrefix = tablePrefix }, TimeProvider.System);
        }
        catch (ArgumentException exception)
        {
            throw new CliException(CliApp.Usage, exception.Message);
        }

        try
        {
            if (store.GetSchemaVersion() == 0)
            {
                var prefixHint = tablePrefix == "converge_"
                    ? " If the application sets SqliteStoreOptions.TablePrefix, pass the same --table-prefix."
                    : "";
                throw new CliException(CliApp.Usage, $"{path} is not a Converge store: no Converge tables (prefix '{tablePrefix}'). Start an application with options.UseSqlite(\"{path}\") first.{prefixHint}");
            }
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

        return store;
    }
}
