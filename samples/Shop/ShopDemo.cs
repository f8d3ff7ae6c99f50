using System.Data.Common;
using System.Diagnostics;
using System.Globalization;
using Converge.Faults;
using Converge.Hosting;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Samples.Shop.Orders;
using Converge.Samples.Shop.Payments;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.Samples.Shop;

/// <summary>What the Shop demo runs.</summary>
public sealed class ShopDemoSettings
{
    public int Orders { get; init; } = 2000;

    /// <summary>The share of orders that meet an injected fault (fail, delay, duplicate or dropped reply) at some step.</summary>
    public double FailRate { get; init; } = 0.2;

    public ShopStyle Style { get; init; } = ShopStyle.Orchestrated;

    /// <summary>The database file (a new one); <c>null</c> for a temporary file. Ignored when <see cref="PostgreSql"/> is set.</summary>
    public string? DbPath { get; init; }

    /// <summary>A PostgreSQL connection string: the shop then runs in <see cref="Schema"/> of that database instead of a SQLite file.</summary>
    public string? PostgreSql { get; init; }

    /// <summary>A RabbitMQ broker that carries the message queues (the store stays the outbox and inbox); <c>null</c>: none.</summary>
    public Uri? RabbitMq { get; init; }

    /// <summary>With <see cref="PostgreSql"/>: the schema for Converge's tables and the shop's (it must not hold a shop yet).</summary>
    public string Schema { get; init; } = "converge_shop";

    /// <summary>
    /// The folder for the payment provider's ledger, a SQLite file every process of the run opens (the provider is
    /// an outside system, not part of the store). <c>null</c>: beside the SQLite file, or on PostgreSQL a folder
    /// under the temporary folder named after the server, database and schema.
    /// </summary>
    public string? SimulationFolder { get; init; }

    public int Seed { get; init; } = 42;

    /// <summary>Each saga step's timeout; short, so dropped replies resolve within the demo.</summary>
    public TimeSpan StepTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Run Customers, Payments and Shipping each in a process of its own (this process keeps Orders), all on the same
    /// database file, instead of all four in this process.
    /// </summary>
    public bool Processes { get; init; }

    /// <summary>With <see cref="Processes"/>: kill a worker process this many times (SIGKILL, at seeded random moments) and start it again.</summary>
    public int Kills { get; init; }

    /// <summary>
    /// The command line that starts a worker process (a program and its first arguments), to which the worker's
    /// <c>serve</c> arguments are appended. Default (<c>null</c>): the dotnet host running this sample's assembly. An
    /// application that carries the sample, such as the <c>converge</c> tool, passes itself, so that its workers load
    /// with its dependencies.
    /// </summary>
    public IReadOnlyList<string>? WorkerCommand { get; init; }

    /// <summary>
    /// Give up waiting for the orders to settle after this long (counted from the last order placed), report what is
    /// still in flight and fail. <c>null</c>: <see cref="DefaultDeadline"/> for <see cref="Orders"/>.
    /// </summary>
    public TimeSpan? Deadline { get; init; }

    /// <summary>The deadline when none is given: two minutes, and 50 ms more per order (2,000 orders: 220 s).</summary>
    public static TimeSpan DefaultDeadline(int orders) => TimeSpan.FromMinutes(2) + (TimeSpan.FromMilliseconds(50) * Math.Max(orders, 0));
}

/// <summary>
/// The demo's summary. The violations are counted from the databases and the provider's ledger. <c>Processes</c> is
/// the number of worker processes besides the demo's own (0 or 3); <c>Store</c> is <c>sqlite</c> or <c>postgresql</c>;
/// <c>DoubleCharges</c> counts orders the provider's ledger shows charged more than once, under whatever keys, and
/// <c>LostCharges</c> completed orders it shows no charge for (each is also a violation). <c>InFlight</c> counts the
/// orders not settled; when <c>DeadlineReached</c>, <c>SagasNotEnded</c> and <c>MessagesQueued</c> say what was still
/// under way. <c>DeadLetters</c> counts the store's dead letters.
/// </summary>
public sealed record ShopDemoReport(
    string Style,
    int Orders,
    int Completed,
    int Compensated,
    int Rejected,
    int InFlight,
    int Violations,
    IReadOnlyList<string> ViolationExamples,
    double Seconds,
    double SagasPerSecond,
    double FailRate,
    long FaultsInjected,
    long RepliesIgnored,
    long TimeoutsFired,
    string Db,
    int Kills,
    int Processes,
    string Store,
    int DoubleCharges,
    int LostCharges,
    long DeadLetters,
    int SagasNotEnded,
    long MessagesQueued,
    bool DeadlineReached,
    double DeadlineSeconds);

