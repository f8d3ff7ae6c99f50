using System.Collections.Concurrent;
using System.Text;
using System.Text.Json.Nodes;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Tests.Contracts;

/// <summary>
/// Old messages read by new code: stored bodies of older versions and older names reach the handlers of the newest
/// version through upcasters and aliases, on read, on the log and on queues; a version with no path stays unknown.
/// </summary>
public sealed class UpcastingTests
{
    // Version 1 has no class any more: it stored { "orderId", "total" } and is read by a JSON upcaster.
    public sealed record OrderPlacedV2(string OrderId, decimal Amount);

    public sealed record OrderPlacedV3(string OrderId, decimal Amount, string Currency);

    public sealed class Received
    {
        public ConcurrentQueue<OrderPlacedV3> Orders { get; } = new();
    }

    public sealed class V3Handler(Received received) : IHandler<OrderPlacedV3>
    {
        public Task HandleAsync(OrderPlacedV3 message, MessageContext context, CancellationToken cancellationToken)
        {
            received.Orders.Enqueue(message);
            return Task.CompletedTask;
        }
    }

    const string Name = "tests.order-placed";
    const string Group = "tests.projection";
    const string Queue = "tests.orders";

    static void RegisterVersions(MessageTypeRegistry messages) => messages
        .Register<OrderPlacedV2>(Name, 2)
        .Register<OrderPlacedV3>(Name, 3)
        .Upcast(Name, from: 1, to: 2, v1 => new JsonObject { ["orderId"] = v1["orderId"]?.DeepClone(), ["amount"] = v1["total"]?.DeepClone() })
        .Upcast<OrderPlacedV2, OrderPlacedV3>(v2 => new OrderPlacedV3(v2.OrderId, v2.Amount, "EUR"))
        .Alias("sales.order-placed@1", Name + "@1");

    static Envelope Stored(string type, string json) => new()
    {
        MessageId = Guid.NewGuid(),
        MessageType = type,
        SentAt = DateTimeOffset.UnixEpoch,
        Body = Encoding.UTF8.GetBytes(json),
    };

    static async Task<ConvergeTestHost> StartAsync(Action<ConvergeOptions> configure)
    {
        var host = await ConvergeTestHost.StartAsync(o =>
        {
            RegisterVersions(o.Messages);
            o.Retry.InitialDelay = TimeSpan.Zero;
            o.Retry.MaxDelay = TimeSpan.Zero;
            configure(o);
        }, services => services.AddSingleton<Received>());
        return host;
    }

