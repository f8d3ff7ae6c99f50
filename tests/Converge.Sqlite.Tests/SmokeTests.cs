using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;

namespace Converge.Sqlite.Tests;

public sealed record Ping(int Number);

public sealed class PingHandler : IHandler<Ping>
{
    public async Task HandleAsync(Ping message, MessageContext context, CancellationToken cancellationToken)
    {
        var transaction = await context.GetTransactionAsync(cancellationToken);
        using var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "CREATE TABLE IF NOT EXISTS pings (n INTEGER); INSERT INTO pings (n) VALUES (@n)";
        var parameter = command.CreateParameter();
        parameter.ParameterName = "@n";
        parameter.Value = message.Number;
        command.Parameters.Add(parameter);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }
}

public sealed class SmokeTests
{
    [Fact]
    public async Task A_sent_message_is_handled_and_its_effect_committed()
    {
        await using var host = await ConvergeTestHost.StartAsync(o =>
        {
            o.Messages.Register<Ping>("test.ping");
            o.Handle<Ping, PingHandler>("pings");
        });

        var history = await host.SendAndWaitAsync(new Ping(7));

        Assert.Contains(history, h => h.What == "completed");
        var status = await host.Store.Queries().GetStatusAsync(CancellationToken.None);
        Assert.All(status.Queues, q => Assert.Equal(0, q.Ready + q.InFlight + q.Scheduled));
        Assert.Equal(1, status.InboxRecords);
    }
}
