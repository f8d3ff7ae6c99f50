using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing.Conformance;
using Converge.Testing.Faults;
using Converge.PostgreSql;
using Converge.Sqlite;
using Converge.Testing.InMemory;
using Converge.Verification;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Converge.Testing.Tests;

public sealed record Reserve(string Order);
public sealed record Reserved(string Order);
public sealed record Release(string Order);
public sealed record Released(string Order);
public sealed record Charge(string Order);
public sealed record Charged(string Order);
public sealed record ChargeRefused(string Order, string Reason);
public sealed record Refund(string Order);
public sealed record Refunded(string Order);
public sealed record Ship(string Order);
public sealed record Shipped(string Order);

public sealed class ShopOrder
{
    public string Order { get; set; } = "";
}

/// <summary>Reserve stock (undone by releasing it), charge (undone by refunding), ship (the pivot).</summary>
public sealed class ShopOrderSaga : SagaDefinition<ShopOrder>
{
    public override string Name => "shop-order";

    protected override void Define(SagaBuilder<ShopOrder> saga)
    {
        saga.Compensatable("reserve")
            .Send(d => new Reserve(d.Order))
            .OnReply<Reserved>()
            .CompensateWith(d => new Release(d.Order))
            .OnCompensated<Released>();
        saga.Compensatable("charge")
            .Send(d => new Charge(d.Order))
            .OnReply<Charged>()
            .FailOn<ChargeRefused>(r => r.Reason)
            .CompensateWith(d => new Refund(d.Order))
            .OnCompensated<Refunded>();
        saga.Pivot("ship")
            .Send(d => new Ship(d.Order))
            .OnReply<Shipped>();
    }
}

/// <summary>
/// Where the shop's participants keep their effects: in the handler's transaction (<see cref="Effects"/>), kept exactly
/// when the message is recorded as handled; or, when <see cref="Careless"/>, in a list of their own the moment the handler
/// runs, which a crash between the handler and its commit leaves behind (the fault the matrix must find).
/// </summary>
public sealed class ShopRecords(bool careless)
{
    readonly System.Collections.Concurrent.ConcurrentQueue<string> _careless = new();

    public bool Careless { get; } = careless;

    public Task WriteAsync(MessageContext context, string effect, CancellationToken cancellationToken)
    {
        if (Careless)
        {
            _careless.Enqueue(effect);
            return Task.CompletedTask;
        }

        return Effects.WriteAsync(context, context.Queue!, effect, cancellationToken);
    }

    /// <summary>The effects kept, one per effect.</summary>
    public IReadOnlyList<string> Kept(IMessageStore store) => Careless ? [.. _careless] : Effects.CommittedKeys(store);
}

/// <summary>The shop's participants; orders named <c>broke-*</c> are refused their charge.</summary>
public sealed class ShopDesk(ShopRecords records) :
    IHandler<Reserve>, IHandler<Release>, IHandler<Charge>, IHandler<Refund>, IHandler<Ship>
{
    async Task DoAsync(MessageContext context, string order, string effect, object reply, CancellationToken cancellationToken)
    {
        await records.WriteAsync(context, order + ":" + effect, cancellationToken);
        await context.ReplyAsync(reply, cancellationToken);
    }

    public Task HandleAsync(Reserve message, MessageContext context, CancellationToken cancellationToken) => DoAsync(context, message.Order, "reserve", new Reserved(message.Order), cancellationToken);

    public Task HandleAsync(Release message, MessageContext context, CancellationToken cancellationToken) => DoAsync(context, message.Order, "release", new Released(message.Order), cancellationToken);

    public async Task HandleAsync(Charge message, MessageContext context, CancellationToken cancellationToken)
    {
        if (message.Order.StartsWith("broke-", StringComparison.Ordinal))
        {
            await context.ReplyAsync(new ChargeRefused(message.Order, "card declined"), cancellationToken);
            return;
        }

        await DoAsync(context, message.Order, "charge", new Charged(message.Order), cancellationToken);
    }

    public Task HandleAsync(Refund message, MessageContext context, CancellationToken cancellationToken) => DoAsync(context, message.Order, "refund", new Refunded(message.Order), cancellationToken);

    public Task HandleAsync(Ship message, MessageContext context, CancellationToken cancellationToken) => DoAsync(context, message.Order, "ship", new Shipped(message.Order), cancellationToken);
}