    static async Task InTransactionAsync(IMessageStore store, Func<IStoreTransaction, ValueTask> work)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        await work(transaction);
        await transaction.CommitAsync(CancellationToken.None);
    }

    [Fact]
    public void The_read_path_of_a_stored_name_follows_aliases_and_upcasters_in_order()
    {
        var messages = new MessageTypeRegistry();
        RegisterVersions(messages);

        Assert.Equal(["sales.order-placed@1", Name + "@1", Name + "@2", Name + "@3"], messages.GetReadPath("sales.order-placed@1"));
        Assert.Equal([Name + "@3"], messages.GetReadPath(Name + "@3"));
        Assert.Equal(["tests.unknown@1"], messages.GetReadPath("tests.unknown@1"));
    }

    [Fact]
    public void Read_applies_a_json_upcaster_then_a_typed_one_from_version_1_to_3()
    {
        var messages = new MessageTypeRegistry();
        RegisterVersions(messages);
        var serializer = new SystemTextJsonMessageSerializer();

        var fromV1 = messages.Read(Name + "@1", Encoding.UTF8.GetBytes("""{"orderId":"o-1","total":12.5}"""), typeof(OrderPlacedV3), serializer);
        var fromV2 = messages.Read(Name + "@2", Encoding.UTF8.GetBytes("""{"orderId":"o-2","amount":3}"""), typeof(OrderPlacedV3), serializer);
        var v2FromV1 = messages.Read(Name + "@1", Encoding.UTF8.GetBytes("""{"orderId":"o-3","total":1}"""), typeof(OrderPlacedV2), serializer);

        Assert.Equal(new OrderPlacedV3("o-1", 12.5m, "EUR"), fromV1);
        Assert.Equal(new OrderPlacedV3("o-2", 3m, "EUR"), fromV2);
        Assert.Equal(new OrderPlacedV2("o-3", 1m), v2FromV1);
    }

    [Fact]
    public void Reading_as_a_type_off_the_read_path_names_the_path_and_the_fix()
    {
        var messages = new MessageTypeRegistry();
        RegisterVersions(messages);

        var error = Assert.Throws<InvalidOperationException>(() =>
            messages.Read(Name + "@3", "{}"u8.ToArray(), typeof(OrderPlacedV2), new SystemTextJsonMessageSerializer()));

        Assert.Contains("its read path is tests.order-placed@3", error.Message, StringComparison.Ordinal);
        Assert.Contains("Register an upcaster or an alias", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_second_read_path_from_one_name_is_refused()
    {
        var messages = new MessageTypeRegistry();
        RegisterVersions(messages);

        var error = Assert.Throws<InvalidOperationException>(() => messages.Upcast(Name, from: 1, to: 3, json => json));

        Assert.Contains("already reads as 'tests.order-placed@2'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_read_path_that_closes_a_cycle_is_refused()
    {
        var messages = new MessageTypeRegistry().Alias("tests.a@1", "tests.b@1").Alias("tests.b@1", "tests.c@1");

        var error = Assert.Throws<InvalidOperationException>(() => messages.Alias("tests.c@1", "tests.a@1"));

        Assert.Contains("cycle", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Upcasting_from_an_unregistered_type_names_the_registration_and_the_json_upcaster()
    {
        var messages = new MessageTypeRegistry().Register<OrderPlacedV3>(Name, 3);

        var error = Assert.Throws<InvalidOperationException>(() => messages.Upcast<OrderPlacedV2, OrderPlacedV3>(v2 => new OrderPlacedV3(v2.OrderId, v2.Amount, "EUR")));

        Assert.Contains("o.Messages.Register<OrderPlacedV2>", error.Message, StringComparison.Ordinal);
        Assert.Contains("o.Messages.Upcast(\"your.name\", from: 1, to: 2, json => ...)", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("tests.order-placed", "tests.order-placed@1")]
    [InlineData("tests.order-placed@1", "Tests.Order@1")]
    [InlineData("tests.order-placed@1", "tests.order-placed@1")]
    public void An_alias_needs_two_different_names_with_versions(string oldTypeName, string typeName) =>
        Assert.Throws<ArgumentException>(() => new MessageTypeRegistry().Alias(oldTypeName, typeName));

    [Fact]
    public async Task Old_events_on_the_log_reach_a_consumer_group_of_the_newest_version_upcast_and_stay_as_stored()
    {
        await using var host = await StartAsync(o => o.Subscribe<OrderPlacedV3, V3Handler>(Group));
        await InTransactionAsync(host.Store, async t => await t.AppendAsync("order-1", null,
        [
            Stored(Name + "@1", """{"orderId":"o-1","total":10}"""),
            Stored(Name + "@2", """{"orderId":"o-1","amount":20}"""),
            Stored(Name + "@3", """{"orderId":"o-1","amount":30,"currency":"USD"}"""),
            Stored("sales.order-placed@1", """{"orderId":"o-1","total":40}"""),
        ], CancellationToken.None));

        await Eventually.UntilAsync(async () => (await host.Store.GetConsumerGroupAsync(Group, CancellationToken.None))?.Position == 4, "the group handles the four events");
        var received = host.Services.GetRequiredService<Received>();
        var stored = await host.Store.ReadLogAsync(0, 10, CancellationToken.None);

        Assert.Equal(
            [new OrderPlacedV3("o-1", 10m, "EUR"), new OrderPlacedV3("o-1", 20m, "EUR"), new OrderPlacedV3("o-1", 30m, "USD"), new OrderPlacedV3("o-1", 40m, "EUR")],
            received.Orders);
        Assert.Equal([Name + "@1", Name + "@2", Name + "@3", "sales.order-placed@1"], stored.Select(e => e.Envelope.MessageType));
        Assert.Equal("""{"orderId":"o-1","total":10}""", Encoding.UTF8.GetString(stored[0].Envelope.Body.Span));
    }

    [Fact]
    public async Task A_queued_message_under_an_old_name_reaches_the_handler_of_the_newest_version()
    {
        await using var host = await StartAsync(o => o.Handle<OrderPlacedV3, V3Handler>(Queue));
        await InTransactionAsync(host.Store, t => t.EnqueueAsync(new OutgoingMessage(Queue, Stored("sales.order-placed@1", """{"orderId":"o-9","total":7}""")), CancellationToken.None));

        var received = host.Services.GetRequiredService<Received>();
        await Eventually.UntilAsync(() => !received.Orders.IsEmpty, () => "the handler receives the message");

        Assert.Equal(new OrderPlacedV3("o-9", 7m, "EUR"), Assert.Single(received.Orders));
    }

    [Fact]
    public async Task A_version_with_no_read_path_to_a_handled_type_is_dead_lettered_as_unknown()
    {
        await using var host = await StartAsync(o => o.Handle<OrderPlacedV3, V3Handler>(Queue));
        await InTransactionAsync(host.Store, t => t.EnqueueAsync(new OutgoingMessage(Queue, Stored(Name + "@7", """{"orderId":"o-7"}""")), CancellationToken.None));

        await Eventually.UntilAsync(async () => (await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Count == 1, "the message is dead-lettered");
        var letter = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));

        Assert.Equal(DeadLetterReasons.UnknownType, letter.Reason);
        Assert.Contains("no alias or upcaster reads it", letter.Exception, StringComparison.Ordinal);
        Assert.Empty(host.Services.GetRequiredService<Received>().Orders);
    }

    [Fact]
    public async Task An_upcaster_that_cannot_read_the_stored_body_dead_letters_it_as_undecodable()
    {
        await using var host = await StartAsync(o => o.Handle<OrderPlacedV3, V3Handler>(Queue));
        await InTransactionAsync(host.Store, t => t.EnqueueAsync(new OutgoingMessage(Queue, Stored(Name + "@1", "[1, 2]")), CancellationToken.None));

        await Eventually.UntilAsync(async () => (await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Count == 1, "the message is dead-lettered");
        var letter = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));

        Assert.Equal(DeadLetterReasons.DeserializationFailed, letter.Reason);
        Assert.Contains("is not a JSON object", letter.Exception, StringComparison.Ordinal);
    }
}
