using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Converge.RabbitMq.Tests;

/// <summary>The broker the tests run against, named by <c>CONVERGE_TEST_RABBITMQ</c>, and clean-up of what they declare.</summary>
internal static class TestBroker
{
    public const string Variable = "CONVERGE_TEST_RABBITMQ";

    /// <summary>The broker's address; fails the test with the fix when it is not set.</summary>
    public static Uri Uri => Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } text
        ? new Uri(text)
        : throw new InvalidOperationException($"{Variable} is not set, and the RabbitMQ tests need a broker (for example amqp://guest:guest@127.0.0.1:5672/): start services with scripts/services.sh or run ./test.sh.");

    /// <summary>A prefix no other test uses, so each test has its own queues on the shared broker.</summary>
    public static string NewPrefix() => "t" + Guid.NewGuid().ToString("N")[..12] + ".";

    public static async Task<IConnection> ConnectAsync() =>
        await new ConnectionFactory { Uri = Uri, AutomaticRecoveryEnabled = false, ClientProvidedName = "converge-tests" }.CreateConnectionAsync();

    /// <summary>Deletes the queues and exchanges a test declared (missing ones are fine).</summary>
    public static async Task DeleteAsync(IEnumerable<string> queues, IEnumerable<string> exchanges)
    {
        await using var connection = await ConnectAsync();
        foreach (var queue in queues.Distinct(StringComparer.Ordinal))
        {
            await using var channel = await connection.CreateChannelAsync();
            await channel.QueueDeleteAsync(queue, ifUnused: false, ifEmpty: false);
        }

        foreach (var exchange in exchanges.Distinct(StringComparer.Ordinal))
        {
            await using var channel = await connection.CreateChannelAsync();
            await channel.ExchangeDeleteAsync(exchange, ifUnused: false);
        }
    }

    /// <summary>The number of ready messages of <paramref name="queue"/>; <c>null</c> when it does not exist.</summary>
    public static async Task<uint?> ReadyCountAsync(IConnection connection, string queue)
    {
        await using var channel = await connection.CreateChannelAsync();
        try
        {
            return (await channel.QueueDeclarePassiveAsync(queue)).MessageCount;
        }
        catch (OperationInterruptedException exception) when (exception.ShutdownReason?.ReplyCode == Constants.NotFound)
        {
            return null;
        }
    }
}
