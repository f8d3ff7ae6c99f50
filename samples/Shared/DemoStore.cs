using System.Data.Common;
using Converge.PostgreSql;
using Converge.RabbitMq;
using Converge.Runtime;
using Converge.Sqlite;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Converge.Samples;

/// <summary>
/// Where a sample keeps its data: one SQLite file, or one schema of a PostgreSQL database. The sample's own tables
/// sit beside Converge's: on PostgreSQL the connection's search path is the schema, so the unqualified names in
/// the handlers' SQL resolve there. Compiled into each sample (this file is linked, not referenced).
/// </summary>
internal sealed class DemoStore
{
    /// <summary>
    /// The environment variable through which a demo hands the connection string to the worker processes it starts,
    /// so that a password never shows in a process listing.
    /// </summary>
    public const string PostgresVariable = "CONVERGE_DEMO_POSTGRES";

    /// <summary>The environment variable through which a demo hands the RabbitMQ address (with its credentials) to its workers.</summary>
    public const string RabbitMqVariable = "CONVERGE_DEMO_RABBITMQ";

    DemoStore(string? path, string? connectionString, string? schema)
    {
        Path = path;
        ConnectionString = connectionString;
        Schema = schema;
    }

    /// <summary>The SQLite file; <c>null</c> on PostgreSQL.</summary>
    public string? Path { get; }

    /// <summary>The PostgreSQL connection string as given (without the search path); <c>null</c> on SQLite.</summary>
    public string? ConnectionString { get; }

    /// <summary>The PostgreSQL schema; <c>null</c> on SQLite.</summary>
    public string? Schema { get; }

    public bool IsPostgreSql => ConnectionString is not null;

    /// <summary>The RabbitMQ broker that carries the message queues; <c>null</c> when the store carries them.</summary>
    public Uri? RabbitMq { get; set; }

    /// <summary>"sqlite" or "postgresql", with "+rabbitmq" when a broker carries the queues, as the demos' summaries name the store.</summary>
    public string Kind => (IsPostgreSql ? "postgresql" : "sqlite") + (RabbitMq is null ? "" : "+rabbitmq");

    public static DemoStore Sqlite(string path) => new(System.IO.Path.GetFullPath(path), null, null);

    public static DemoStore PostgreSql(string connectionString, string schema) => new(null, connectionString, schema);

    /// <summary>The connection string with the schema as its search path: what Converge and the sample's SQL both use.</summary>
    string SearchPathConnectionString => new NpgsqlConnectionStringBuilder(ConnectionString) { SearchPath = Schema }.ConnectionString;

    /// <summary>Points Converge at this store.</summary>
    public void Use(ConvergeOptions options)
    {
        if (IsPostgreSql)
        {
            options.UsePostgreSql(SearchPathConnectionString, s => s.Schema = Schema!);
        }
        else
        {
            options.UseSqlite(Path!);
        }

        if (RabbitMq is { } broker)
        {
            // One run's queues apart from another's on a shared broker: named after the schema or the file.
            var prefix = IsPostgreSql ? Schema! : System.IO.Path.GetFileNameWithoutExtension(Path!);
            options.UseRabbitMq(broker, r => r.QueuePrefix = prefix + ".");
        }
    }

    /// <summary>The store for messages and summaries: the file, or the schema and server without credentials.</summary>
    public string Describe()
    {
        if (!IsPostgreSql)
        {
            return Path!;
        }

        var builder = new NpgsqlConnectionStringBuilder(ConnectionString);
        return $"schema {Schema} on {builder.Host}:{builder.Port}/{builder.Database ?? builder.Username}";
    }

    /// <summary>
    /// Converge's saga tables as the sample's SQL names them: prefixed on SQLite, plain on PostgreSQL (where the
    /// search path finds them in the schema).
    /// </summary>
    public string SagasTable => IsPostgreSql ? "sagas" : "converge_sagas";

    /// <inheritdoc cref="SagasTable"/>
    public string SagaLogTable => IsPostgreSql ? "saga_log" : "converge_saga_log";