/// <summary>
/// The crash-point matrix on the in-memory store: the shop's orders run on a host that dies at its Nth store
/// operation, for every N until a run finishes without dying; a new host then starts on the same store and runs to
/// quiescence, and the orders are judged from the participants' own records.
/// </summary>
public sealed class CrashMatrixTests(ITestOutputHelper output)
{
    static readonly string[] Orders = ["o-1", "o-2", "o-3", "o-4", "o-5", "broke-6"];

    [Theory]
    [InlineData("in-memory")]
    [InlineData("sqlite")]
    public async Task The_shop_survives_a_crash_at_every_store_operation(string database)
    {
        var result = await RunMatrixAsync(database, careless: false);

        Assert.True(result.Points.Count >= 200, $"only {result.Points.Count} crash points");
        Assert.Empty(result.Violations);
    }

    [Fact]
    public async Task The_shop_survives_a_crash_at_every_tenth_store_operation_on_postgresql()
    {
        var result = await RunMatrixAsync("postgresql", careless: false, every: 10);

        Assert.True(result.Points.Count >= 20, $"only {result.Points.Count} crash points");
        Assert.Empty(result.Violations);
    }

    [Fact]
    public async Task The_shop_survives_a_crash_at_every_thirtieth_store_operation_on_postgresql_with_rabbitmq()
    {
        var result = await RunMatrixAsync("postgresql+rabbitmq", careless: false, every: 30);

        Assert.True(result.Points.Count >= 10, $"only {result.Points.Count} crash points");
        Assert.Empty(result.Violations);
    }

    [Theory]
    [InlineData("in-memory")]
    [InlineData("sqlite")]
    public async Task The_matrix_finds_a_participant_whose_effect_is_not_in_its_handlers_transaction(string database)
    {
        var result = await RunMatrixAsync(database, careless: true);

        Assert.Contains(result.Violations, v => v.Contains(": effects ", StringComparison.Ordinal));
    }

    /// <summary>The matrix of the shop's orders on <paramref name="database"/>, reported to the test's output.</summary>
    async Task<CrashMatrixResult> RunMatrixAsync(string database, bool careless, int every = 1)
    {
        var result = await CrashMatrix.RunAsync(
            async plan =>
            {
                await using ShopDatabase db = database switch
                {
                    "sqlite" => new SqliteShopDatabase(),
                    "postgresql" => await PostgreSqlShopDatabase.CreateAsync(),
                    "postgresql+rabbitmq" => new RabbitMqShopDatabase(await PostgreSqlShopDatabase.CreateAsync()),
                    _ => new InMemoryShopDatabase(),
                };
                return await RunWithCrashAsync(plan, db, new ShopRecords(careless));
            },
            every);
        CrashMatrix.Report(output, database, result);
        return result;
    }

    [Fact]
    public void The_judge_names_a_lost_order_a_repeated_effect_and_a_compensation_out_of_order()
    {
        Assert.Equal(
            [
                "o-1: effects reserve, reserve, charge, ship (saga Completed): neither every step nor the steps done then undone in reverse",
                "o-2: saga missing",
                "o-3: every step done, but the saga is Running",
                "o-3: saga Running, not Completed",
                "o-4: saga missing",
                "o-5: saga missing",
                "broke-6: effects reserve, release, refund (saga Compensated): neither every step nor the steps done then undone in reverse",
            ],
            Judge(
                new Dictionary<string, SagaState> { ["o-1"] = SagaState.Completed, ["o-3"] = SagaState.Running, ["broke-6"] = SagaState.Compensated },
                ["o-1:reserve", "o-1:reserve", "o-1:charge", "o-1:ship", "o-3:reserve", "o-3:charge", "o-3:ship", "broke-6:reserve", "broke-6:release", "broke-6:refund"]));
    }

    /// <summary>Runs the orders on a host that dies as <paramref name="plan"/> says, then on a new host to the end; what is wrong.</summary>
    static async Task<List<string>> RunWithCrashAsync(CrashPlan plan, ShopDatabase database, ShopRecords records)
    {
        await CrashMatrix.CrashThenRecoverAsync(
            plan,
            database.Clock,
            crash => StartAsync(database, crash, records),
            async host =>
            {
                foreach (var order in Orders)
                {
                    // An order the dead host had not placed is placed again, as its client would retry.
                    if (await database.Observer.SagaQueries().GetSagaAsync(order, CancellationToken.None) is null)
                    {
                        await host.Sagas.StartAsync("shop-order", order, new ShopOrder { Order = order });
                    }
                }
            },
            () => SettledAsync(database.Observer));

        var states = new Dictionary<string, SagaState>();
        foreach (var order in Orders)
        {
            if (await database.Observer.SagaQueries().GetSagaAsync(order, CancellationToken.None) is { } saga)
            {
                states[order] = saga.State;
            }
        }

        var violations = Judge(states, await database.EffectsAsync(records));
        violations.AddRange(await CrashMatrix.LeftoversAsync(database.Observer));
        return violations;
    }

