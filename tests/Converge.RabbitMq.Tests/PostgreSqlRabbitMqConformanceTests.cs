using System.Collections.Concurrent;
using System.Data.Common;
using Converge.PostgreSql;
using Converge.Runtime;
using Converge.Storage;
using Converge.Transports;
using Converge.Testing.Conformance;
using Npgsql;

namespace Converge.RabbitMq.Tests;

public sealed class PostgreSqlRabbitMqQueueConformanceTests() : QueueConformanceTests(new PostgreSqlRabbitMqConformanceStore());

public sealed class PostgreSqlRabbitMqLogConformanceTests() : LogConformanceTests(new PostgreSqlRabbitMqConformanceStore());

public sealed class PostgreSqlRabbitMqInboxConformanceTests() : InboxConformanceTests(new PostgreSqlRabbitMqConformanceStore());

public sealed class PostgreSqlRabbitMqInboxRemovalConformanceTests() : InboxRemovalConformanceTests(new PostgreSqlRabbitMqConformanceStore());

public sealed class PostgreSqlRabbitMqStoreQueriesConformanceTests() : StoreQueriesConformanceTests(new PostgreSqlRabbitMqConformanceStore());

public sealed class PostgreSqlRabbitMqSagaStorageConformanceTests() : SagaStorageConformanceTests(new PostgreSqlRabbitMqConformanceStore());

public sealed class PostgreSqlRabbitMqJobStorageConformanceTests() : JobStorageConformanceTests(new PostgreSqlRabbitMqConformanceStore());

public sealed class PostgreSqlRabbitMqDatabaseConformanceTests() : DatabaseConformanceTests(new PostgreSqlRabbitMqConformanceStore());

public sealed class PostgreSqlRabbitMqProjectionConformanceTests() : ProjectionConformanceTests(new PostgreSqlRabbitMqConformanceStore());

/// <summary>
/// The conformance suites on the scale-out pair: PostgreSQL keeps the outbox, inbox, log, sagas, jobs and dead letters;
/// every message queue goes through RabbitMQ. Needs <c>CONVERGE_TEST_POSTGRES</c> beside <c>CONVERGE_TEST_RABBITMQ</c>.
/// </summary>
public sealed class PostgreSqlRabbitMqConformanceStore : DatabaseConformanceStore
{
    readonly string _schemaPrefix = "rq" + Guid.NewGuid().ToString("N")[..12];
    readonly string _prefix = TestBroker.NewPrefix();
    readonly ConcurrentBag<RabbitMqTransport> _transports = [];
    readonly ConcurrentDictionary<string, byte> _schemas = new();

    static string Postgres =>
        Environment.GetEnvironmentVariable("CONVERGE_TEST_POSTGRES") is { Length: > 0 } value
            ? value
            : throw new InvalidOperationException("CONVERGE_TEST_POSTGRES is not set. Run ./test.sh, which starts PostgreSQL and RabbitMQ, or start them with scripts/services.sh start DIR and source DIR/services.env.");

    /// <summary>The conformance queues go through the broker, which refuses ordering keys.</summary>
    public override bool KeepsOrderingKeys => false;

    public override string QueueTable => "queue";

    public override void Use(ConvergeOptions options, string storeName)
    {
        var schema = _schemaPrefix + "_" + storeName;
        _schemas.TryAdd(schema, 0);
        options.UsePostgreSql(new NpgsqlConnectionStringBuilder(Postgres) { SearchPath = schema }.ConnectionString, o => o.Schema = schema);
        // A store of its own has broker names of its own, as two applications on one broker would: otherwise the log
        // streams of two stores would mix (position 3 of one read as position 3 of the other).
        // The facts jump the options' clock by minutes to days. The transport stops a consumer nobody has claimed from
        // for IdleConsumerTimeout on that clock, and a delivery that arrives while it stops goes back counted as an
        // attempt (as documented): a jump past both a message's due time and the idle timeout raced the relay's
        // delivery against the pause, and a fact saw attempt 4 where 3 was due. An hour, the most allowed, is longer than
        // any jump of a fact that waits for a due message; idle pausing has tests of its own.
        options.UseRabbitMq(TestBroker.Uri, o =>
        {
            o.QueuePrefix = _prefix + storeName + ".";
            o.IdleConsumerTimeout = TimeSpan.FromHours(1);
        });
        var transport = options.TransportFactory!;
        options.TransportFactory = context =>
        {
            var created = (RabbitMqTransport)transport(context);
            _transports.Add(created);
            return created;
        };
    }

    public override async Task<DbConnection> OpenConnectionAsync(IMessageStore store) =>
        await ((PostgreSqlMessageStore)((TransportedStore)store).Store).OpenConnectionAsync();

    protected override async ValueTask CleanUpAsync()
    {
        var first = _transports.FirstOrDefault();
        if (first is not null)
        {
            await TestBroker.DeleteAsync(_transports.SelectMany(t => t.BrokerQueues), [.. _transports.Select(t => t.BrokerName(t.Options.DeadLetterQueue)).Distinct()]);
        }

        await using var connection = new NpgsqlConnection(Postgres);
        await connection.OpenAsync();
        foreach (var schema in _schemas.Keys)
        {
            await using var drop = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", connection);
            await drop.ExecuteNonQueryAsync();
        }
    }
}