/// <summary>
/// What the check of a shop found: every rule broken, the orders the provider's ledger shows charged more than once
/// (counted per order, whatever the idempotency keys), and the completed orders it shows no charge for.
/// </summary>
public sealed record ShopCheck(IReadOnlyList<string> Violations, int DoubleCharges, int LostCharges);

/// <summary>
/// Places N orders in one process running all four services, with faults injected through a fault plan at every
/// step, waits until every order has settled, and checks the outcome against the databases and the payment
/// provider's own ledger.
/// </summary>
public static class ShopDemo
{
    public static async Task<ShopDemoReport> RunAsync(ShopDemoSettings settings, TextWriter progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(progress);
        var store = settings.PostgreSql is { } connectionString
            ? DemoStore.PostgreSql(connectionString, settings.Schema)
            : DemoStore.Sqlite(settings.DbPath ?? Path.Combine(Path.GetTempPath(), "converge-shop-" + Guid.NewGuid().ToString("N") + ".db"));
        store.RabbitMq = settings.RabbitMq;
        if (store.IsPostgreSql ? await store.TableExistsAsync("shop_orders", cancellationToken) : File.Exists(store.Path))
        {
            throw new ArgumentException(store.IsPostgreSql
                ? $"Schema {store.Schema} already holds a shop, and the demo needs a new one: pass another schema name, or drop it (DROP SCHEMA {store.Schema} CASCADE)."
                : $"{store.Path} already exists; the demo needs a new file.");
        }

        var simulation = settings.SimulationFolder ?? (store.IsPostgreSql ? store.DefaultSimulationFolder("shop") : null);
        var ledger = simulation is null ? ShopSetup.LedgerPath(store.Path!) : ShopSetup.LedgerIn(simulation);
        PrepareLedger(ledger, defaultFolder: settings.SimulationFolder is null);

        PlaceOrderSaga.StepTimeout = settings.StepTimeout;
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        ShopSetup.AddServices(builder.Services, ledger);
        builder.Services.AddConverge(o =>
        {
            store.Use(o);
            ConfigureDemo(o, settings.Processes ? ShopServices.Orders : ShopServices.All, settings.FailRate, settings.Seed);
        });
        using var host = builder.Build();
        await host.StartAsync(cancellationToken);
        var workers = new List<DemoWorker>();
        var log = Log(progress);
        try
        {
            var messages = host.Services.GetRequiredService<IMessageStore>();
            await ShopSetup.CreateTablesAsync(messages, cancellationToken);
            if (settings.Processes)
            {
                foreach (var service in Services)
                {
                    workers.Add(await StartWorkerAsync(store, ledger, service, settings, log, cancellationToken));
                }
            }

            var random = new Random(settings.Seed);
            var customers = Math.Max(10, settings.Orders / 20);
            await SeedCustomersAsync(messages, customers, random, cancellationToken);

            var started = Stopwatch.GetTimestamp();
            await PlaceOrdersAsync(host.Services, settings, customers, random, cancellationToken);
            log($"placed {settings.Orders} orders ({settings.Style.ToString().ToLowerInvariant()}); waiting for them to settle");
            for (var kill = 1; kill <= settings.Kills && workers.Count > 0; kill++)
            {
                // A crash at an arbitrary moment: whatever the worker had claimed is redelivered when its lease ends.
                await Task.Delay(TimeSpan.FromMilliseconds(random.Next(200, 1500)), cancellationToken);
                var index = random.Next(workers.Count);
                var worker = workers[index];
                var exitCode = await worker.KillAsync(cancellationToken);
                log($"kill {kill}: {worker.Name} (process {worker.Id}, exit code {exitCode}); starting it again");
                await worker.DisposeAsync();
                workers[index] = await StartWorkerAsync(store, ledger, worker.Name, settings, log, cancellationToken);
            }

            var deadline = settings.Deadline ?? ShopDemoSettings.DefaultDeadline(settings.Orders);
            await using var connection = await messages.Database().OpenReadConnectionAsync(cancellationToken);
            var wait = await WaitUntilSettledAsync(connection, messages, settings, deadline, log, cancellationToken);
            var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            if (wait.DeadlineReached)
            {
                log($"deadline: {deadline.TotalSeconds:0.#} s passed with {wait.Pending} orders not settled, {wait.SagasNotEnded} sagas not ended and {wait.Messages} messages queued; checking what there is");
            }

            var statuses = await CountAsync(connection, "SELECT status, count(*) FROM shop_orders GROUP BY status", cancellationToken);
            var check = await CheckAsync(connection, store.SagasTable, ledger, settings.Style, cancellationToken);
            var kinds = await CountAsync(connection, $"SELECT kind, count(*) FROM {store.SagaLogTable} GROUP BY kind", cancellationToken);
            var deadLetters = (await messages.Queries().GetStatusAsync(cancellationToken)).DeadLetters;
            return new ShopDemoReport(
                settings.Style == ShopStyle.Orchestrated ? "orchestrated" : "choreographed",
                settings.Orders,
                (int)statuses.GetValueOrDefault(settings.Style == ShopStyle.Orchestrated ? "completed" : "approved"),
                (int)statuses.GetValueOrDefault("compensated"),
                (int)statuses.GetValueOrDefault("rejected"),
                wait.Pending,
                check.Violations.Count,
                [.. check.Violations.Take(10)],
                Math.Round(seconds, 3),
                Math.Round(settings.Orders / seconds, 1),
                settings.FailRate,
                settings.Style == ShopStyle.Orchestrated
                    ? kinds.GetValueOrDefault(SagaLogKinds.FaultInjected)
                    : await ScalarAsync(connection, "SELECT count(*) FROM shop_orders WHERE reason LIKE 'injected%'", cancellationToken),
                kinds.GetValueOrDefault(SagaLogKinds.ReplyIgnored),
                kinds.GetValueOrDefault(SagaLogKinds.TimeoutFired),
                store.Describe(),
                settings.Processes ? settings.Kills : 0,
                workers.Count,
                store.Kind,
                check.DoubleCharges,
                check.LostCharges,
                deadLetters,
                wait.SagasNotEnded,
                wait.Messages,
                wait.DeadlineReached,
                deadline.TotalSeconds);
        }
        finally
        {
            foreach (var worker in workers)
            {
                await worker.DisposeAsync();
            }

            // A participant that does not return must not hold the demo past its summary: stopping is bounded too.
            using var stopping = new CancellationTokenSource(StopTimeout);
            try
            {
                await host.StopAsync(stopping.Token);
            }
            catch (OperationCanceledException)
            {
                log($"the demo's host did not stop within {StopTimeout.TotalSeconds:0} s; leaving it to the process's end");
            }
        }
    }

