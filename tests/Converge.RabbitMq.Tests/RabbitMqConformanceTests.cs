using System.Collections.Concurrent;
using System.Data.Common;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Testing.Conformance;

namespace Converge.RabbitMq.Tests;

/// <summary>The conformance suite on SQLite with every queue going through RabbitMQ.</summary>
public sealed class RabbitMqConformanceTests : MessageStoreConformanceTests, IAsyncLifetime
{
    readonly string _folder = Directory.CreateTempSubdirectory("converge-rabbitmq-conformance-").FullName;
    readonly string _prefix = TestBroker.NewPrefix();
    readonly ConcurrentBag<RabbitMqTransport> _transports = [];

    /// <summary>The conformance queues go through the broker, which refuses ordering keys.</summary>
    protected override bool KeepsOrderingKeys => false;

    protected override string QueueTable => "converge_queue";

    protected override void UseStore(ConvergeOptions options, string storeName)
    {
        options.UseSqlite(Path.Combine(_folder, storeName + ".db"));
        options.UseRabbitMq(TestBroker.Uri, o => o.QueuePrefix = _prefix);
        var transport = options.StoreFactory!;
        options.StoreFactory = context =>
        {
            var created = (RabbitMqTransport)transport(context);
            _transports.Add(created);
            return created;
        };
    }

    protected override Task<DbConnection> OpenConnectionAsync(IMessageStore store) =>
        Task.FromResult<DbConnection>(((SqliteMessageStore)((RabbitMqTransport)store).Inner).OpenConnection());

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        var first = _transports.FirstOrDefault();
        if (first is not null)
        {
            await TestBroker.DeleteAsync(_transports.SelectMany(t => t.BrokerQueues), [first.BrokerName(first.Options.DeadLetterQueue)]);
        }

        Directory.Delete(_folder, recursive: true);
    }
}