    /// <summary>Opens a connection of the sample's own (for its checks), on the same tables the handlers write.</summary>
    public async Task<DbConnection> OpenConnectionAsync(CancellationToken cancellationToken)
    {
        DbConnection connection = IsPostgreSql
            ? new NpgsqlConnection(SearchPathConnectionString)
            : new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = Path, Pooling = false }.ToString());
        try
        {
            await connection.OpenAsync(cancellationToken);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Whether <paramref name="table"/> exists already: for SQLite, in the file if there is one; for PostgreSQL, in
    /// the schema. Asked before anything is created, to tell a new run from one to resume or refuse.
    /// </summary>
    public async Task<bool> TableExistsAsync(string table, CancellationToken cancellationToken)
    {
        if (!IsPostgreSql && !File.Exists(Path))
        {
            return false;
        }

        await using var connection = IsPostgreSql ? new NpgsqlConnection(ConnectionString) : await OpenConnectionAsync(cancellationToken);
        if (IsPostgreSql)
        {
            await connection.OpenAsync(cancellationToken);
        }

        await using var command = connection.CreateCommand();
        command.CommandText = IsPostgreSql
            ? "SELECT count(*) FROM information_schema.tables WHERE table_schema = @schema AND table_name = @table"
            : "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = @table";
        if (IsPostgreSql)
        {
            Add(command, "@schema", Schema);
        }

        Add(command, "@table", table);
        return Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture) > 0;
    }

    /// <summary>
    /// The folder for the simulated outside services' SQLite files when none is given on PostgreSQL: one per
    /// server, database and schema under the temporary folder, so a run that resumes on the schema finds them.
    /// </summary>
    public string DefaultSimulationFolder(string sample)
    {
        var builder = new NpgsqlConnectionStringBuilder(ConnectionString);
        var name = string.Join("-", sample, builder.Host ?? "localhost", builder.Port, builder.Database ?? builder.Username ?? "", Schema);
        var safe = new string([.. name.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_')]);
        return System.IO.Path.Combine(System.IO.Path.GetTempPath(), "converge-demo", safe);
    }

    /// <summary>The arguments that name this store to a worker's <c>serve</c>; see <see cref="FromArguments"/>.</summary>
    public IEnumerable<string> WorkerArguments() =>
        (IsPostgreSql ? ["--postgres-env", PostgresVariable, "--schema", Schema!] : new[] { Path! })
            .Concat(RabbitMq is null ? [] : ["--rabbitmq-env", RabbitMqVariable]);

    /// <summary>Sets what <see cref="WorkerArguments"/> refers to in a worker's environment.</summary>
    public void AddWorkerEnvironment(IDictionary<string, string?> environment)
    {
        if (IsPostgreSql)
        {
            environment[PostgresVariable] = ConnectionString;
        }

        if (RabbitMq is { } broker)
        {
            environment[RabbitMqVariable] = broker.ToString();
        }
    }

    /// <summary>
    /// Reads the store from a <c>serve</c> command line: <c>--postgres CONN</c> or <c>--postgres-env VAR</c> (the
    /// connection string in that environment variable) with <c>--schema NAME</c>, or else the first positional
    /// argument as the SQLite file. Removes what it used from <paramref name="arguments"/>.
    /// </summary>
    /// <returns>The store, or <c>null</c> with <paramref name="error"/> set.</returns>
    public static DemoStore? FromArguments(List<string> arguments, string defaultSchema, out string? error)
    {
        var connectionString = TakeOption(arguments, "--postgres");
        if (TakeOption(arguments, "--postgres-env") is { } variable)
        {
            connectionString = Environment.GetEnvironmentVariable(variable);
            if (string.IsNullOrEmpty(connectionString))
            {
                error = $"--postgres-env {variable}: the environment variable is not set.";
                return null;
            }
        }

        var schema = TakeOption(arguments, "--schema");
        Uri? rabbitMq = null;
        if (TakeOption(arguments, "--rabbitmq-env") is { } rabbitVariable)
        {
            if (!Uri.TryCreate(Environment.GetEnvironmentVariable(rabbitVariable), UriKind.Absolute, out rabbitMq))
            {
                error = $"--rabbitmq-env {rabbitVariable}: the environment variable does not hold a broker address.";
                return null;
            }
        }

        error = null;
        if (connectionString is not null)
        {
            return new DemoStore(null, connectionString, schema ?? defaultSchema) { RabbitMq = rabbitMq };
        }

        if (schema is not null)
        {
            error = "--schema is for a PostgreSQL store (--postgres CONN).";
            return null;
        }

        if (arguments.FirstOrDefault(a => !a.StartsWith("--", StringComparison.Ordinal)) is not { } path)
        {
            error = "Name the store: a SQLite file, or --postgres CONN [--schema NAME].";
            return null;
        }

        arguments.Remove(path);
        return new DemoStore(System.IO.Path.GetFullPath(path), null, null) { RabbitMq = rabbitMq };
    }

    /// <summary>Removes <c>NAME VALUE</c> from <paramref name="arguments"/> and returns the value, or <c>null</c> when absent.</summary>
    public static string? TakeOption(List<string> arguments, string name)
    {
        var at = arguments.IndexOf(name);
        if (at < 0 || at + 1 >= arguments.Count)
        {
            return null;
        }

        var value = arguments[at + 1];
        arguments.RemoveRange(at, 2);
        return value;
    }

    static void Add(DbCommand command, string name, object? value)
    {
        var parameter = command.CreateParameter();
        parameter.ParameterName = name;
        parameter.Value = value ?? DBNull.Value;
        command.Parameters.Add(parameter);
    }
}
