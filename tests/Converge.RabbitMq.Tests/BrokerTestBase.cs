using System.Collections.Concurrent;
using System.Text;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Transports;
using Converge.Testing;
using Converge.Testing.Conformance;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;
using Xunit.Abstractions;

namespace Converge.RabbitMq.Tests;

/// <summary>Starts hosts on SQLite with the RabbitMQ transport under a prefix of the test's own, and removes what they declared.</summary>
public abstract class BrokerTestBase(ITestOutputHelper output) : IAsyncLifetime
{
    protected const string Queue = "orders";

    readonly string _folder = Directory.CreateTempSubdirectory("converge-rabbitmq-").FullName;
    readonly string _prefix = TestBroker.NewPrefix();
    readonly ConcurrentBag<RabbitMqTransport> _transports = [];
    protected List<string> ExtraQueues { get; } = [];

    protected async Task<ConvergeTestHost> StartAsync(string store = "main", Action<ConvergeOptions>? configure = null, Uri? broker = null, Action<RabbitMqTransportOptions>? transport = null)
    {
        var host = await ConvergeTestHost.StartAsync(o =>
        {
            o.UseSqlite(Path.Combine(_folder, store + ".db"));
            o.UseRabbitMq(broker ?? TestBroker.Uri, t =>
            {
                t.QueuePrefix = _prefix;
                t.ReconnectDelay = TimeSpan.FromMilliseconds(50);
                t.MaxReconnectDelay = TimeSpan.FromMilliseconds(500);
                transport?.Invoke(t);
            });
            var factory = o.TransportFactory!;
            o.TransportFactory = context =>
            {
                var created = (RabbitMqTransport)factory(context);
                _transports.Add(created);
                return created;
            };
            o.Messages.Register<ConformanceCommand>("conformance.command");
            o.Handle<ConformanceCommand, ConformanceCommandHandler>(Queue);
            o.Retry.InitialDelay = TimeSpan.FromMilliseconds(20);
            o.Retry.MaxDelay = TimeSpan.FromMilliseconds(200);
            configure?.Invoke(o);
        }, services => services.AddSingleton<ILoggerFactory>(LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Debug).AddProvider(TestOutputLogger.Provider(output)))));
        await using var connection = Sqlite(host).OpenConnection();
        await using var create = connection.CreateCommand();
        create.CommandText = Effects.CreateTable;
        await create.ExecuteNonQueryAsync();
        return host;
    }

    protected static RabbitMqTransport Transport(ConvergeTestHost host) => (RabbitMqTransport)((TransportedStore)host.Store).Transport;

    /// <summary>The store behind the transport.</summary>
    protected static IMessageStore Store(ConvergeTestHost host) => ((TransportedStore)host.Store).Store;

    protected static SqliteMessageStore Sqlite(ConvergeTestHost host) => (SqliteMessageStore)Store(host);

    protected static async Task<long> CountEffectsAsync(ConvergeTestHost host, string? key = null)
    {
        await using var connection = Sqlite(host).OpenConnection();
        return await Effects.CountAsync(connection, key);
    }

    protected static async Task<long> CountDistinctEffectsAsync(ConvergeTestHost host)
    {
        await using var connection = Sqlite(host).OpenConnection();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT count(DISTINCT item_key) FROM conformance_effects";
        return (long)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>What waits in the outbox (the store's queue table) for <paramref name="queue"/>.</summary>
    protected static async Task<long> OutboxCountAsync(ConvergeTestHost host, string queue = Queue)
    {
        var status = await Sqlite(host).GetStatusAsync(CancellationToken.None);
        return status.Queues.Where(q => q.Queue == queue).Sum(q => q.Ready + q.Scheduled + q.InFlight);
    }

    protected string Prefix => _prefix;

    protected string BrokerQueue(string queue) => _prefix + queue;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (!_transports.IsEmpty || ExtraQueues.Count > 0)
        {
            await TestBroker.DeleteAsync(_transports.SelectMany(t => t.BrokerQueues).Concat(ExtraQueues), [_prefix + "converge.dead-letters"]);
        }

        Directory.Delete(_folder, recursive: true);
    }
}
