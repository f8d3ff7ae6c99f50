using System.Collections.Concurrent;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Converge.PostgreSql.Tests;

public sealed record Probe(string Key);

/// <summary>Records which probes were handled, and by which host.</summary>
public sealed class ProbeLog
{
    public ConcurrentDictionary<string, TaskCompletionSource> Handled { get; } = new();

    public Task WaitForAsync(string key) =>
        Handled.GetOrAdd(key, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task.WaitAsync(TimeSpan.FromSeconds(20));
}

public sealed class ProbeHandler(ProbeLog log) : IHandler<Probe>
{
    public Task HandleAsync(Probe message, MessageContext context, CancellationToken cancellationToken)
    {
        log.Handled.GetOrAdd(message.Key, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        return Task.CompletedTask;
    }
}

public sealed class Order
{
    public string Id { get; set; } = "";

    public int Quantity { get; set; }
}

public sealed class OrdersDb(DbContextOptions<OrdersDb> options) : DbContext(options)
{
    public DbSet<Order> Orders => Set<Order>();

    protected override void OnModelCreating(ModelBuilder modelBuilder) =>
        modelBuilder.Entity<Order>(o =>
        {
            o.ToTable("orders");
            o.Property(x => x.Id).HasColumnName("id");
            o.Property(x => x.Quantity).HasColumnName("quantity");
        });
}

public sealed class PostgreSqlStoreTests : IAsyncDisposable
{
    readonly TestDatabase _database = new();

    public ValueTask DisposeAsync() => _database.DisposeAsync();

    /// <summary>
    /// A host on <paramref name="schema"/> whose workers poll only once an hour: anything they handle within the test's
    /// timeout was announced by a notification, not found by a poll.
    /// </summary>
    async Task<(ConvergeTestHost Host, ProbeLog Log)> StartAsync(string schema, bool runConsumers = true)
    {
        var log = new ProbeLog();
        var name = _database.Schema(schema);
        var host = await ConvergeTestHost.StartAsync(
            o =>
            {
                o.UsePostgreSql(TestDatabase.ConnectionStringFor(name), s => s.Schema = name);
                o.Messages.Register<Probe>("test.probe");
                o.Handle<Probe, ProbeHandler>("probes");
                o.PollInterval = TimeSpan.FromHours(1);
                o.RunConsumers = runConsumers;
            },
            services => services.AddSingleton(log));
        await using var connection = await ((PostgreSqlMessageStore)host.Store).OpenConnectionAsync();
        await using var create = new NpgsqlCommand("CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, quantity integer NOT NULL)", connection);
        await create.ExecuteNonQueryAsync();
        return (host, log);
    }

    static async Task<long> CountOrdersAsync(ConvergeTestHost host)
    {
        await using var connection = await ((PostgreSqlMessageStore)host.Store).OpenConnectionAsync();
        await using var count = new NpgsqlCommand("SELECT count(*) FROM orders", connection);
        return (long)(await count.ExecuteScalarAsync())!;
    }