    /// <summary>How long the demo waits for its own host to stop after the summary is made.</summary>
    static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(30);

    /// <summary>
    /// A new run needs a new ledger: order ids repeat from run to run, and so would the provider's idempotency keys.
    /// A ledger left in the default folder belongs to a shop whose schema is gone (a new run checked that), so it is
    /// removed; one in a folder the user named is theirs to remove.
    /// </summary>
    static void PrepareLedger(string ledger, bool defaultFolder)
    {
        if (File.Exists(ledger))
        {
            if (!defaultFolder)
            {
                throw new ArgumentException($"{ledger} already holds a payment provider's ledger from another run; name an empty folder for the simulated services.");
            }

            foreach (var file in new[] { ledger, ledger + "-wal", ledger + "-shm" })
            {
                File.Delete(file);
            }
        }

        Directory.CreateDirectory(Path.GetDirectoryName(ledger)!);
    }

    /// <summary>Writes a line to <paramref name="progress"/>; worker processes write from threads of their own, so lines are serialised.</summary>
    static Action<string> Log(TextWriter progress)
    {
        var gate = new Lock();
        return line =>
        {
            lock (gate)
            {
                progress.WriteLine(line);
            }
        };
    }

    static readonly string[] Services = ["customers", "payments", "shipping"];

    /// <summary>The demo's Converge settings: quick retries and the fault plan; the same in every process.</summary>
    public static void ConfigureDemo(ConvergeOptions o, ShopServices services, double failRate, int seed)
    {
        ArgumentNullException.ThrowIfNull(o);
        ShopSetup.Configure(o, services);
        o.Retry.InitialDelay = TimeSpan.FromMilliseconds(50);
        o.PollInterval = TimeSpan.FromMilliseconds(50);
        o.LeaseDuration = TimeSpan.FromSeconds(3);
        AddFaults(o.Faults, new ShopDemoSettings { FailRate = failRate, Seed = seed });
    }

