using System.CommandLine;
using System.CommandLine.Parsing;
using Converge.PostgreSql;

namespace Converge.Cli;

/// <summary>
/// Where a demo runs: <c>--db FILE</c> (SQLite, the default being a new temporary file) or <c>--postgres CONN</c>
/// with <c>--schema NAME</c>, and <c>--sim-dir DIR</c> for the simulated outside services' own files. At most one
/// of <c>--db</c> and <c>--postgres</c>; <see cref="AddTo"/> adds the options and that rule to a command.
/// </summary>
internal sealed class DemoStoreOptions
{
    readonly Option<string> _db;

    readonly Option<string> _postgres = new("--postgres")
    {
        Description = "Run on PostgreSQL instead of a SQLite file: the Npgsql connection string. Converge's tables and the demo's go into --schema.",
        HelpName = "CONN",
    };

    readonly Option<string> _schema;

    readonly Option<string> _simulation;

    readonly Option<string> _rabbitMq = CommonOptions.RabbitMq(
        "Carry the demo's message queues through RabbitMQ (amqp://user:password@host:port/), with the store as outbox and inbox. Job queues stay in the store.");

    /// <param name="db">What <c>--db</c> means for this demo.</param>
    /// <param name="defaultSchema">The schema when <c>--postgres</c> comes without <c>--schema</c>.</param>
    /// <param name="schema">What <c>--schema</c> means for this demo, after its rule.</param>
    /// <param name="files">The simulated services' files this demo keeps in <c>--sim-dir</c>.</param>
    public DemoStoreOptions(string db, string defaultSchema, string schema, string files)
    {
        DefaultSchema = defaultSchema;
        _db = new("--db") { Description = db, HelpName = "FILE" };
        _schema = new("--schema")
        {
            Description = $"With --postgres: the schema (lower-case letters, digits and '_'). {schema}",
            HelpName = "NAME",
            DefaultValueFactory = _ => defaultSchema,
        };
        _simulation = new("--sim-dir")
        {
            Description = $"The folder for the simulated outside services' own SQLite files ({files}), which every process of the run opens. Default: beside the --db file; with --postgres, a folder under the temporary folder named after the server, database and schema.",
            HelpName = "DIR",
        };
    }

    public string DefaultSchema { get; }

    /// <summary>
    /// Adds the options to <paramref name="command"/> and checks that at most one store is named. A demo whose simulated
    /// services keep no files and whose queues never leave the store passes <paramref name="filesAndBroker"/>
    /// <c>false</c>: it is then offered neither <c>--sim-dir</c> nor <c>--rabbitmq</c>.
    /// </summary>
    public void AddTo(Command command, bool filesAndBroker = true)
    {
        ArgumentNullException.ThrowIfNull(command);
        command.Options.Add(_db);
        command.Options.Add(_postgres);
        command.Options.Add(_schema);
        if (filesAndBroker)
        {
            command.Options.Add(_simulation);
            command.Options.Add(_rabbitMq);
        }

        command.Validators.Add(Validate);
    }

    /// <summary>The SQLite file as a full path, or <c>null</c> (a temporary file, or PostgreSQL).</summary>
    public string? Db(ParseResult parsed) => parsed.GetValue(_db) is { } path ? Path.GetFullPath(path) : null;

    /// <summary>The PostgreSQL connection string, or <c>null</c> for SQLite.</summary>
    public string? Postgres(ParseResult parsed) => parsed.GetValue(_postgres);

    public string Schema(ParseResult parsed) => parsed.GetValue(_schema) ?? DefaultSchema;

    /// <summary>The RabbitMQ broker, or <c>null</c> when the store carries the queues itself.</summary>
    public Uri? RabbitMq(ParseResult parsed) => parsed.GetValue(_rabbitMq) is { } text ? CommonOptions.Broker(text) : null;

    /// <summary>The folder of the simulated services as a full path, or <c>null</c> for the default.</summary>
    public string? SimulationFolder(ParseResult parsed) => parsed.GetValue(_simulation) is { } folder ? Path.GetFullPath(folder) : null;

    /// <summary>
    /// Checks the connection string and the schema name the way the store will, before anything connects, so a typo
    /// is reported as misuse (exit code 2) without waiting for a server.
    /// </summary>
    public async Task CheckPostgresAsync(ParseResult parsed)
    {
        if (Postgres(parsed) is not { } connectionString)
        {
            return;
        }

        try
        {
            await using var store = new PostgreSqlMessageStore(new PostgreSqlStoreOptions { ConnectionString = connectionString, Schema = Schema(parsed) }, CliApp.Clock);
        }
        catch (ArgumentException exception)
        {
            throw new CliException(CliApp.Usage, StoreAccess.WithoutParameterName(exception));
        }
    }

    void Validate(CommandResult result)
    {
        var sqlite = Given(result.GetResult(_db));
        var postgres = Given(result.GetResult(_postgres));
        if (sqlite && postgres)
        {
            result.AddError("Pass one store, not both: --db FILE (SQLite) or --postgres CONN (PostgreSQL); without either the demo uses a new temporary SQLite file.");
        }
        else if (!postgres && Given(result.GetResult(_schema)))
        {
            result.AddError("--schema is for a PostgreSQL run: add --postgres CONN. A SQLite run keeps everything in its --db file.");
        }
    }

    /// <summary>Typed on the command line, as opposed to absent or filled in from the default.</summary>
    static bool Given(OptionResult? result) => result is { Implicit: false };
}