    /// <summary>
    /// The savepoint of a handled message goes with the store's next statement; a handler writes on the transaction's
    /// connection only after the runtime flushed it. Then the rollback to it undoes the handler's row. Without the flush
    /// the row is written before the savepoint and survives the rollback: the obligation is real.
    /// </summary>
    [Fact]
    public async Task Writes_on_the_connection_after_a_flush_are_inside_the_held_savepoint()
    {
        var (host, _) = await StartAsync("held_savepoint", runConsumers: false);
        await using (host)
        {
            await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
            {
                var connection = (NpgsqlConnection)((IDatabaseTransaction)transaction).Transaction.Connection!;
                async Task InsertAsync(string id)
                {
                    await using var insert = new NpgsqlCommand("INSERT INTO orders (id, quantity) VALUES (@id, 1)", connection);
                    insert.Parameters.AddWithValue("id", id);
                    await insert.ExecuteNonQueryAsync();
                }

                await transaction.SavepointBeforeNextAsync(CancellationToken.None);
                await transaction.FlushAsync(CancellationToken.None);
                await InsertAsync("flushed-then-undone");
                await transaction.RollbackToSavepointAsync(CancellationToken.None);

                await transaction.SavepointBeforeNextAsync(CancellationToken.None);
                await InsertAsync("not-flushed");
                await transaction.RollbackToSavepointAsync(CancellationToken.None);

                await transaction.SavepointBeforeNextAsync(CancellationToken.None);
                await transaction.FlushAsync(CancellationToken.None);
                await InsertAsync("flushed-and-kept");
                await transaction.ReleaseSavepointAsync(CancellationToken.None);
                await transaction.CommitAsync(CancellationToken.None);
            }

            await using var read = await ((PostgreSqlMessageStore)host.Store).OpenConnectionAsync();
            await using var ids = new NpgsqlCommand("SELECT string_agg(id, ',' ORDER BY id) FROM orders", read);
            Assert.Equal("flushed-and-kept,not-flushed", (string)(await ids.ExecuteScalarAsync())!);
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("Converge")]
    [InlineData("bad-name")]
    [InlineData("x\"; DROP TABLE y; --")]
    [InlineData("a_schema_name_that_is_much_too_long_to_be_accepted_here")]
    [InlineData("abc\n")]
    [InlineData("converge\r\n")]
    public void Invalid_schema_names_are_refused_with_what_to_use(string schema)
    {
        var error = Assert.Throws<ArgumentException>(() => new ConvergeOptions().UsePostgreSql("Host=127.0.0.1", o => o.Schema = schema));
        Assert.Contains("lower-case letters, digits and '_'", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("pg_catalog")]
    [InlineData("pg_toast")]
    [InlineData("pg_temp_1")]
    [InlineData("pg_converge")]
    public void Schemas_postgresql_reserves_are_refused_with_the_fix(string schema)
    {
        var error = Assert.Throws<ArgumentException>(() => new ConvergeOptions().UsePostgreSql("Host=127.0.0.1", o => o.Schema = schema));
        Assert.Contains($"Schema '{schema}' is reserved: PostgreSQL keeps schema names starting with 'pg_'", error.Message, StringComparison.Ordinal);
        Assert.Contains("Choose a schema of your own (for example 'converge')", error.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// The store's connections prepare the statements they repeat (Converge runs a few statements all day), unless
    /// the connection string says otherwise: a builder's ContainsKey once made every connection string look as if it
    /// had said so, and nothing was ever prepared.
    /// </summary>
    [Theory]
    [InlineData("", true)]
    [InlineData(";Max Auto Prepare=0", false)]
    public async Task Repeated_statements_are_prepared_unless_the_connection_string_says_not_to(string setting, bool prepared)
    {
        await using var store = new PostgreSqlMessageStore(
            new PostgreSqlStoreOptions { ConnectionString = TestDatabase.ConnectionString + setting, Schema = _database.Schema("prepare") },
            new Microsoft.Extensions.Time.Testing.FakeTimeProvider());
        await using var connection = await store.OpenConnectionAsync();
        for (var i = 0; i < 10; i++)
        {
            await using var repeated = new NpgsqlCommand("SELECT @value + 1", connection);
            repeated.Parameters.AddWithValue("value", i);
            await repeated.ExecuteScalarAsync();
        }

        await using var count = new NpgsqlCommand("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT $1 + 1%'", connection);
        Assert.Equal(prepared ? 1L : 0L, await count.ExecuteScalarAsync());
    }

    [Fact]
    public void The_information_schema_is_refused_with_the_fix()
    {
        var error = Assert.Throws<ArgumentException>(() => new ConvergeOptions().UsePostgreSql("Host=127.0.0.1", o => o.Schema = "information_schema"));
        Assert.Contains("Schema 'information_schema' holds PostgreSQL's catalog views, not application tables. Choose a schema of your own", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_connection_string_says_how_to_give_one()
    {
        var error = Assert.Throws<ArgumentException>(() => new ConvergeOptions().UsePostgreSql(""));
        Assert.Contains("UsePostgreSql(", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Schemas_keep_stores_apart_in_one_database()
    {
        var (one, _) = await StartAsync("one", runConsumers: false);
        var (two, _) = await StartAsync("two", runConsumers: false);
        await using var __ = one;
        await using var ___ = two;

        await one.Bus.SendAsync(new Probe("only-in-one"));

        Assert.Equal(1, (await one.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.Single().Ready);
        Assert.Empty((await two.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues);
    }

    [Fact]
    public async Task Several_processes_migrating_one_schema_at_once_all_succeed()
    {
        var schema = _database.Schema("race");
        var stores = Enumerable.Range(0, 4)
            .Select(_ => new PostgreSqlMessageStore(new PostgreSqlStoreOptions { ConnectionString = TestDatabase.ConnectionString, Schema = schema }, TimeProvider.System))
            .ToList();
        try
        {
            await Task.WhenAll(stores.Select(s => s.MigrateAsync(CancellationToken.None).AsTask()));
            Assert.All(await Task.WhenAll(stores.Select(s => s.GetSchemaVersionAsync().AsTask())), v => Assert.Equal(stores[0].Schema.Versions.Count, v));
        }
        finally
        {
            foreach (var store in stores)
            {
                await store.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task A_send_in_another_process_wakes_this_one_through_a_notification()
    {
        var (sender, _) = await StartAsync("wake", runConsumers: false);
        var (worker, log) = await StartAsync("wake");
        await using var __ = sender;
        await using var ___ = worker;

        await sender.Bus.SendAsync(new Probe("across"));

        await log.WaitForAsync("across");
    }

    [Fact]
    public async Task The_callers_NpgsqlTransaction_carries_the_outbox_and_commits_or_rolls_back_with_it()
    {
        var (host, log) = await StartAsync("outbox");
        await using var _ = host;
        var schema = ((PostgreSqlMessageStore)host.Store).SchemaName;

        await using (var connection = new NpgsqlConnection(TestDatabase.ConnectionStringFor(schema)))
        {
            await connection.OpenAsync();
            await using (var rolledBack = await connection.BeginTransactionAsync())
            {
                await using var insert = new NpgsqlCommand("INSERT INTO orders (id, quantity) VALUES ('o-1', 1)", connection, rolledBack);
                await insert.ExecuteNonQueryAsync();
                await host.Bus.SendAsync(new Probe("rolled-back"), rolledBack);
                await rolledBack.RollbackAsync();
            }

            await using var committed = await connection.BeginTransactionAsync();
            await using (var insert = new NpgsqlCommand("INSERT INTO orders (id, quantity) VALUES ('o-2', 2)", connection, committed))
            {
                await insert.ExecuteNonQueryAsync();
            }

            await host.Bus.SendAsync(new Probe("committed"), committed);
            await committed.CommitAsync();
        }

        await log.WaitForAsync("committed");
        Assert.Equal(1, await CountOrdersAsync(host));
        Assert.False(log.Handled.ContainsKey("rolled-back"));
    }

    [Fact]
    public async Task Commit_callbacks_of_the_callers_transaction_run_only_when_it_commits()
    {
        var (host, _) = await StartAsync("callbacks", runConsumers: false);
        await using var _ = host;
        var committed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var rolledBack = false;

        await using var connection = await ((PostgreSqlMessageStore)host.Store).OpenConnectionAsync();
        await using (var transaction = await connection.BeginTransactionAsync())
        {
            host.Store.Database().Enlist(transaction).OnCommitted(() => rolledBack = true);
            await transaction.RollbackAsync();
        }

        await using (var transaction = await connection.BeginTransactionAsync())
        {
            host.Store.Database().Enlist(transaction).OnCommitted(committed.SetResult);
            await transaction.CommitAsync();
        }

        await committed.Task.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.False(rolledBack);
    }

    [Fact]
    public async Task A_DbContext_transaction_carries_the_outbox()
    {
        var (host, log) = await StartAsync("ef");
        await using var _ = host;
        var schema = ((PostgreSqlMessageStore)host.Store).SchemaName;
        var options = new DbContextOptionsBuilder<OrdersDb>().UseNpgsql(TestDatabase.ConnectionStringFor(schema)).Options;

        await using (var db = new OrdersDb(options))
        {
            await using var transaction = await db.Database.BeginTransactionAsync();
            db.Orders.Add(new Order { Id = "ef-1", Quantity = 3 });
            await db.SaveChangesAsync();
            await host.Bus.SendAsync(new Probe("ef-committed"), transaction.GetDbTransaction());
            await transaction.CommitAsync();
        }

        await using (var db = new OrdersDb(options))
        {
            await using var transaction = await db.Database.BeginTransactionAsync();
            db.Orders.Add(new Order { Id = "ef-2", Quantity = 4 });
            await db.SaveChangesAsync();
            await host.Bus.SendAsync(new Probe("ef-rolled-back"), transaction.GetDbTransaction());
            await transaction.RollbackAsync();
        }

        await log.WaitForAsync("ef-committed");
        Assert.Equal(1, await CountOrdersAsync(host));
        Assert.False(log.Handled.ContainsKey("ef-rolled-back"));
    }

    [Fact]
    public async Task A_Converge_transaction_carries_a_DbContext()
    {
        var (host, log) = await StartAsync("ef_inside");
        await using var _ = host;

        await using (var transaction = await host.Bus.BeginTransactionAsync())
        {
            var options = new DbContextOptionsBuilder<OrdersDb>().UseNpgsql(transaction.Transaction.Connection!).Options;
            await using var db = new OrdersDb(options);
            await db.Database.UseTransactionAsync(transaction.Transaction);
            db.Orders.Add(new Order { Id = "inside-1", Quantity = 1 });
            await db.SaveChangesAsync();
            await host.Bus.SendAsync(new Probe("inside"), transaction.Transaction);
            await transaction.CommitAsync();
        }

        await log.WaitForAsync("inside");
        Assert.Equal(1, await CountOrdersAsync(host));
    }

    [Fact]
    public async Task A_transaction_on_another_database_is_refused()
    {
        var (host, _) = await StartAsync("foreign", runConsumers: false);
        await using var _ = host;
        var other = new NpgsqlConnectionStringBuilder(TestDatabase.ConnectionString) { Database = "postgres" };
        await using var connection = new NpgsqlConnection(other.ConnectionString);
        await connection.OpenAsync();
        await using var transaction = await connection.BeginTransactionAsync();

        var error = Assert.Throws<ArgumentException>(() => host.Store.Database().Enlist(transaction));
        Assert.Contains("store's database", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Only_one_process_at_a_time_fires_recurring_schedules()
    {
        var (host, _) = await StartAsync("scheduler", runConsumers: false);
        await using var _ = host;
        var store = host.Store;
        var now = DateTimeOffset.UnixEpoch.AddYears(60);
        await using (var setup = await store.BeginAsync(CancellationToken.None))
        {
            await setup.Jobs().UpsertRecurringJobAsync(new RecurringJobRecord { Name = "nightly", Cron = "0 0 * * *", TimeZone = "UTC", Queue = "jobs", MessageType = "test.probe", Body = "{}"u8.ToArray(), NextAt = now }, CancellationToken.None);
            await setup.CommitAsync(CancellationToken.None);
        }

        await using var first = await store.BeginAsync(CancellationToken.None);
        await using var second = await store.BeginAsync(CancellationToken.None);

        Assert.Single(await first.Jobs().LoadDueRecurringJobsAsync(now, CancellationToken.None));
        Assert.Empty(await second.Jobs().LoadDueRecurringJobsAsync(now, CancellationToken.None));
        await first.DisposeAsync();
        await using var third = await store.BeginAsync(CancellationToken.None);
        Assert.Single(await third.Jobs().LoadDueRecurringJobsAsync(now, CancellationToken.None));
    }
}