    /// <summary>
    /// What is wrong with the orders' outcome, judged by the properties the simulation judges too: every order's saga
    /// ended as its order should (completed, or compensated when its charge is refused), and the participants' records
    /// show its steps once each, in order, or the steps done then undone in reverse.
    /// </summary>
    static List<string> Judge(Dictionary<string, SagaState> states, IReadOnlyList<string> effects)
    {
        var violations = new List<string>();
        foreach (var order in Orders)
        {
            var done = effects.Where(e => e.StartsWith(order + ":", StringComparison.Ordinal)).Select(e => e[(order.Length + 1)..]).ToList();
            SagaState? state = states.TryGetValue(order, out var found) ? found : null;
            violations.AddRange(Invariants.SagaOutcome(order, state, done, Steps));
            var want = order.StartsWith("broke-", StringComparison.Ordinal) ? SagaState.Compensated : SagaState.Completed;
            if (state is { } ended && ended != want)
            {
                violations.Add($"{order}: saga {ended}, not {want}");
            }
        }

        return violations;
    }

    static readonly (string, string?)[] Steps = [("reserve", "release"), ("charge", "refund"), ("ship", null)];

    static async Task<bool> SettledAsync(IMessageStore store)
    {
        foreach (var order in Orders)
        {
            if (await store.SagaQueries().GetSagaAsync(order, CancellationToken.None) is not { State: SagaState.Completed or SagaState.Compensated })
            {
                return false;
            }
        }

        return await CrashMatrix.QueuesEmptyAsync(store);
    }

    static Task<ConvergeTestHost> StartAsync(ShopDatabase database, CrashPlan? plan, ShopRecords records) => ConvergeTestHost.StartAsync(
        o =>
        {
            o.TimeProvider = database.Clock;
            database.Use(o, plan);

            // The new host looks for work often.
            o.LeaseDuration = TimeSpan.FromSeconds(1);
            o.PollInterval = TimeSpan.FromMilliseconds(20);
            o.Messages.Register<Reserve>("shop.reserve").Register<Reserved>("shop.reserved").Register<Release>("shop.release")
                .Register<Released>("shop.released").Register<Charge>("shop.charge").Register<Charged>("shop.charged")
                .Register<ChargeRefused>("shop.charge-refused").Register<Refund>("shop.refund").Register<Refunded>("shop.refunded")
                .Register<Ship>("shop.ship").Register<Shipped>("shop.shipped");
            o.Handle<Reserve, ShopDesk>("stock").Handle<Release, ShopDesk>("stock").Handle<Charge, ShopDesk>("payments")
                .Handle<Refund, ShopDesk>("payments").Handle<Ship, ShopDesk>("shipping");
            o.AddSaga<ShopOrderSaga>();
        },
        s => s.AddSingleton(records).AddSingleton<ShopDesk>());
}

/// <summary>The system's clock, moved forward by the jumps a test makes (timers keep real durations).</summary>
public sealed class JumpingClock : TimeProvider
{
    long _offsetTicks;

    /// <summary>Moves the clock <paramref name="by"/> forward.</summary>
    public void Jump(TimeSpan by) => Interlocked.Add(ref _offsetTicks, by.Ticks);

    /// <inheritdoc />
    public override DateTimeOffset GetUtcNow() => System.GetUtcNow() + TimeSpan.FromTicks(Interlocked.Read(ref _offsetTicks));
}

/// <summary>The database the shop's hosts share across a crash, with the clock they all read.</summary>
public abstract class ShopDatabase : IAsyncDisposable
{
    /// <summary>The clock of the store and of every host.</summary>
    public JumpingClock Clock { get; } = new();

    /// <summary>A store on the database for reading outcomes, outside any host.</summary>
    public abstract IMessageStore Observer { get; }

    /// <summary>Points a host's options at the database, behind <paramref name="plan"/> when there is one.</summary>
    public abstract void Use(ConvergeOptions options, CrashPlan? plan);

