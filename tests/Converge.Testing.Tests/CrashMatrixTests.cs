using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing.Conformance;
using Converge.Testing.Faults;
using Converge.PostgreSql;
using Converge.Sqlite;
using Converge.Testing.InMemory;
using Converge.Testing.Simulation.Scenarios;
using Converge.Verification;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Converge.Testing.Tests;

/// <summary>
/// The crash-point matrix on the in-memory store: the shop's orders run on a host that dies at its Nth store
/// operation, for every N until a run finishes without dying; a new host then starts on the same store and runs to
/// quiescence, and the orders are judged from the participants' own records.
/// </summary>
public sealed class CrashMatrixTests(ITestOutputHelper output)
{
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
        var result = await RunMatrixAsync("postgresql", careless: false, every: CrashMatrix.Every(10));

        Assert.True(result.Points.Count >= 20, $"only {result.Points.Count} crash points");
        Assert.Empty(result.Violations);
    }

    [Fact]
    public async Task The_shop_survives_a_crash_at_every_thirtieth_store_operation_on_postgresql_with_rabbitmq()
    {
        var result = await RunMatrixAsync("postgresql+rabbitmq", careless: false, every: CrashMatrix.Every(30));

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
                return await RunWithCrashAsync(plan, db, new ShopScenario(careless ? PlantedBug.EffectOutsideTransaction : PlantedBug.None));
            },
            every);
        CrashMatrix.Report(output, database, result);
        return result;
    }

    [Fact]
    public void The_judge_names_a_lost_order_a_repeated_effect_and_a_compensation_out_of_order()
    {
        string[] completed = ["o-2", "o-4", "o-5", "o-7"];
        var done = completed.SelectMany(o => (string[])[o + ":reserve", o + ":charge", o + ":ship"]);
        Assert.Equal(
            [
                "o-1: effects reserve, reserve, charge, ship (saga Completed): neither every step nor the steps done then undone in reverse",
                "o-3: saga missing",
                "broke-6: effects reserve, release, refund (saga Compensated): neither every step nor the steps done then undone in reverse",
                "broke-8: every step done, but the saga is Running",
                "broke-8: saga Running, expected Compensated",
            ],
            ShopScenario.Judge(
                new Dictionary<string, SagaState> { ["o-1"] = SagaState.Completed, ["o-2"] = SagaState.Completed, ["o-4"] = SagaState.Completed, ["o-5"] = SagaState.Completed, ["o-7"] = SagaState.Completed, ["broke-6"] = SagaState.Compensated, ["broke-8"] = SagaState.Running },
                ["o-1:reserve", "o-1:reserve", "o-1:charge", "o-1:ship", .. done, "broke-6:reserve", "broke-6:release", "broke-6:refund", "broke-8:reserve", "broke-8:charge", "broke-8:ship"]));
    }

    /// <summary>Runs the orders on a host that dies as <paramref name="plan"/> says, then on a new host to the end; what is wrong.</summary>
    static async Task<List<string>> RunWithCrashAsync(CrashPlan plan, ShopDatabase database, ShopScenario scenario)
    {
        await CrashMatrix.CrashThenRecoverAsync(
            plan,
            database.Clock,
            crash => StartAsync(database, crash, scenario),

            // An order the dead host had not placed is placed again, as its client would retry (placing is idempotent).
            host => scenario.PlaceAsync(host.Services, host.Store, CancellationToken.None),
            () => SettledAsync(database.Observer, scenario));

        var states = new Dictionary<string, SagaState>();
        foreach (var order in ShopScenario.Orders)
        {
            if (await database.Observer.SagaQueries().GetSagaAsync(order, CancellationToken.None) is { } saga)
            {
                states[order] = saga.State;
            }
        }

        var effects = scenario.Planted == PlantedBug.EffectOutsideTransaction ? scenario.CarelessEffects : await database.EffectsAsync();
        var violations = ShopScenario.Judge(states, effects);
        violations.AddRange(await CrashMatrix.LeftoversAsync(database.Observer));
        return violations;
    }

    static async Task<bool> SettledAsync(IMessageStore store, ShopScenario scenario) =>
        await scenario.SettledAsync(store, CancellationToken.None) && await CrashMatrix.QueuesEmptyAsync(store);

    static Task<ConvergeTestHost> StartAsync(ShopDatabase database, CrashPlan? plan, ShopScenario scenario) => ConvergeTestHost.StartAsync(
        o =>
        {
            scenario.Configure(o);
            o.TimeProvider = database.Clock;
            database.Use(o, plan);
        },
        scenario.ConfigureServices);
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

    /// <summary>The effects the participants kept in their handlers' transactions, in the order they were committed.</summary>
    public abstract Task<IReadOnlyList<string>> EffectsAsync();

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

    /// <summary>The rows of the effects table, in the order they were written.</summary>
    protected static async Task<IReadOnlyList<string>> EffectsAsync(Func<Task<System.Data.Common.DbConnection>> open, string writtenOrder)
    {
        ArgumentNullException.ThrowIfNull(open);
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

    public override Task<IReadOnlyList<string>> EffectsAsync() => Task.FromResult(Effects.CommittedKeys(_store));

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

    public override Task<IReadOnlyList<string>> EffectsAsync() =>
        EffectsAsync(() => Task.FromResult<System.Data.Common.DbConnection>(_observer.OpenConnection()), "rowid");

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
        // Rows numbered as they are written: a row's place on disk (ctid) is no order, as a page pruned of the rows of
        // rolled-back transactions gives their slots to later ones.
        await using var create = new Npgsql.NpgsqlCommand(Effects.CreateTable + "; ALTER TABLE conformance_effects ADD COLUMN written BIGSERIAL", connection);
        await create.ExecuteNonQueryAsync();
        return database;
    }

    public override IMessageStore Observer => _observer;

    public override void Use(ConvergeOptions options, CrashPlan? plan)
    {
        options.UsePostgreSql(ConnectionString, s => s.Schema = _schema);
        CrashOwnStores(options, plan);
    }

    public override Task<IReadOnlyList<string>> EffectsAsync() =>
        EffectsAsync(async () => await _observer.OpenConnectionAsync(CancellationToken.None), "written");

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

    public override Task<IReadOnlyList<string>> EffectsAsync() => postgres.EffectsAsync();

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
