using System.Collections.Concurrent;
using System.Text;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Testing;
using Converge.Testing.Conformance;
using Converge.Transports;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;
using Xunit.Abstractions;

namespace Converge.RabbitMq.Tests;

/// <summary>What the transport promises beyond the conformance suite: the broker's side of delivery.</summary>
public sealed class RabbitMqTransportTests(ITestOutputHelper output) : BrokerTestBase(output)
{
    [Fact]
    public async Task Each_queue_is_a_durable_quorum_queue_with_a_delivery_limit_and_dead_lettering()
    {
        await using var host = await StartAsync();
        await host.SendAndWaitAsync(new ConformanceCommand("declared"));

        await using var connection = await TestBroker.ConnectAsync();
        await using (var same = await connection.CreateChannelAsync())
        {
            // Declaring it again with the same arguments is accepted: they are what Converge declared.
            await same.QueueDeclareAsync(BrokerQueue(Queue), durable: true, exclusive: false, autoDelete: false, new Dictionary<string, object?>
            {
                ["x-queue-type"] = "quorum",
                ["x-dead-letter-exchange"] = Prefix + "converge.dead-letters",
                ["x-dead-letter-strategy"] = "at-least-once",
                ["x-overflow"] = "reject-publish",
                ["x-delivery-limit"] = 20,
            });
        }

        await using var classic = await connection.CreateChannelAsync();
        var refused = await Assert.ThrowsAsync<OperationInterruptedException>(() =>
            classic.QueueDeclareAsync(BrokerQueue(Queue), durable: true, exclusive: false, autoDelete: false, new Dictionary<string, object?>
            {
                ["x-queue-type"] = "classic",
                ["x-dead-letter-exchange"] = Prefix + "converge.dead-letters",
                ["x-dead-letter-strategy"] = "at-least-once",
                ["x-overflow"] = "reject-publish",
                ["x-delivery-limit"] = 20,
            }));
        Assert.Equal(Constants.PreconditionFailed, refused.ShutdownReason!.ReplyCode);
        Assert.Contains("x-queue-type", refused.ShutdownReason.ReplyText, StringComparison.Ordinal);
        Assert.Equal(0u, await TestBroker.ReadyCountAsync(connection, BrokerQueue(Queue)));

        // The relay removes a message from the outbox in a transaction of its own once the broker confirmed it,
        // which may commit after the consumer has already handled the delivery.
        await Eventually.UntilAsync(async () => await OutboxCountAsync(host) == 0, "the relayed message removed from the outbox");
    }

    [Fact]
    public async Task Messages_the_broker_refuses_to_confirm_stay_in_the_outbox_until_it_takes_them()
    {
        // A queue that holds two messages and refuses (nacks) further publishes. A classic queue: a quorum queue's
        // length limit is soft and lets a burst in.
        const string Capped = "capped";
        ExtraQueues.Add(BrokerQueue(Capped));
        await using var connection = await TestBroker.ConnectAsync();
        await using (var declare = await connection.CreateChannelAsync())
        {
            await declare.QueueDeclareAsync(BrokerQueue(Capped), durable: true, exclusive: false, autoDelete: false, new Dictionary<string, object?>
            {
                ["x-queue-type"] = "classic",
                ["x-max-length"] = 2,
                ["x-overflow"] = "reject-publish",
            });
        }

        await using var host = await StartAsync(configure: o => o.RunConsumers = false, transport: t => t.RelayPollInterval = TimeSpan.FromMilliseconds(100));
        var sent = new HashSet<Guid>();
        for (var i = 0; i < 5; i++)
        {
            sent.Add(await host.Bus.SendAsync(new ConformanceCommand("capped-" + i), new SendOptions { Queue = Capped }));
        }

        await Eventually.UntilAsync(
            async () => await TestBroker.ReadyCountAsync(connection, BrokerQueue(Capped)) == 2 && await OutboxCountAsync(host, Capped) == 3,
            "two messages on the broker and three refused ones back in the outbox");

        // Take them off the broker one by one: the relay publishes the rest as room frees up.
        var received = new HashSet<Guid>();
        await using var reader = await connection.CreateChannelAsync();
        await Eventually.UntilAsync(
            async () =>
            {
                if (await reader.BasicGetAsync(BrokerQueue(Capped), autoAck: true) is { } got)
                {
                    received.Add(Guid.Parse(got.BasicProperties.MessageId!));
                }

                return received.Count == 5;
            },
            () => $"all five messages taken from the broker; got {received.Count}");

        Assert.Equal(sent, received);
        await Eventually.UntilAsync(async () => await OutboxCountAsync(host, Capped) == 0, "an empty outbox");
    }