    /// <summary>The effects the participants kept.</summary>
    public abstract Task<IReadOnlyList<string>> EffectsAsync(ShopRecords records);

    /// <summary>Puts <paramref name="plan"/>, when there is one, in front of the store each host opens for itself.</summary>
    protected static void CrashOwnStores(ConvergeOptions options, CrashPlan? plan)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (plan is not null)
        {
            var open = options.StoreFactory!;
            options.StoreFactory = context => CrashingStore.Wrap(open(context), plan, ownsStore: true);
        }
    }

    /// <summary>The effects kept: the careless list, or the rows of the effects table in the order they were written.</summary>
    protected async Task<IReadOnlyList<string>> EffectsAsync(ShopRecords records, Func<Task<System.Data.Common.DbConnection>> open, string writtenOrder)
    {
        ArgumentNullException.ThrowIfNull(records);
        ArgumentNullException.ThrowIfNull(open);
        if (records.Careless)
        {
            return records.Kept(Observer);
        }

        await using var connection = await open();
        await using var read = connection.CreateCommand();
        read.CommandText = "SELECT item_key FROM conformance_effects ORDER BY " + writtenOrder;
        var effects = new List<string>();
        await using var reader = await read.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            effects.Add(reader.GetString(0));
        }

        return effects;
    }

    /// <inheritdoc />
    public abstract ValueTask DisposeAsync();
}

/// <summary>One in-memory store, shared by the hosts as processes share a database.</summary>
public sealed class InMemoryShopDatabase : ShopDatabase
{
    readonly InMemoryMessageStore _store;

    public InMemoryShopDatabase() => _store = new InMemoryMessageStore(Clock);

    public override IMessageStore Observer => _store;

    public override void Use(ConvergeOptions options, CrashPlan? plan)
    {
        options.UseInMemory(_store);
        if (plan is not null)
        {
            options.StoreFactory = _ => CrashingStore.Wrap(_store, plan, ownsStore: false);
        }
    }

    public override Task<IReadOnlyList<string>> EffectsAsync(ShopRecords records) => Task.FromResult(records.Kept(_store));

    public override ValueTask DisposeAsync() => _store.DisposeAsync();
}

/// <summary>A SQLite file; each host opens a store of its own on it, as a process would.</summary>
public sealed class SqliteShopDatabase : ShopDatabase
{
    readonly string _folder = Directory.CreateTempSubdirectory("converge-crash-").FullName;
    readonly SqliteMessageStore _observer;

    public SqliteShopDatabase()
    {
        _observer = new SqliteMessageStore(new SqliteStoreOptions { Path = Path }, Clock);
        _observer.MigrateAsync(CancellationToken.None).AsTask().GetAwaiter().GetResult();
        using var connection = _observer.OpenConnection();
        using var create = connection.CreateCommand();
        create.CommandText = Effects.CreateTable;
        create.ExecuteNonQuery();
    }

    string Path => System.IO.Path.Combine(_folder, "shop.db");

    public override IMessageStore Observer => _observer;

    public override void Use(ConvergeOptions options, CrashPlan? plan)
    {
        options.UseSqlite(Path);
        CrashOwnStores(options, plan);
    }

    public override Task<IReadOnlyList<string>> EffectsAsync(ShopRecords records) =>
        EffectsAsync(records, () => Task.FromResult<System.Data.Common.DbConnection>(_observer.OpenConnection()), "rowid");

    public override async ValueTask DisposeAsync()
    {
        await _observer.DisposeAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_folder, recursive: true);
    }
}

/// <summary>A schema of its own on the PostgreSQL server of <c>CONVERGE_TEST_POSTGRES</c>, dropped at the end.</summary>
public sealed class PostgreSqlShopDatabase : ShopDatabase
{
    readonly string _schema = "crash" + Guid.NewGuid().ToString("N")[..12];
    readonly PostgreSqlMessageStore _observer;

    PostgreSqlShopDatabase()
    {
        var server = Environment.GetEnvironmentVariable("CONVERGE_TEST_POSTGRES") is { Length: > 0 } value
            ? value
            : throw new InvalidOperationException("CONVERGE_TEST_POSTGRES is not set. Run ./test.sh, which starts PostgreSQL, or start it with scripts/services.sh start DIR and source DIR/services.env.");
        ConnectionString = new Npgsql.NpgsqlConnectionStringBuilder(server) { SearchPath = _schema }.ConnectionString;
        _observer = new PostgreSqlMessageStore(new PostgreSqlStoreOptions { ConnectionString = ConnectionString, Schema = _schema }, Clock);
    }

