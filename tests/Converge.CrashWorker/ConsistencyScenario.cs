using Converge.Consistency;
using Converge.Projections;
using Converge.Runtime;
using Converge.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.CrashWorker;

/// <summary>The event of the read-your-writes test: an order was placed.</summary>
public sealed record OrderPlaced(string OrderId);

/// <summary>One row per order placed, with the position of its event.</summary>
public sealed class OrdersProjection : IProjection
{
    public IReadOnlyList<string> Tables { get; } = [ConsistencyScenario.Table];

    public IReadOnlyList<Type> Events { get; } = [typeof(OrderPlaced)];

    public async ValueTask CreateTablesAsync(ProjectionContext context, CancellationToken cancellationToken) =>
        await context.Database.ExecuteAsync($"CREATE TABLE {context.Table(ConsistencyScenario.Table)} (order_id TEXT PRIMARY KEY, position INTEGER NOT NULL)", [], cancellationToken);

    public async ValueTask ApplyAsync(IReadOnlyList<ProjectedEvent> events, ProjectionContext context, CancellationToken cancellationToken)
    {
        foreach (var projected in events)
        {
            await context.Database.ExecuteAsync(
                $"INSERT INTO {context.Table(ConsistencyScenario.Table)} (order_id, position) VALUES (@id, @position)",
                [new("@id", ((OrderPlaced)projected.Message).OrderId), new("@position", projected.Event.Position)],
                cancellationToken);
        }
    }
}

/// <summary>
/// What the worker and the read-your-writes test share (compiled into both): the projection <see cref="Projection"/>
/// and its table. The worker runs the projection and writes on request: each line <c>write ID</c> on its standard
/// input publishes <see cref="OrderPlaced"/> and answers <c>wrote ID TOKEN</c> on its standard output.
/// </summary>
public static class ConsistencyScenario
{
    public const string Projection = "orders";
    public const string Table = "orders";
    public const string Ready = "ready";
    public const string Wrote = "wrote";

    public static void Configure(ConvergeOptions options, string databasePath, bool runConsumers)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.UseSqlite(databasePath);
        options.Messages.Register<OrderPlaced>("ryw.order-placed");
        options.PollInterval = TimeSpan.FromMilliseconds(20);
        options.RunConsumers = runConsumers;
        options.AddProjection<OrdersProjection>(Projection, 1);
    }

    /// <summary>Runs the projection and writes on request until standard input closes.</summary>
    public static async Task<int> RunAsync(IHost host)
    {
        ArgumentNullException.ThrowIfNull(host);
        await host.StartAsync();
        var bus = host.Services.GetRequiredService<IMessageBus>();
        Console.WriteLine(Ready);
        while (await Console.In.ReadLineAsync() is { } line)
        {
            if (line.Split(' ') is ["write", var id])
            {
                var stored = await bus.PublishAsync("order-" + id, new OrderPlaced(id));
                Console.WriteLine($"{Wrote} {id} {ConsistencyToken.After(stored)}");
            }
            else
            {
                await Console.Error.WriteLineAsync($"unknown command '{line}': write ID");
            }
        }

        await host.StopAsync();
        return 0;
    }
}
