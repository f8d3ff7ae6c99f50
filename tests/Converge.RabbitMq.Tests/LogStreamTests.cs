using System.Collections.Concurrent;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;
using Converge.Transports;
using Converge.Testing;
using Converge.Testing.Conformance;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using Xunit.Abstractions;

namespace Converge.RabbitMq.Tests;

/// <summary>The event log mirrored to a stream, and consumer groups reading it there.</summary>
public sealed class LogStreamTests(ITestOutputHelper output) : BrokerTestBase(output)
{
    const string Group = "projection";

    static void Events(ConvergeOptions options) => options.Messages.Register<ConformanceEvent>("conformance.event");

    static void Subscribe(ConvergeOptions options, string group = Group)
    {
        Events(options);
        options.Subscribe<ConformanceEvent, ConformanceEventHandler>(group);
    }

    static async Task<long> RelayedAsync(ConvergeTestHost host) =>
        (await Store(host).GetConsumerGroupAsync(Transport(host).Log!.RelayCheckpoint, CancellationToken.None))?.Position ?? 0;

    /// <summary>
    /// In a process of its own on <paramref name="store"/>, publishes <paramref name="count"/> events over
    /// <paramref name="streams"/> streams, waits until the relay has mirrored them all, and stops.
    /// </summary>
    async Task PublishRelayedAsync(string store, int count, int streams)
    {
        await using var writer = await StartAsync(store, o => { o.RunConsumers = false; Events(o); });
        for (var i = 0; i < count; i++)
        {
            await writer.Bus.PublishAsync("order-" + (i % streams), new ConformanceEvent("event-" + i));
        }

        await Eventually.UntilAsync(async () => await RelayedAsync(writer) == count, $"the relay's checkpoint at position {count}");
    }

    /// <summary>Everything on the stream from its first message: each message's position header and message id.</summary>
    async Task<List<(long Position, Guid MessageId)>> ReadStreamAsync(int expected)
    {
        var read = new ConcurrentQueue<(long, Guid)>();
        await using var connection = await TestBroker.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync();
        await channel.BasicQosAsync(0, 1000, global: false);
        var consumer = new AsyncEventingBasicConsumer(channel);
        consumer.ReceivedAsync += async (_, args) =>
        {
            var position = (long)args.BasicProperties.Headers![RabbitMqHeaders.Position]!;
            read.Enqueue((position, Guid.Parse(args.BasicProperties.MessageId!)));
            await channel.BasicAckAsync(args.DeliveryTag, multiple: false);
        };
        await channel.BasicConsumeAsync(Prefix + "converge.log", autoAck: false, string.Empty, noLocal: false, exclusive: false,
            new Dictionary<string, object?> { ["x-stream-offset"] = "first" }, consumer);
        await Eventually.UntilAsync(() => read.Count >= expected, () => $"{expected} messages on the stream; read {read.Count}");
        return [.. read];
    }

    [Fact]
    public async Task Events_are_mirrored_to_the_stream_in_position_order_each_once()
    {
        await using var host = await StartAsync(configure: o => { o.RunConsumers = false; Events(o); });
        var appended = new List<LogEvent>();
        for (var i = 0; i < 40; i++)
        {
            appended.Add(await host.Bus.PublishAsync("account-" + (i % 3), new ConformanceEvent("e" + i)));
        }

        await Eventually.UntilAsync(async () => await RelayedAsync(host) == 40, "the relay's checkpoint at position 40");
        var onStream = await ReadStreamAsync(40);

        Assert.Equal(appended.Select(e => (e.Position, e.Envelope.MessageId)), onStream);
        Assert.True(Transport(host).Log!.IsRelaying);
    }

