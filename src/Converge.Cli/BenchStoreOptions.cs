using System.CommandLine;

namespace Converge.Cli;

/// <summary>
/// Where a bench runs: a new SQLite file (<c>--db FILE</c>, default a temporary one) or a new schema per run on
/// PostgreSQL (<c>--postgres CONN</c>), with the message queues optionally carried by RabbitMQ (<c>--rabbitmq URI</c>).
/// </summary>
internal sealed class BenchStoreOptions
{
    readonly Option<string> _db;

    readonly Option<string> _postgres;

    readonly Option<string> _rabbitMq = CommonOptions.RabbitMq(
        "Carry the message queues through RabbitMQ (amqp://user:password@host:port/); the store stays the outbox and inbox. Job queues stay in the store.");

    /// <param name="db">What <c>--db</c> means for this bench.</param>
    /// <param name="postgres">What <c>--postgres</c> means, when not a new schema for every run.</param>
    public BenchStoreOptions(string db, string postgres = "Run on PostgreSQL instead of SQLite: an Npgsql connection string. Every run gets a new schema, dropped after it.")
    {
        _db = new("--db") { Description = db, HelpName = "FILE" };
        _postgres = new("--postgres") { Description = postgres, HelpName = "CONN" };
    }

    bool _broker = true;

    /// <summary>Adds the options to <paramref name="command"/>; <c>--rabbitmq</c> only when the bench has queues a broker could carry.</summary>
    public void AddTo(Command command, bool broker = true)
    {
        ArgumentNullException.ThrowIfNull(command);
        command.Options.Add(_db);
        command.Options.Add(_postgres);
        _broker = broker;
        if (broker)
        {
            command.Options.Add(_rabbitMq);
        }
    }

    /// <summary>The new SQLite file as a full path (or <c>null</c>), the PostgreSQL connection, the broker; misuse throws.</summary>
    public (string? DbPath, string? Postgres, Uri? RabbitMq) Resolve(ParseResult parsed)
    {
        ArgumentNullException.ThrowIfNull(parsed);
        var path = parsed.GetValue(_db);
        var postgres = parsed.GetValue(_postgres);
        if (path is not null && postgres is not null)
        {
            throw new CliException(CliApp.Usage, "Give either --db (SQLite) or --postgres (PostgreSQL), not both.");
        }

        if (path is not null && (File.Exists(path) || Directory.Exists(path)))
        {
            throw new CliException(CliApp.Usage, $"{path} already exists. Pass a path for a new file: the bench writes it from empty.");
        }

        return (path is null ? null : Path.GetFullPath(path), postgres, _broker && parsed.GetValue(_rabbitMq) is { } text ? CommonOptions.Broker(text) : null);
    }
}