    /// <summary>Claims until the broker delivers something (a returned delivery comes back asynchronously).</summary>
    static async Task<QueuedMessage> ClaimOneAsync(IMessageStore store)
    {
        QueuedMessage? claimed = null;
        await Eventually.UntilAsync(async () => (claimed = (await store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None)).SingleOrDefault()) is not null, "a delivery");
        return claimed!;
    }

    [Fact]
    public async Task A_delivery_never_acknowledged_is_delivered_again_after_its_consumer_crashed()
    {
        var first = await StartAsync("shared", o => o.RunConsumers = false);
        var id = await first.Bus.SendAsync(new ConformanceCommand("survives"));
        var claimed = await ClaimOneAsync(first.Store);

        // The consumer goes away without acknowledging, as a crashed process does, and the process keeps away.
        await first.DisposeAsync();
        await using var second = await StartAsync("shared", o => o.RunConsumers = false);
        var again = await ClaimOneAsync(second.Store);
        await using (var transaction = await second.Store.BeginAsync(CancellationToken.None))
        {
            Assert.True(await transaction.CompleteAsync(again, CancellationToken.None));
            await transaction.CommitAsync(CancellationToken.None);
        }

        Assert.Equal((id, 1), (claimed.Envelope.MessageId, claimed.Attempt));
        Assert.Equal((id, 2), (again.Envelope.MessageId, again.Attempt));
        await using var connection = await TestBroker.ConnectAsync();
        await Eventually.UntilAsync(async () => await TestBroker.ReadyCountAsync(connection, BrokerQueue(Queue)) == 0 && (await second.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.All(q => q.Ready + q.InFlight == 0), "the queue emptied by the acknowledgement");
    }

    [Fact]
    public async Task A_delivery_whose_lease_ends_goes_to_another_consumer_and_the_first_can_no_longer_settle_it()
    {
        await using var first = await StartAsync("shared", o => o.RunConsumers = false, transport: t => t.IdleConsumerTimeout = TimeSpan.FromSeconds(1));
        await using var second = await StartAsync("shared", o => o.RunConsumers = false);
        var id = await first.Bus.SendAsync(new ConformanceCommand("hung"));
        var claimed = Assert.Single(await first.Store.ClaimAsync(Queue, 10, TimeSpan.FromSeconds(1), CancellationToken.None));

        // Nobody renews: the lease ends and the message goes back to the broker, which hands it to the next consumer
        // that asks (the first process, which claims no more, stops consuming and hands back what it was given).
        var again = await ClaimOneAsync(second.Store);
        await using (var stale = await first.Store.BeginAsync(CancellationToken.None))
        {
            Assert.False(await stale.CompleteAsync(claimed, CancellationToken.None));
        }

        Assert.Equal((id, 2), (again.Envelope.MessageId, again.Attempt));
        Assert.Equal(0, await first.Store.RenewLeasesAsync([claimed], TimeSpan.FromMinutes(1), CancellationToken.None));
    }

    [Fact]
    public async Task A_message_that_keeps_crashing_its_consumers_is_dead_lettered_by_the_broker_into_the_store()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false, transport: t => t.DeliveryLimit = 2);
        var id = await host.Bus.SendAsync(new ConformanceCommand("poison"), new SendOptions { CorrelationId = "order-13" });
        var route = Transport(host).Route(Queue);
        var attempts = new List<int>();
        IReadOnlyList<DeadLetter> letters = [];
        await Eventually.UntilAsync(
            async () =>
            {
                if ((letters = await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Count > 0)
                {
                    return true;
                }

                // Each claim is followed by a crash: the consumer's channel closes with the delivery unacknowledged.
                if ((await host.Store.ClaimAsync(Queue, 10, TimeSpan.FromMinutes(5), CancellationToken.None)).SingleOrDefault() is { } claimed)
                {
                    Assert.Equal(id, claimed.Envelope.MessageId);
                    attempts.Add(claimed.Attempt);
                    await route.Consumer!.StopAsync();
                }

                return false;
            },
            () => $"the broker's dead letter in the store after deliveries {string.Join(", ", attempts)}");

        var letter = Assert.Single(letters);
        Assert.Equal(Enumerable.Range(1, attempts.Count), attempts);
        Assert.True(attempts.Count >= 2);
        Assert.Equal((id, "order-13", DeadLetterReasons.MaxAttemptsExceeded, 2), (letter.Envelope.MessageId, letter.Envelope.CorrelationId, letter.Reason, letter.Attempts));
        Assert.Contains("delivery limit (2)", letter.Exception, StringComparison.Ordinal);

        // Retried, it goes back through the outbox and the broker with a fresh count.
        Assert.True(await host.Store.RetryDeadLetterAsync(letter.Id, CancellationToken.None));
        var retried = await ClaimOneAsync(host.Store);
        Assert.Equal((id, 1), (retried.Envelope.MessageId, retried.Attempt));
    }

    [Fact]
    public async Task The_outbox_holds_messages_while_the_broker_is_unreachable_and_delivers_every_one_when_it_returns()
    {
        await using var proxy = new TcpProxy(TestBroker.Uri);
        await using var host = await StartAsync(broker: proxy.Uri);
        for (var i = 0; i < 25; i++)
        {
            await host.Bus.SendAsync(new ConformanceCommand("while-down-" + i));
        }

        Assert.Equal(25, await OutboxCountAsync(host));
        Assert.Equal(0, await CountEffectsAsync(host));

        proxy.Open();
        await Eventually.UntilAsync(async () => await CountEffectsAsync(host) == 25 && await OutboxCountAsync(host) == 0, "every message handled once the broker is reachable");

        // The connection breaks under the consumers (a broker restart); what is sent meanwhile flows once it is back.
        await proxy.CloseAsync();
        for (var i = 0; i < 25; i++)
        {
            await host.Bus.SendAsync(new ConformanceCommand("after-cut-" + i));
        }

        proxy.Open();
        await Eventually.UntilAsync(async () => await CountEffectsAsync(host) >= 50 && await OutboxCountAsync(host) == 0, "every message handled after the connection was cut");
        Assert.Equal(50, await CountEffectsAsync(host));
        Assert.Equal(50, await CountDistinctEffectsAsync(host));
    }

    [Fact]
    public async Task A_consumer_the_broker_cancels_is_started_again_and_its_queue_declared_again()
    {
        await using var host = await StartAsync();
        await host.SendAndWaitAsync(new ConformanceCommand("declares-the-queue"));
        Assert.True(Transport(host).Route(Queue).Consumer!.IsConsuming);

        // Deleting a queue cancels its consumers with a basic.cancel from the broker; their channels stay open.
        await TestBroker.DeleteAsync([BrokerQueue(Queue)], []);
        for (var i = 0; i < 10; i++)
        {
            await host.Bus.SendAsync(new ConformanceCommand("after-delete-" + i));
        }

        var (handled, outbox) = (0L, 0L);
        await Eventually.UntilAsync(
            async () => ((handled, outbox) = (await CountEffectsAsync(host), await OutboxCountAsync(host))) == (11, 0),
            () => $"every message handled after the broker cancelled the consumer: {handled} of 11 handled, {outbox} in the outbox, {Transport(host).Describe()}");
        Assert.Equal(11, await CountDistinctEffectsAsync(host));
    }

    [Fact]
    public async Task A_message_that_is_not_a_Converge_envelope_is_dead_lettered_with_the_reason()
    {
        await using var host = await StartAsync();
        await host.SendAndWaitAsync(new ConformanceCommand("declares-the-queue"));
        await using var connection = await TestBroker.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync();

        await channel.BasicPublishAsync(string.Empty, BrokerQueue(Queue), mandatory: true, new BasicProperties { Type = "conformance.command@1" }, "no id"u8.ToArray());
        await channel.BasicPublishAsync(string.Empty, BrokerQueue(Queue), mandatory: true, new BasicProperties { MessageId = Guid.NewGuid().ToString() }, "no type"u8.ToArray());

        IReadOnlyList<DeadLetter> letters = [];
        await Eventually.UntilAsync(async () => (letters = await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Count == 2, "two dead letters");
        Assert.All(letters, l => Assert.Equal(RabbitMqDeadLetterReasons.InvalidEnvelope, l.Reason));
        var noId = letters.Single(l => Encoding.UTF8.GetString(l.Envelope.Body.Span) == "no id");
        var noType = letters.Single(l => Encoding.UTF8.GetString(l.Envelope.Body.Span) == "no type");
        Assert.Contains("no message id", noId.Exception, StringComparison.Ordinal);
        Assert.Contains("no type", noType.Exception, StringComparison.Ordinal);
        Assert.Equal(0u, await TestBroker.ReadyCountAsync(connection, BrokerQueue(Queue)));
    }

    [Fact]
    public async Task Job_queues_stay_in_the_store()
    {
        await using var host = await StartAsync(configure: o =>
        {
            o.Messages.Register<CountJob>("tests.count-job");
            o.Job<CountJob, CountJobHandler>("reports");
        });
        for (var i = 0; i < 5; i++)
        {
            await host.Jobs.EnqueueAsync(new CountJob("report-" + i));
        }

        await Eventually.UntilAsync(async () => (await host.Store.JobQueries().ListJobsAsync(new JobQuery { State = JobState.Succeeded }, CancellationToken.None)).Count == 5, "five jobs run");
        await using var connection = await TestBroker.ConnectAsync();
        Assert.Null(await TestBroker.ReadyCountAsync(connection, BrokerQueue("reports")));
    }

    [Fact]
    public void UseRabbitMq_without_a_store_names_the_fix()
    {
        var options = new ConvergeOptions().UseRabbitMq(new Uri("amqp://localhost/"));

        var error = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => Converge.Hosting.ConvergeOptionsValidator.ThrowIfInvalid(options));

        Assert.Contains("UseSqlite", error.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// The transport is chosen apart from the store, in either order: the runtime puts it in front of the store, and
    /// the process's job queues stay in the store.
    /// </summary>
    [Fact]
    public async Task The_transport_is_put_in_front_of_the_store_chosen_before_or_after_it()
    {
        var path = Path.Combine(Path.GetTempPath(), "converge-rabbitmq-order-" + Guid.NewGuid().ToString("N") + ".db");
        var services = new ServiceCollection().AddConverge(o =>
        {
            o.UseRabbitMq(new Uri("amqp://localhost/"), t => t.QueuePrefix = Prefix);
            o.UseSqlite(path);
            o.Messages.Register<CountJob>("count-job");
            o.Job<CountJob, CountJobHandler>("counting");
        });
        await using var provider = services.BuildServiceProvider();

        var store = Assert.IsType<TransportedStore>(provider.GetRequiredService<IMessageStore>());

        Assert.IsType<SqliteMessageStore>(store.Store);
        Assert.Equal("sqlite+rabbitmq", store.Name);
        Assert.False(store.Transport.Carries("counting"));
        Assert.True(store.Transport.Carries(Queue));
        await store.DisposeAsync();
        foreach (var file in new[] { path, path + "-wal", path + "-shm" })
        {
            File.Delete(file);
        }
    }

    public sealed record CountJob(string Key);

    public sealed class CountJobHandler : IJobHandler<CountJob>
    {
        public Task ExecuteAsync(CountJob job, JobContext context, CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