    [Fact]
    public async Task Consumer_groups_read_the_log_from_the_stream_and_replay_it_from_an_earlier_position()
    {
        await PublishRelayedAsync("shared", 60, streams: 7);

        await using var reader = await StartAsync("shared", o => Subscribe(o));
        await Eventually.UntilAsync(async () => (await reader.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 60, "the group at position 60");
        Assert.Equal(60, await CountEffectsAsync(reader));
        Assert.Equal(60, Transport(reader).Log!.EventsReadFromStream);

        // A process that never read the stream finds an earlier position's offset from the positions on it.
        await using var replay = await StartAsync("shared", o => { o.RunConsumers = false; Events(o); });
        var fromTwentyFive = await replay.Store.ReadLogAsync(25, 100, CancellationToken.None);
        var all = await Store(replay).ReadLogAsync(0, 100, CancellationToken.None);

        Assert.Equal(Enumerable.Range(26, 35).Select(p => (long)p), fromTwentyFive.Select(e => e.Position));
        Assert.Equal(all.Skip(25).Select(e => (e.Stream, e.StreamVersion, e.Envelope.MessageId, e.Envelope.MessageType)), fromTwentyFive.Select(e => (e.Stream, e.StreamVersion, e.Envelope.MessageId, e.Envelope.MessageType)));
        Assert.Equal(all.Skip(25).Select(e => e.Envelope.Body.ToArray()), fromTwentyFive.Select(e => e.Envelope.Body.ToArray()));
        Assert.Equal(35, Transport(replay).Log!.EventsReadFromStream);
    }

    /// <summary>
    /// A read that starts on the stream goes on in the store past the relay's checkpoint, so a reader never takes the
    /// stream's end for the log's (the conformance replay once read [1, 2] of three events this way).
    /// </summary>
    [Fact]
    public async Task A_read_from_the_stream_goes_on_in_the_store_where_the_relay_has_not_got_to()
    {
        await PublishRelayedAsync("shared", 30, streams: 4);

        // Holding the relay lock here keeps every process from mirroring what follows.
        await using var connection = await TestBroker.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync();
        await channel.QueueDeclareAsync(Prefix + "converge.log" + LogStream.LockSuffix, durable: false, exclusive: true, autoDelete: true, arguments: null);

        await using var host = await StartAsync("shared", o => { o.RunConsumers = false; Events(o); });
        for (var i = 0; i < 10; i++)
        {
            await host.Bus.PublishAsync("order-" + (i % 4), new ConformanceEvent("stored-" + i));
        }

        var all = await host.Store.ReadLogAsync(0, 100, CancellationToken.None);
        var across = await host.Store.ReadLogAsync(27, 5, CancellationToken.None);
        var stored = await Store(host).ReadLogAsync(0, 100, CancellationToken.None);

        Assert.Equal(30, await RelayedAsync(host));
        Assert.False(Transport(host).Log!.IsRelaying);
        Assert.Equal(stored.Select(e => (e.Position, e.Envelope.MessageId)), all.Select(e => (e.Position, e.Envelope.MessageId)));
        Assert.Equal(40, all.Count);
        Assert.Equal([28L, 29L, 30L, 31L, 32L], across.Select(e => e.Position));
        Assert.True(Transport(host).Log!.EventsReadFromStream >= 30, $"read {Transport(host).Log!.EventsReadFromStream} events from the stream");
    }

    [Fact]
    public async Task A_new_consumer_group_replays_the_whole_log_from_the_stream()
    {
        await using var host = await StartAsync(configure: o => Subscribe(o));
        for (var i = 0; i < 30; i++)
        {
            await host.Bus.PublishAsync("s", new ConformanceEvent("first-" + i));
        }

        await Eventually.UntilAsync(async () => await RelayedAsync(host) == 30 && (await host.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 30, "relayed and projected");

        await using var rebuilt = await StartAsync(configure: o => Subscribe(o, "projection-v2"));
        await Eventually.UntilAsync(async () => (await rebuilt.Store.GetConsumerGroupAsync("projection-v2", CancellationToken.None))?.Position == 30, "the new group at position 30");

        Assert.Equal(60, await CountEffectsAsync(rebuilt));
        Assert.Equal(30, Transport(rebuilt).Log!.EventsReadFromStream);
    }

    [Fact]
    public async Task One_process_mirrors_the_log_at_a_time_and_another_takes_over_when_it_stops()
    {
        var first = await StartAsync("shared", o => { o.RunConsumers = false; Events(o); });
        await using var second = await StartAsync("shared", o => { o.RunConsumers = false; Events(o); });
        for (var i = 0; i < 20; i++)
        {
            await first.Bus.PublishAsync("s", new ConformanceEvent("before-" + i));
        }

        await Eventually.UntilAsync(async () => await RelayedAsync(second) == 20, "the relay's checkpoint at position 20");
        var holders = new[] { Transport(first).Log!.IsRelaying, Transport(second).Log!.IsRelaying };
        Assert.Single(holders, h => h);

        var (holder, other) = holders[0] ? (first, second) : (second, first);
        await holder.DisposeAsync();
        for (var i = 0; i < 10; i++)
        {
            await other.Bus.PublishAsync("s", new ConformanceEvent("after-" + i));
        }

        await Eventually.UntilAsync(async () => await RelayedAsync(other) == 30, "the other process relaying up to position 30");
        Assert.True(Transport(other).Log!.IsRelaying);
        Assert.Equal(Enumerable.Range(1, 30).Select(p => (long)p), (await ReadStreamAsync(30)).Select(m => m.Position));
        if (!ReferenceEquals(holder, first))
        {
            await first.DisposeAsync();
        }
    }
}

/// <summary>Finding where to attach to the stream for a position, from the positions read back.</summary>
public sealed class StreamOffsetTests(ITestOutputHelper output) : BrokerTestBase(output)
{
    [Fact]
    public async Task The_offset_found_for_a_position_is_followed_by_every_later_position_even_after_a_relay_published_some_again()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        var stream = Prefix + "converge.log";

        // Positions 1-120, then 90-160 again as a relay taking over from an older checkpoint publishes them; one publish
        // at a time, so the stream has many chunks to search.
        long[] positions = [.. Enumerable.Range(1, 120).Select(p => (long)p), .. Enumerable.Range(90, 71).Select(p => (long)p)];
        await using var connection = await TestBroker.ConnectAsync();
        await using (var publisher = await connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true)))
        {
            foreach (var position in positions)
            {
                await publisher.BasicPublishAsync(string.Empty, stream, mandatory: true, new BasicProperties { Headers = new Dictionary<string, object?> { [RabbitMqHeaders.Position] = position } }, "{}"u8.ToArray());
            }
        }

        foreach (var after in new long[] { 0, 1, 50, 89, 90, 119, 120, 121, 150, 159 })
        {
            var (offset, _) = await Transport(host).Log!.StartOffsetAsync(after, CancellationToken.None);
            var start = (int)offset!.Value;
            Assert.True(after == 0 || positions[start] <= after, $"after {after}: attached at offset {start}, position {positions[start]}");

            // Not simply the beginning: the search gets close (within a chunk) to where the position is.
            Assert.True(after < 50 || start >= after - 40, $"after {after}: attached at offset {start}, far before it");

            var next = after;
            var read = new List<long>();
            foreach (var position in positions.Skip(start))
            {
                if (position > next)
                {
                    read.Add(position);
                    next = position;
                }
            }

            Assert.Equal(Enumerable.Range((int)after + 1, 160 - (int)after).Select(p => (long)p), read);
        }
    }
}