    /// <summary>Starts <c>serve STORE SERVICE</c> of this program in a process of its own and waits until it serves.</summary>
    static async Task<DemoWorker> StartWorkerAsync(DemoStore store, string ledger, string service, ShopDemoSettings settings, Action<string> log, CancellationToken cancellationToken)
    {
        var worker = await DemoWorker.StartAsync(
            service,
            DemoWorker.Command(settings.WorkerCommand, typeof(ShopDemo).Assembly),
            ["serve", .. store.WorkerArguments(), service, settings.FailRate.ToString(CultureInfo.InvariantCulture), settings.Seed.ToString(CultureInfo.InvariantCulture), "--ledger", ledger],
            store,
            log,
            cancellationToken);
        log($"{service}: process {worker.Id}");
        return worker;
    }

    /// <summary>Rules that together meet about <see cref="ShopDemoSettings.FailRate"/> of the orders, spread over every step and kind of fault.</summary>
    internal static void AddFaults(FaultPlanOptions faults, ShopDemoSettings settings)
    {
        faults.Enabled = settings.FailRate > 0;
        faults.Seed = settings.Seed;
        if (settings.Style == ShopStyle.Choreographed)
        {
            faults.Rules.Add(new FaultRule { Step = "reserve-credit", Action = FaultAction.Fail, Error = "injected: credit check unavailable", Probability = settings.FailRate / 2 });
            faults.Rules.Add(new FaultRule { Step = "reserve-credit", Action = FaultAction.DuplicateReply, Probability = settings.FailRate / 2 });
            return;
        }

        string[] steps = ["reserve-credit", "charge", "ship", "settle-credit"];
        var share = settings.FailRate / (steps.Length * 4);
        foreach (var step in steps)
        {
            // After the pivot a step is retried until it succeeds: fail it twice, then let it through.
            faults.Rules.Add(new FaultRule { Step = step, Action = FaultAction.Fail, Error = $"injected: {step} failed", Probability = share, Times = step == "settle-credit" ? 2 : null });
            faults.Rules.Add(new FaultRule { Step = step, Action = FaultAction.Delay, Delay = settings.StepTimeout * 1.5, Probability = share, Times = 1 });
            faults.Rules.Add(new FaultRule { Step = step, Action = FaultAction.DuplicateReply, Probability = share, Times = 1 });
            faults.Rules.Add(new FaultRule { Step = step, Action = FaultAction.DropReply, Probability = share, Times = 1 });
        }
    }

