using System.Collections.Concurrent;
using Converge.PostgreSql;
using Converge.Storage;
using Converge.Transports;
using Converge.Testing;
using Converge.Testing.Conformance;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Converge.RabbitMq.Tests;

/// <summary>
/// RabbitMQ gone for 30 seconds in the middle of a run, on the scale-out pair (PostgreSQL + RabbitMQ): sends keep
/// committing into the outbox while the broker is away, and every message is handled exactly once after it returns.
/// Two outages: the broker itself stopped and started again (a private broker, so the one other tests share keeps
/// running), and the network to it cut by a proxy that closes every connection and refuses new ones.
/// </summary>
public sealed class BrokerOutageTests : IAsyncLifetime
{
    static readonly TimeSpan Outage = TimeSpan.FromSeconds(30);
    readonly string _schema = "out" + Guid.NewGuid().ToString("N")[..12];
    readonly string _prefix = TestBroker.NewPrefix();
    readonly ConcurrentBag<RabbitMqTransport> _transports = [];
    Uri? _broker;

    static string Postgres =>
        Environment.GetEnvironmentVariable("CONVERGE_TEST_POSTGRES") is { Length: > 0 } value
            ? value
            : throw new InvalidOperationException("CONVERGE_TEST_POSTGRES is not set. Run ./test.sh, which starts PostgreSQL and RabbitMQ, or start them with scripts/services.sh start DIR and source DIR/services.env.");

    async Task<long> CountAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(Postgres) { SearchPath = _schema }.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    Task<long> OutboxAsync() => CountAsync($"SELECT count(*) FROM \"{_schema}\".queue WHERE queue = 'orders'");

    [Fact]
    public async Task Nothing_sent_while_RabbitMQ_is_stopped_for_30_seconds_is_lost_and_each_message_is_handled_once()
    {
        await using var broker = await PrivateBroker.StartAsync();
        _broker = broker.Uri;
        await RunThroughOutageAsync(broker.Uri, broker.StopAppAsync, broker.StartAppAsync, () => broker.DescribeAsync());
    }

    [Fact]
    public async Task Nothing_sent_while_RabbitMQ_is_unreachable_for_30_seconds_is_lost_and_each_message_is_handled_once()
    {
        await using var proxy = new TcpProxy(TestBroker.Uri);
        proxy.Open();
        await RunThroughOutageAsync(proxy.Uri, proxy.CloseAsync, () =>
        {
            proxy.Open();
            return Task.CompletedTask;
        }, () => Task.FromResult("the broker is the one the other tests share"));
    }

    /// <summary>
    /// Sends, takes the broker at <paramref name="broker"/> away with <paramref name="stop"/> for 30 s while sending,
    /// brings it back, sends again. A timeout reports the transport's state and log, and <paramref name="describe"/>'s
    /// account of the broker.
    /// </summary>
    async Task RunThroughOutageAsync(Uri broker, Func<Task> stop, Func<Task> start, Func<Task<string>> describe)
    {
        var log = new RecentLog();
        await using var host = await ConvergeTestHost.StartAsync(o =>
        {
            o.UsePostgreSql(new NpgsqlConnectionStringBuilder(Postgres) { SearchPath = _schema }.ConnectionString, s => s.Schema = _schema);
            o.UseRabbitMq(broker, t =>
            {
                t.QueuePrefix = _prefix;
                t.ReconnectDelay = TimeSpan.FromMilliseconds(100);
                t.MaxReconnectDelay = TimeSpan.FromSeconds(2);
            });
            var factory = o.TransportFactory!;
            o.TransportFactory = context =>
            {
                var created = (RabbitMqTransport)factory(context);
                _transports.Add(created);
                return created;
            };
            o.Messages.Register<ConformanceCommand>("conformance.command");
            o.Handle<ConformanceCommand, ConformanceCommandHandler>("orders");
        }, services => services.AddLogging(logging => logging.AddProvider(log.Provider)));
        await using (var connection = await ((PostgreSqlMessageStore)((TransportedStore)host.Store).Store).OpenConnectionAsync())
        await using (var create = new NpgsqlCommand(Effects.CreateTable, connection))
        {
            await create.ExecuteNonQueryAsync();
        }

        var sent = 0;
        async Task SendAsync(string phase, int count)
        {
            for (var i = 0; i < count; i++)
            {
                await host.Bus.SendAsync(new ConformanceCommand($"{phase}-{i}"));
                sent++;
            }
        }

        // Mid-run: committed at once, some of these are handled and the others wait in the outbox, on the broker or
        // in this process when it goes away.
        await using (var transaction = await host.Bus.BeginTransactionAsync())
        {
            for (var i = 0; i < 2000; i++)
            {
                await host.Bus.SendAsync(new ConformanceCommand($"before-{i}"), transaction.Transaction);
                sent++;
            }

            await transaction.CommitAsync(CancellationToken.None);
        }

        await Eventually.UntilAsync(async () => await CountAsync("SELECT count(*) FROM conformance_effects") >= 50, "the first messages handled", TimeSpan.FromSeconds(60));
        var handledBefore = await CountAsync("SELECT count(*) FROM conformance_effects");

        // The broker goes away; sends keep committing for the whole outage, a burst each second.
        await stop();
        var outageEnds = TimeProvider.System.GetTimestamp() + (long)(Outage.TotalSeconds * TimeProvider.System.TimestampFrequency);
        var burst = 0;
        while (TimeProvider.System.GetTimestamp() < outageEnds)
        {
            await SendAsync("during-" + burst++, 20);
            await Task.Delay(TimeSpan.FromSeconds(1), TimeProvider.System);
        }

        var waiting = await OutboxAsync();
        await start();
        await SendAsync("after", 200);

        // A failure says where the missing messages are: still in the outbox, or relayed and not handled.
        var (handled, outbox) = (0L, 0L);
        try
        {
            await Eventually.UntilAsync(
                async () =>
                {
                    (handled, outbox) = (await CountAsync("SELECT count(*) FROM conformance_effects"), await OutboxAsync());
                    return handled >= sent && outbox == 0;
                },
                () => $"every message handled after the broker returned: {handled} of {sent} handled, {outbox} in the outbox, {string.Join("; ", _transports.Select(t => t.Describe()))}",
                TimeSpan.FromSeconds(120));
        }
        catch (TimeoutException timeout)
        {
            throw new TimeoutException($"{timeout.Message}{Environment.NewLine}The transport's log:{Environment.NewLine}{log}{Environment.NewLine}The broker:{Environment.NewLine}{await describe()}", timeout);
        }
        Assert.True(handledBefore < 2000, $"all {handledBefore} messages sent before the outage were handled before it began");
        Assert.True(waiting >= 20 * (burst - 1), $"the outbox held {waiting} messages at the end of the outage; {burst} bursts of 20 were sent");
        Assert.Equal(sent, await CountAsync("SELECT count(*) FROM conformance_effects"));
        Assert.Equal(sent, await CountAsync("SELECT count(DISTINCT item_key) FROM conformance_effects"));
        Assert.Empty(await host.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None));
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        // A private broker is gone with its folder; the shared one keeps what the test declared unless deleted.
        if (!_transports.IsEmpty && _broker is null)
        {
            await TestBroker.DeleteAsync(_transports.SelectMany(t => t.BrokerQueues), [_prefix + "converge.dead-letters"]);
        }

        await using var connection = new NpgsqlConnection(Postgres);
        await connection.OpenAsync();
        await using var drop = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE", connection);
        await drop.ExecuteNonQueryAsync();
    }
}
