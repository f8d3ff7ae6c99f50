using Converge.Storage;
using Converge.Testing;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Sqlite.Tests;

public sealed class ShopOrder
{
    public string Id { get; set; } = "";

    public int Quantity { get; set; }
}

public sealed class ShopDb(DbContextOptions<ShopDb> options) : DbContext(options)
{
    public DbSet<ShopOrder> Orders => Set<ShopOrder>();
}

/// <summary>An EF Core DbContext joins a Converge transaction, so its SaveChanges and the outbox commit together.</summary>
public sealed class EntityFrameworkOutboxTests : IDisposable
{
    readonly string _folder = Directory.CreateTempSubdirectory("converge-ef-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    async Task<(ConvergeTestHost Host, ProbeSignals Signals)> StartAsync()
    {
        var signals = new ProbeSignals();
        var host = await ConvergeTestHost.StartAsync(
            o =>
            {
                o.UseSqlite(Path.Combine(_folder, "shop.db"));
                o.Messages.Register<Probe>("test.probe");
                o.Handle<Probe, ProbeHandler>("probes");
            },
            services => services.AddSingleton(signals));
        await using var connection = ((SqliteMessageStore)host.Store).OpenConnection();
        await using var create = connection.CreateCommand();
        create.CommandText = "CREATE TABLE Orders (Id TEXT PRIMARY KEY, Quantity INTEGER NOT NULL)";
        await create.ExecuteNonQueryAsync();
        return (host, signals);
    }

    static async Task<long> CountOrdersAsync(ConvergeTestHost host)
    {
        await using var connection = ((SqliteMessageStore)host.Store).OpenConnection();
        await using var count = connection.CreateCommand();
        count.CommandText = "SELECT count(*) FROM Orders";
        return (long)(await count.ExecuteScalarAsync())!;
    }

    /// <summary>EF Core writes an order and the bus sends its message, both in one Converge transaction.</summary>
    static async Task SaveOrderAndSendAsync(ConvergeTestHost host, string orderId, bool commit)
    {
        await using var transaction = await host.Bus.BeginTransactionAsync();
        var options = new DbContextOptionsBuilder<ShopDb>().UseSqlite(transaction.Transaction.Connection!).Options;
        await using var db = new ShopDb(options);
        await db.Database.UseTransactionAsync(transaction.Transaction);
        db.Orders.Add(new ShopOrder { Id = orderId, Quantity = 1 });
        await db.SaveChangesAsync();
        await host.Bus.SendAsync(new Probe(orderId), transaction.Transaction);
        if (commit)
        {
            await transaction.CommitAsync();
        }
    }

    [Fact]
    public async Task SaveChanges_and_the_outbox_send_commit_together()
    {
        var (host, signals) = await StartAsync();
        await using var _ = host;

        await SaveOrderAndSendAsync(host, "o-1", commit: true);

        await signals.Started.Task.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(1, await CountOrdersAsync(host));
    }

    [Fact]
    public async Task A_rolled_back_DbContext_transaction_sends_nothing()
    {
        var (host, _) = await StartAsync();
        await using var __ = host;

        await SaveOrderAndSendAsync(host, "o-2", commit: false);

        Assert.Equal(0, await CountOrdersAsync(host));
        Assert.Empty((await host.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues);
    }
}
