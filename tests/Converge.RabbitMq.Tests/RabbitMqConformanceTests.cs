using System.Collections.Concurrent;
using System.Data.Common;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Transports;
using Converge.Testing.Conformance;

namespace Converge.RabbitMq.Tests;

public sealed class RabbitMqQueueConformanceTests() : QueueConformanceTests(new RabbitMqConformanceStore());

public sealed class RabbitMqLogConformanceTests() : LogConformanceTests(new RabbitMqConformanceStore());

public sealed class RabbitMqInboxConformanceTests() : InboxConformanceTests(new RabbitMqConformanceStore());

public sealed class RabbitMqInboxRemovalConformanceTests() : InboxRemovalConformanceTests(new RabbitMqConformanceStore());

public sealed class RabbitMqStoreQueriesConformanceTests() : StoreQueriesConformanceTests(new RabbitMqConformanceStore());

public sealed class RabbitMqSagaStorageConformanceTests() : SagaStorageConformanceTests(new RabbitMqConformanceStore());

public sealed class RabbitMqJobStorageConformanceTests() : JobStorageConformanceTests(new RabbitMqConformanceStore());

public sealed class RabbitMqDatabaseConformanceTests() : DatabaseConformanceTests(new RabbitMqConformanceStore());

/// <summary>The conformance suites on SQLite with every queue going through RabbitMQ.</summary>
public sealed class RabbitMqConformanceStore : DatabaseConformanceStore
{
    readonly string _folder = Directory.CreateTempSubdirectory("converge-rabbitmq-conformance-").FullName;
    readonly string _prefix = TestBroker.NewPrefix();
    readonly ConcurrentBag<RabbitMqTransport> _transports = [];

    /// <summary>The conformance queues go through the broker, which refuses ordering keys.</summary>
    public override bool KeepsOrderingKeys => false;

    public override string QueueTable => "converge_queue";

    public override void Use(ConvergeOptions options, string storeName)
    {
        options.UseSqlite(Path.Combine(_folder, storeName + ".db"));
        // A store of its own has broker names of its own, as two applications on one broker would.
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

    public override Task<DbConnection> OpenConnectionAsync(IMessageStore store) =>
        Task.FromResult<DbConnection>(((SqliteMessageStore)((TransportedStore)store).Store).OpenConnection());

    protected override async ValueTask CleanUpAsync()
    {
        var first = _transports.FirstOrDefault();
        if (first is not null)
        {
            await TestBroker.DeleteAsync(_transports.SelectMany(t => t.BrokerQueues), [.. _transports.Select(t => t.BrokerName(t.Options.DeadLetterQueue)).Distinct()]);
        }

        Directory.Delete(_folder, recursive: true);
    }
}
