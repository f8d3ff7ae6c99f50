using System.CommandLine;
using System.CommandLine.Parsing;

namespace Converge.Cli;

/// <summary>
/// The store options every inspection command takes: <c>--db FILE</c> (with <c>--table-prefix</c>) for SQLite, or
/// <c>--postgres CONN</c> (with <c>--schema</c>) for PostgreSQL. Exactly one of <c>--db</c> and <c>--postgres</c> is
/// allowed; <see cref="AddTo"/> adds the options and that rule to a command, <see cref="Resolve"/> reads the choice.
/// </summary>
internal sealed class StoreLocation
{
    public const string DefaultTablePrefix = "converge_";

    public const string DefaultSchema = "converge";

    /// <summary>Printed when neither store option is given; names both, since the user may not know a PostgreSQL store can be read too.</summary>
    public const string PassTheStore = "Pass the store: --db app.db (SQLite) or --postgres \"Host=...;Database=...\" (PostgreSQL).";

    readonly Option<string> _db = new("--db")
    {
        Description = "The store's SQLite file, as passed to options.UseSqlite(...).",
        HelpName = "FILE",
    };

    readonly Option<string> _tablePrefix = new("--table-prefix")
    {
        Description = "With --db: the store's table prefix, if the application changed SqliteStoreOptions.TablePrefix.",
        HelpName = "PREFIX",
        DefaultValueFactory = _ => DefaultTablePrefix,
    };

    readonly Option<string> _postgres = new("--postgres")
    {
        Description = "The store's PostgreSQL connection string (Npgsql), as passed to options.UsePostgreSql(...).",
        HelpName = "CONN",
    };

    readonly Option<string> _schema = new("--schema")
    {
        Description = "With --postgres: the schema that holds the store's tables, if the application changed PostgreSqlStoreOptions.Schema.",
        HelpName = "NAME",
        DefaultValueFactory = _ => DefaultSchema,
    };

    /// <summary>Puts the store options first on <paramref name="command"/> and checks that exactly one store is named.</summary>
    public Command AddTo(Command command)
    {
        ArgumentNullException.ThrowIfNull(command);

        // First, so help lists where the store is before what to do with it.
        command.Options.Insert(0, _db);
        command.Options.Insert(1, _tablePrefix);
        command.Options.Insert(2, _postgres);
        command.Options.Insert(3, _schema);
        command.Validators.Add(Validate);
        return command;
    }

    /// <summary>The store the user named; call only after parsing succeeded, so exactly one of them was given.</summary>
    public StoreTarget Resolve(ParseResult parsed)
    {
        ArgumentNullException.ThrowIfNull(parsed);
        if (parsed.GetValue(_postgres) is { } connectionString)
        {
            var schema = parsed.GetValue(_schema) ?? DefaultSchema;
            var arguments = "--postgres " + ShellQuote.Quote(connectionString)
                + (Given(parsed.GetResult(_schema)) ? " --schema " + ShellQuote.Quote(schema) : "");
            return new PostgreSqlTarget(connectionString, schema, arguments);
        }

        var path = parsed.GetValue(_db) ?? throw new CliException(CliApp.Usage, PassTheStore);
        var prefix = parsed.GetValue(_tablePrefix) ?? DefaultTablePrefix;
        return new SqliteTarget(
            path,
            prefix,
            "--db " + ShellQuote.Quote(path) + (Given(parsed.GetResult(_tablePrefix)) ? " --table-prefix " + ShellQuote.Quote(prefix) : ""));
    }

    void Validate(CommandResult result)
    {
        var sqlite = Given(result.GetResult(_db));
        var postgres = Given(result.GetResult(_postgres));
        if (sqlite == postgres)
        {
            result.AddError(sqlite
                ? "Pass one store, not both: --db FILE (SQLite) or --postgres CONN (PostgreSQL)."
                : PassTheStore);
        }
        else if (sqlite && Given(result.GetResult(_schema)))
        {
            result.AddError("--schema is for a PostgreSQL store (--postgres); a SQLite store's tables are named by --table-prefix.");
        }
        else if (postgres && Given(result.GetResult(_tablePrefix)))
        {
            result.AddError("--table-prefix is for a SQLite store (--db); a PostgreSQL store's tables are found by --schema.");
        }
    }

    /// <summary>Typed on the command line, as opposed to absent or filled in from the default.</summary>
    static bool Given(OptionResult? result) => result is { Implicit: false };
}

/// <summary>A store named on the command line, and how to name it again in a hint.</summary>
/// <param name="Arguments">The store options as the user gave them, quoted for a shell, to repeat in suggested commands.</param>
internal abstract record StoreTarget(string Arguments);

/// <summary>A SQLite store: its file and table prefix.</summary>
internal sealed record SqliteTarget(string Path, string TablePrefix, string Arguments) : StoreTarget(Arguments);

/// <summary>A PostgreSQL store: its connection string and schema.</summary>
internal sealed record PostgreSqlTarget(string ConnectionString, string Schema, string Arguments) : StoreTarget(Arguments);

/// <summary>Quotes command-line arguments so a suggested command can be pasted back into a shell as it is.</summary>
internal static class ShellQuote
{
    /// <summary>
    /// <paramref name="value"/> as it is when it holds only characters no shell treats specially; in double quotes
    /// when nothing in it is special inside them (those work in POSIX shells, PowerShell and cmd alike, and match
    /// how connection strings are usually written); otherwise in POSIX single quotes, which keep <c>$</c>, <c>`</c>,
    /// <c>"</c>, <c>\</c> and <c>!</c> literal.
    /// </summary>
    public static string Quote(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (value.Length > 0 && value.All(IsPlain))
        {
            return value;
        }

        if (value.IndexOfAny(['"', '$', '`', '\\', '!', '%']) < 0)
        {
            return "\"" + value + "\"";
        }

        return "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
    }

    static bool IsPlain(char c) => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '/' or ':' or '@' or '+' or ',';
}