    static async Task SeedCustomersAsync(IMessageStore store, int customers, Random random, CancellationToken cancellationToken)
    {
        await using var transaction = await store.BeginAsync(cancellationToken);
        for (var i = 1; i <= customers; i++)
        {
            await transaction.ExecuteAsync(
                "INSERT INTO shop_customers (id, credit_limit) VALUES (@id, @limit)",
                [new("@id", CustomerId(i)), new("@limit", (long)random.Next(1500, 6000) * 100)],
                cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
    }

    static string CustomerId(int number) => "c-" + number.ToString(CultureInfo.InvariantCulture);

    static async Task PlaceOrdersAsync(IServiceProvider services, ShopDemoSettings settings, int customers, Random random, CancellationToken cancellationToken)
    {
        var bus = services.GetRequiredService<IMessageBus>();
        var sagas = services.GetRequiredService<ISagaClient>();
        const int perTransaction = 100;
        for (var first = 0; first < settings.Orders; first += perTransaction)
        {
            // The order row and what announces it commit together (the outbox).
            await using var transaction = await bus.BeginTransactionAsync(cancellationToken);
            for (var i = first; i < Math.Min(settings.Orders, first + perTransaction); i++)
            {
                var orderId = "o-" + i.ToString("D6", CultureInfo.InvariantCulture);
                var customer = CustomerId(random.Next(1, customers + 1));
                var amount = random.Next(20, 400) + (random.Next(0, 100) / 100m);
                await transaction.ExecuteAsync(
                    "INSERT INTO shop_orders (id, customer_id, amount, status, style) VALUES (@id, @customer, @amount, 'pending', @style)",
                    [new("@id", orderId), new("@customer", customer), new("@amount", Customers.CreditHandlers.ToCents(amount)), new("@style", settings.Style.ToString())],
                    cancellationToken);
                if (settings.Style == ShopStyle.Orchestrated)
                {
                    await sagas.StartAsync(PlaceOrderSaga.SagaName, orderId, new PlaceOrderData { OrderId = orderId, CustomerId = customer, Amount = amount }, transaction.Transaction, cancellationToken);
                }
                else
                {
                    await bus.PublishAsync(ShopQueues.Stream(orderId), new OrderCreated(orderId, customer, amount), transaction.Transaction, new PublishOptions { CorrelationId = orderId }, cancellationToken);
                }
            }

            await transaction.CommitAsync(cancellationToken);
        }
    }

    /// <summary>Where the run stood when it settled or its deadline passed.</summary>
    readonly record struct Settling(int Pending, int SagasNotEnded, long Messages, bool DeadlineReached);

    /// <summary>
    /// Waits until no order is pending, no saga is under way and no message is left to handle, or until
    /// <paramref name="deadline"/> has passed; returns what was still in flight then.
    /// </summary>
    static async Task<Settling> WaitUntilSettledAsync(DbConnection connection, IMessageStore store, ShopDemoSettings settings, TimeSpan deadline, Action<string> log, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        var reported = Stopwatch.GetTimestamp();
        while (true)
        {
            var pending = (int)await ScalarAsync(connection, "SELECT count(*) FROM shop_orders WHERE status = 'pending'", cancellationToken);
            var status = await store.Queries().GetStatusAsync(cancellationToken);
            var messages = status.Queues.Sum(q => q.Ready + q.Scheduled + q.InFlight) + status.ConsumerGroups.Sum(g => g.Lag);
            var sagas = (int)(await store.SagaQueries().CountSagasAsync(cancellationToken)).Where(c => c.State is not (SagaState.Completed or SagaState.Compensated)).Sum(c => c.Count);
            if (pending == 0 && messages == 0 && sagas == 0)
            {
                return new Settling(0, 0, 0, DeadlineReached: false);
            }

            if (Stopwatch.GetElapsedTime(started) > deadline)
            {
                return new Settling(pending, sagas, messages, DeadlineReached: true);
            }

            if (Stopwatch.GetElapsedTime(reported) > TimeSpan.FromSeconds(1))
            {
                reported = Stopwatch.GetTimestamp();
                log($"  {settings.Orders - pending}/{settings.Orders} orders settled, {messages} messages to go");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(50), cancellationToken);
        }
    }

    /// <summary>
    /// Checks the shop on the SQLite file <paramref name="databasePath"/> against the provider's ledger beside it; see
    /// <see cref="CheckAsync(DbConnection, string, string, ShopStyle, CancellationToken)"/>.
    /// </summary>
    public static async Task<ShopCheck> CheckAsync(string databasePath, ShopStyle style, CancellationToken cancellationToken)
    {
        var store = DemoStore.Sqlite(databasePath);
        await using var connection = await store.OpenConnectionAsync(cancellationToken);
        return await CheckAsync(connection, store.SagasTable, ShopSetup.LedgerPath(store.Path!), style, cancellationToken);
    }

    /// <summary>
    /// Every rule the outcome must satisfy, checked against the services' tables on <paramref name="connection"/>
    /// (SQLite or PostgreSQL; <paramref name="sagasTable"/> names Converge's saga table there) and the provider's
    /// ledger at <paramref name="ledgerPath"/>: every order settled and its saga ended the same way; a completed order
    /// charged once for its amount (net of refunds), shipped and its credit settled; a compensated or rejected order
    /// with no net charge, no shipment and no credit held; credit reserved per customer equal to the reservations and
    /// the open orders, within the limit. Charges are counted per order from the ledger, whatever keys they came
    /// with: two charges of one order are a double charge even when the keys differ. Run it when nothing works on
    /// the shop.
    /// </summary>
    public static async Task<ShopCheck> CheckAsync(DbConnection connection, string sagasTable, string ledgerPath, ShopStyle style, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        var ledger = PaymentProvider.ReadLedger(ledgerPath);
        var violations = new List<string>();
        var orders = new HashSet<string>(StringComparer.Ordinal);
        var lost = 0;
        await using (var command = connection.CreateCommand())
        {
            command.CommandText = $"""
                SELECT o.id, o.amount, o.status, r.status, s.order_id IS NOT NULL, g.state
                FROM shop_orders o
                LEFT JOIN shop_reservations r ON r.order_id = o.id
                LEFT JOIN shop_shipments s ON s.order_id = o.id
                LEFT JOIN {sagasTable} g ON g.transaction_id = o.id
                """;
            await using var reader = await command.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                var id = reader.GetString(0);
                var amount = reader.GetInt64(1);
                var status = reader.GetString(2);
                var reservation = reader.IsDBNull(3) ? null : reader.GetString(3);
                var shipped = reader.GetBoolean(4);
                var saga = reader.IsDBNull(5) ? null : reader.GetString(5);
                orders.Add(id);
                var (charges, net) = ledger.GetValueOrDefault(id);
                switch (status, style)
                {
                    case ("pending", _):
                        violations.Add($"{id}: never settled (saga {saga ?? "none"})");
                        break;
                    case ("completed", ShopStyle.Orchestrated):
                        lost += charges == 0 ? 1 : 0;
                        if (charges != 1 || net != amount) violations.Add($"{id}: completed but charged {charges} time(s), net {net} of {amount}");
                        if (!shipped) violations.Add($"{id}: completed but not shipped");
                        if (reservation != "settled") violations.Add($"{id}: completed but its credit is {reservation ?? "missing"}, not settled");
                        if (saga != "completed") violations.Add($"{id}: completed but its saga is {saga}");
                        break;
                    case ("compensated" or "rejected", ShopStyle.Orchestrated):
                        if (net != 0) violations.Add($"{id}: {status} but the provider holds a net charge of {net}");
                        if (shipped) violations.Add($"{id}: {status} but shipped");
                        if (reservation is "reserved" or "settled") violations.Add($"{id}: {status} but still holds credit ({reservation})");
                        if (saga != "compensated") violations.Add($"{id}: {status} but its saga is {saga}");
                        break;
                    case ("approved", ShopStyle.Choreographed):
                        if (reservation != "reserved") violations.Add($"{id}: approved but its credit is {reservation ?? "missing"}");
                        break;
                    case ("rejected", ShopStyle.Choreographed):
                        if (reservation is "reserved" or "settled") violations.Add($"{id}: rejected but holds credit");
                        break;
                    default:
                        violations.Add($"{id}: unexpected status {status} in the {style} flow");
                        break;
                }
            }
        }

        // Credit reserved per customer equals the open approved orders' amounts, and the running total agrees.
        await using (var command = connection.CreateCommand())
        {
            command.CommandText = """
                SELECT c.id, c.reserved,
                       (SELECT coalesce(sum(amount), 0) FROM shop_reservations r WHERE r.customer_id = c.id AND r.status = 'reserved'),
                       (SELECT coalesce(sum(amount), 0) FROM shop_orders o WHERE o.customer_id = c.id AND o.status IN ('approved', 'pending')),
                       c.credit_limit
                FROM shop_customers c
                """;
            await using var reader = await command.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                // Sums of BIGINT come back as numeric on PostgreSQL: read every figure through one conversion.
                var (customer, reserved, held, open, limit) = (reader.GetString(0), Int64(reader, 1), Int64(reader, 2), Int64(reader, 3), Int64(reader, 4));
                if (reserved != held || held != open)
                {
                    violations.Add($"{customer}: credit reserved {reserved}, reservations held {held}, open approved orders {open}");
                }

                if (reserved > limit)
                {
                    violations.Add($"{customer}: credit reserved {reserved} over the limit {limit}");
                }
            }
        }

        foreach (var (order, (charges, net)) in ledger.OrderBy(l => l.Key, StringComparer.Ordinal))
        {
            if (charges > 1)
            {
                violations.Add($"{order}: the provider's ledger shows {charges} charges");
            }

            if (!orders.Contains(order) && (charges > 0 || net != 0))
            {
                violations.Add($"{order}: the provider's ledger shows {charges} charge(s), net {net}, but the shop has no such order");
            }
        }

        return new ShopCheck(violations, ledger.Values.Count(c => c.Charges > 1), lost);
    }

    static async Task<Dictionary<string, long>> CountAsync(DbConnection connection, string sql, CancellationToken cancellationToken)
    {
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            counts[reader.GetString(0)] = Int64(reader, 1);
        }

        return counts;
    }

    static async Task<long> ScalarAsync(DbConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        return Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), CultureInfo.InvariantCulture);
    }

    static long Int64(DbDataReader reader, int ordinal) => Convert.ToInt64(reader.GetValue(ordinal), CultureInfo.InvariantCulture);
}