    string ConnectionString { get; }

    public static async Task<PostgreSqlShopDatabase> CreateAsync()
    {
        var database = new PostgreSqlShopDatabase();
        await database._observer.MigrateAsync(CancellationToken.None);
        await using var connection = await database._observer.OpenConnectionAsync(CancellationToken.None);
        await using var create = new Npgsql.NpgsqlCommand(Effects.CreateTable, connection);
        await create.ExecuteNonQueryAsync();
        return database;
    }

    public override IMessageStore Observer => _observer;

    public override void Use(ConvergeOptions options, CrashPlan? plan)
    {
        options.UsePostgreSql(ConnectionString, s => s.Schema = _schema);
        CrashOwnStores(options, plan);
    }

    public override Task<IReadOnlyList<string>> EffectsAsync(ShopRecords records) =>
        EffectsAsync(records, async () => await _observer.OpenConnectionAsync(CancellationToken.None), "ctid");

    public override async ValueTask DisposeAsync()
    {
        await using (var connection = await _observer.OpenConnectionAsync(CancellationToken.None))
        await using (var drop = new Npgsql.NpgsqlCommand($"DROP SCHEMA IF EXISTS {_schema} CASCADE", connection))
        {
            await drop.ExecuteNonQueryAsync();
        }

        await _observer.DisposeAsync();
    }
}

/// <summary>
/// PostgreSQL with every queue on the RabbitMQ broker of <c>CONVERGE_TEST_RABBITMQ</c>, under a prefix of its own: the
/// crash kills the host's store calls, and the dead host's broker channels close with it, handing back what it held.
/// </summary>
public sealed class RabbitMqShopDatabase(PostgreSqlShopDatabase postgres) : ShopDatabase
{
    readonly string _prefix = "crash" + Guid.NewGuid().ToString("N")[..12] + ".";
    readonly System.Collections.Concurrent.ConcurrentBag<Converge.RabbitMq.RabbitMqTransport> _transports = [];

    static Uri Broker => Environment.GetEnvironmentVariable("CONVERGE_TEST_RABBITMQ") is { Length: > 0 } value
        ? new Uri(value)
        : throw new InvalidOperationException("CONVERGE_TEST_RABBITMQ is not set. Run ./test.sh, which starts RabbitMQ, or start it with scripts/services.sh start DIR and source DIR/services.env.");

    public override IMessageStore Observer => postgres.Observer;

    public override void Use(ConvergeOptions options, CrashPlan? plan)
    {
        ArgumentNullException.ThrowIfNull(options);
        postgres.Use(options, plan);
        Converge.RabbitMq.RabbitMqConvergeExtensions.UseRabbitMq(options, Broker, t =>
        {
            t.QueuePrefix = _prefix;
            t.LogStream = null;

            // The dead host's relay lease runs out as soon as its queue leases do (the broker's clock is the wall clock).
            t.PublishTimeout = TimeSpan.FromMilliseconds(500);
            t.RelayLease = TimeSpan.FromSeconds(1);
            t.ReconnectDelay = TimeSpan.FromMilliseconds(50);
            t.MaxReconnectDelay = TimeSpan.FromMilliseconds(500);
        });
        var create = options.TransportFactory!;
        options.TransportFactory = context =>
        {
            var transport = (Converge.RabbitMq.RabbitMqTransport)create(context);
            _transports.Add(transport);
            return transport;
        };
    }

    public override Task<IReadOnlyList<string>> EffectsAsync(ShopRecords records) => postgres.EffectsAsync(records);

    public override async ValueTask DisposeAsync()
    {
        var factory = new RabbitMQ.Client.ConnectionFactory { Uri = Broker, AutomaticRecoveryEnabled = false, ClientProvidedName = "converge-crash-matrix" };
        await using (var connection = await factory.CreateConnectionAsync())
        {
            foreach (var queue in _transports.SelectMany(t => t.BrokerQueues).Distinct(StringComparer.Ordinal))
            {
                await using var channel = await connection.CreateChannelAsync();
                await channel.QueueDeleteAsync(queue, ifUnused: false, ifEmpty: false);
            }

            await using var exchanges = await connection.CreateChannelAsync();
            await exchanges.ExchangeDeleteAsync(_prefix + "converge.dead-letters", ifUnused: false);
        }

        await postgres.DisposeAsync();
    }
}
