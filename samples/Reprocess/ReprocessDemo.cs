using System.Data.Common;
using System.Diagnostics;
using System.Globalization;
using Converge.Projections;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.Samples.Reprocess;

/// <summary>What the reprocess demo runs.</summary>
public sealed class ReprocessDemoSettings
{
    /// <summary>Orders on the log before the fixed version is registered. Default 20,000.</summary>
    public int Orders { get; init; } = 20_000;

    public int Seed { get; init; } = 42;

    /// <summary>The clock of every pause and wait; the caller's composition root chooses it.</summary>
    public required TimeProvider Clock { get; init; }

    /// <summary>The database file (a new one); <c>null</c> for a temporary file. Ignored when <see cref="PostgreSql"/> is set.</summary>
    public string? DbPath { get; init; }

    /// <summary>A PostgreSQL connection string: the demo then runs in <see cref="Schema"/> of that database.</summary>
    public string? PostgreSql { get; init; }

    /// <summary>With <see cref="PostgreSql"/>: the schema (it must not hold a reprocess run yet).</summary>
    public string Schema { get; init; } = "converge_reprocess";

    /// <summary>Readers querying the live view all along. Default 4.</summary>
    public int Readers { get; init; } = 4;

    /// <summary>A reader's pause between two reads. Default 2 ms.</summary>
    public TimeSpan ReadPause { get; init; } = TimeSpan.FromMilliseconds(2);

    /// <summary>The writer's pause between two events (one transaction each). Default 2 ms.</summary>
    public TimeSpan WritePause { get; init; } = TimeSpan.FromMilliseconds(2);

    /// <summary>How long orders flow and readers read version 1 before version 2 is registered. Default 0.5 s.</summary>
    public TimeSpan BeforeRebuild { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>How long orders flow and readers read after the switch. Default 1 s.</summary>
    public TimeSpan AfterSwitch { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>How long to wait for version 2 to be built, and for the views to catch up at the end. Default 120 s.</summary>
    public TimeSpan Deadline { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>How long to keep asking for the switch while version 2 stands behind version 1. Default 30 s.</summary>
    public TimeSpan SwitchWait { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Customers the orders are spread over: one per ten orders, at least 10 and at most 20,000.</summary>
    public int Customers => Math.Clamp(Orders / 10, 10, 20_000);
}

/// <summary>
/// The reprocess demo's summary. <c>RebuildEventsPerSecond</c> is version 2's build rate as the projection catalogue
/// gives it (positions covered from its start to its first catch-up); <c>RebuildSeconds</c> the wall-clock time from
/// registering it to seeing it built. <c>CompareOnlyInV1</c> and <c>CompareOnlyInV2</c> count the rows of the totals
/// table only one version held when compared (orders kept flowing, so a few may be rows one version had not reached yet);
/// <c>CompareDifferingCustomers</c> the customers they name.
/// </summary>
public sealed record ReprocessDemoReport(
    int OrdersSeeded,
    int OrdersDuringRun,
    int Customers,
    long EventsSeeded,
    long EventsDuringRun,
    long Events,
    double RebuildEventsPerSecond,
    double RebuildSeconds,
    long RebuildPosition,
    long EventsAppendedDuringRebuild,
    long CompareRowsV1,
    long CompareRowsV2,
    int CompareOnlyInV1,
    int CompareOnlyInV2,
    int CompareDifferingCustomers,
    IReadOnlyList<string> CompareExamples,
    bool Switched,
    int SwitchAttempts,
    int? LiveVersion,
    long Reads,
    long ReadsOfV1,
    long ReadsOfV2,
    int FailedReads,
    int ReadsBack,
    int Mismatches,
    int CustomersWithRefunds,
    double Seconds,
    string Store,
    string Db,
    bool Passed,
    IReadOnlyList<string> Problems);

/// <summary>
/// Reprocessing a projection while the shop runs: revenue per customer, version 1 with a bug (refunds ignored), live
/// and read all along; version 2, fixed, registered beside it while orders keep flowing, rebuilt from position 0,
/// compared with version 1, and switched live; then the live view is checked against totals computed from the events,
/// and every read against failures and reads that went back.
/// </summary>
public static class ReprocessDemo
{
    /// <summary>Events appended per transaction while seeding.</summary>
    const int SeedBatch = 500;

    public static async Task<ReprocessDemoReport> RunAsync(ReprocessDemoSettings settings, TextWriter progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(progress);
        if (settings.Orders < 1 || settings.Readers < 1)
        {
            throw new ArgumentException($"The demo needs at least one order and one reader (got {settings.Orders} and {settings.Readers}).", nameof(settings));
        }

        var clock = settings.Clock;
        var store = settings.PostgreSql is { } connectionString
            ? DemoStore.PostgreSql(connectionString, settings.Schema)
            : DemoStore.Sqlite(settings.DbPath ?? Path.Combine(Path.GetTempPath(), "converge-reprocess-" + Guid.NewGuid().ToString("N") + ".db"));
        if (store.IsPostgreSql ? await store.TableExistsAsync("projections", cancellationToken) : File.Exists(store.Path))
        {
            throw new ArgumentException(store.IsPostgreSql
                ? $"Schema {store.Schema} already holds a Converge store, and the demo needs a new one: pass another schema name, or drop it (DROP SCHEMA {store.Schema} CASCADE)."
                : $"{store.Path} already exists; the demo needs a new file.");
        }

        var started = clock.GetTimestamp();
        var problems = new List<string>();
        using var first = Build(store, clock, o => o.AddProjection<RevenuePerCustomerV1>(RevenueProjection.Name, 1));
        await first.StartAsync(cancellationToken);
        IHost? second = null;
        try
        {
            var bus = first.Services.GetRequiredService<IMessageBus>();
            var messages = first.Services.GetRequiredService<IMessageStore>();
            var catalog = first.Services.GetRequiredService<ProjectionCatalog>();
            var flow = new OrderFlow(settings.Seed, settings.Customers);

            // Version 1 is live from the start (the first version built goes live by itself) and follows the orders.
            await progress.WriteLineAsync($"reprocess: seeding {settings.Orders:N0} orders of {settings.Customers:N0} customers on {store.Describe()}; version 1 (refunds ignored) is live");
            long seeded = 0;
            while (flow.Placed < settings.Orders)
            {
                await using var transaction = await bus.BeginTransactionAsync(cancellationToken);
                for (var i = 0; i < SeedBatch && flow.Placed < settings.Orders; i++)
                {
                    var (stream, @event) = flow.Next();
                    await bus.PublishAsync(stream, @event, transaction.Transaction, cancellationToken: cancellationToken);
                    seeded++;
                }

                await transaction.CommitAsync(cancellationToken);
            }

            await WaitAsync(clock, settings.Deadline, "version 1 to catch up with the seeded orders", async () =>
                await catalog.GetLiveVersionAsync(RevenueProjection.Name, cancellationToken) == 1 && await PositionAsync(catalog, 1, cancellationToken) == await messages.GetLogHeadAsync(cancellationToken), cancellationToken);

            // From here on, orders keep flowing and readers keep reading the live view.
            using var stopWriting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            using var stopReading = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var writer = new Writer(bus, flow, clock, settings.WritePause);
            var writing = writer.RunAsync(stopWriting.Token);
            var readers = new Readers(messages, catalog, clock, settings.ReadPause);
            var reading = Enumerable.Range(1, settings.Readers).Select(r => readers.RunAsync(r, stopReading.Token)).ToList();
            await Task.Delay(settings.BeforeRebuild, clock, cancellationToken);

            // The fixed version, registered beside the live one by a process of its own: built from position 0.
            var registeredAt = await messages.GetLogHeadAsync(cancellationToken);
            await progress.WriteLineAsync($"reprocess: registering version 2 (refunds subtracted) at position {registeredAt:N0}; orders keep flowing, {settings.Readers} readers keep reading");
            var rebuild = Stopwatch.StartNew();
            second = Build(store, clock, o => o.AddProjection<RevenuePerCustomerV2>(RevenueProjection.Name, 2));
            await second.StartAsync(cancellationToken);
            ProjectionVersionStatus? built = null;
            await WaitAsync(clock, settings.Deadline, "version 2 to be built", async () =>
                (built = (await catalog.ListAsync(cancellationToken)).FirstOrDefault(v => v.Version == 2)) is { State: ProjectionState.Built }, cancellationToken);
            var rebuildSeconds = rebuild.Elapsed.TotalSeconds;
            await progress.WriteLineAsync($"reprocess: version 2 built at position {built!.BuiltPosition:N0} in {rebuildSeconds:0.00} s ({built.EventsPerSecond:N0} events/s by the catalogue); comparing");

            var comparison = await catalog.CompareAsync(RevenueProjection.Name, 1, 2, settings.Customers + 100, cancellationToken);
            var totals = comparison.Tables.Single(t => t.Table == "totals");
            var differing = totals.OnlyInFrom.Concat(totals.OnlyInTo).Select(CustomerOf).Distinct(StringComparer.Ordinal).Count();

            // As an operator would with `converge projections switch --wait`: while orders keep coming, both versions
            // follow the log, and a switch is refused whenever version 2 happens to stand a few events behind version 1
            // at that moment. How long that lasts depends on how busy the machine is, so the budget is time, not tries.
            var attempts = 0;
            var switching = clock.GetTimestamp();
            ProjectionSwitch switched;
            do
            {
                attempts++;
                switched = await catalog.SwitchAsync(RevenueProjection.Name, 2, cancellationToken);
                if (!switched.Switched)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(50), clock, cancellationToken);
                }
            }
            while (!switched.Switched && clock.GetElapsedTime(switching) < settings.SwitchWait);
            await progress.WriteLineAsync(switched.Switched
                ? $"reprocess: switched to version 2 ({attempts} attempt(s)); orders keep flowing for {settings.AfterSwitch.TotalSeconds:0.#} s more"
                : $"reprocess: the switch was refused {attempts} times in {settings.SwitchWait.TotalSeconds:0} s: {switched.Reason}");
            if (!switched.Switched)
            {
                problems.Add($"the switch to version 2 was refused {attempts} times in {settings.SwitchWait.TotalSeconds:0} s: {switched.Reason}");
            }

            await Task.Delay(settings.AfterSwitch, clock, cancellationToken);
            await stopWriting.CancelAsync();
            await writing;
            var head = await messages.GetLogHeadAsync(cancellationToken);
            var live = await catalog.GetLiveVersionAsync(RevenueProjection.Name, cancellationToken);
            await WaitAsync(clock, settings.Deadline, "the live version to catch up with the last orders", async () =>
                await PositionAsync(catalog, live ?? 1, cancellationToken) == head, cancellationToken);
            await stopReading.CancelAsync();
            await Task.WhenAll(reading);

            var rows = await ReadLiveAsync(messages, catalog, cancellationToken);
            var expected = ReprocessVerification.Expected(await ReadEventsAsync(messages, head, cancellationToken));
            var reads = readers.Records;
            var verification = ReprocessVerification.Verify(expected, rows, reads);
            problems.AddRange(verification.Problems);
            if (writer.Error is { } error)
            {
                problems.Add($"the writer failed: {error}");
            }

            if (live != 2)
            {
                problems.Add($"version {live?.ToString(CultureInfo.InvariantCulture) ?? "none"} is live at the end, not version 2");
            }

            var refunded = await CustomersWithRefundsAsync(messages, head, cancellationToken);
            if (refunded > 0 && differing == 0)
            {
                problems.Add($"the comparison showed no differing customer, though {refunded} customers had refunds: version 1's bug should show");
            }

            if (!reads.Any(r => r.Error is null && r.Version == 2))
            {
                problems.Add("no read was served by version 2 after the switch");
            }

            return new ReprocessDemoReport(
                settings.Orders,
                flow.Placed - settings.Orders,
                settings.Customers,
                seeded,
                writer.Events,
                head,
                Math.Round(built.EventsPerSecond),
                Math.Round(rebuildSeconds, 2),
                built.BuiltPosition ?? 0,
                Math.Max(0, (built.BuiltPosition ?? 0) - registeredAt),
                totals.FromRows ?? 0,
                totals.ToRows ?? 0,
                totals.OnlyInFrom.Count,
                totals.OnlyInTo.Count,
                differing,
                [.. Examples(totals)],
                switched.Switched,
                attempts,
                live,
                reads.Count,
                reads.Count(r => r.Error is null && r.Version == 1),
                reads.Count(r => r.Error is null && r.Version == 2),
                verification.FailedReads,
                verification.ReadsBack,
                verification.Mismatches,
                refunded,
                Math.Round(clock.GetElapsedTime(started).TotalSeconds, 2),
                store.Kind,
                store.Describe(),
                problems.Count == 0,
                problems);
        }
        finally
        {
            if (second is not null)
            {
                await second.StopAsync(CancellationToken.None);
                second.Dispose();
            }

            await first.StopAsync(CancellationToken.None);
        }
    }

    static IHost Build(DemoStore store, TimeProvider clock, Action<ConvergeOptions> projection)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddConverge(o =>
        {
            store.Use(o);
            o.TimeProvider = clock;
            o.PollInterval = TimeSpan.FromMilliseconds(50);
            OrderEvents.Register(o);
            projection(o);
        });
        return builder.Build();
    }

    static async Task<long> PositionAsync(ProjectionCatalog catalog, int version, CancellationToken cancellationToken) =>
        (await catalog.ListAsync(cancellationToken)).FirstOrDefault(v => v.Name == RevenueProjection.Name && v.Version == version)?.Position ?? -1;

    static async Task WaitAsync(TimeProvider clock, TimeSpan deadline, string what, Func<Task<bool>> condition, CancellationToken cancellationToken)
    {
        var start = clock.GetTimestamp();
        while (!await condition())
        {
            if (clock.GetElapsedTime(start) > deadline)
            {
                throw new TimeoutException($"Waited {deadline.TotalSeconds:0} s for {what}.");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), clock, cancellationToken);
        }
    }

    /// <summary>The customer a compared row names (<c>customer_id=c-00042, orders=3, ...</c>).</summary>
    static string CustomerOf(string row) => row.Split(", ", 2)[0];

    /// <summary>A few customers as the two versions hold them, side by side.</summary>
    static IEnumerable<string> Examples(TableComparison totals)
    {
        var newer = totals.OnlyInTo.ToDictionary(CustomerOf, r => r, StringComparer.Ordinal);
        return totals.OnlyInFrom
            .Where(r => newer.ContainsKey(CustomerOf(r)))
            .Take(3)
            .Select(r => $"v1 {r} | v2 {newer[CustomerOf(r)]}");
    }

    static async Task<List<CustomerTotal>> ReadLiveAsync(IMessageStore messages, ProjectionCatalog catalog, CancellationToken cancellationToken)
    {
        await using var connection = await messages.Database().OpenReadConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = $"SELECT customer_id, orders, revenue_cents FROM {catalog.View(RevenueProjection.Name, "totals")}";
        var rows = new List<CustomerTotal>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            rows.Add(new CustomerTotal(reader.GetString(0), Convert.ToInt64(reader.GetValue(1), CultureInfo.InvariantCulture), Convert.ToInt64(reader.GetValue(2), CultureInfo.InvariantCulture)));
        }

        return rows;
    }

    /// <summary>Every event on the log up to <paramref name="head"/>: its type and body, as stored.</summary>
    static async Task<List<(string Type, ReadOnlyMemory<byte> Body)>> ReadEventsAsync(IMessageStore messages, long head, CancellationToken cancellationToken)
    {
        var events = new List<(string, ReadOnlyMemory<byte>)>();
        var after = 0L;
        while (after < head)
        {
            var page = await messages.ReadLogAsync(after, 5_000, cancellationToken);
            if (page.Count == 0)
            {
                break;
            }

            events.AddRange(page.Where(e => e.Position <= head).Select(e => (e.Envelope.MessageType, e.Envelope.Body)));
            after = page[^1].Position;
        }

        return events;
    }

    static async Task<int> CustomersWithRefundsAsync(IMessageStore messages, long head, CancellationToken cancellationToken)
    {
        var customers = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (type, body) in await ReadEventsAsync(messages, head, cancellationToken))
        {
            if (type.StartsWith(OrderEvents.Refunded + "@", StringComparison.Ordinal))
            {
                using var json = System.Text.Json.JsonDocument.Parse(body);
                customers.Add(json.RootElement.GetProperty("customerId").GetString()!);
            }
        }

        return customers.Count;
    }

    /// <summary>Appends the order flow's events one per transaction, with a pause between them, until stopped.</summary>
    sealed class Writer(IMessageBus bus, OrderFlow flow, TimeProvider clock, TimeSpan pause)
    {
        long _events;

        public long Events => Interlocked.Read(ref _events);

        public string? Error { get; private set; }

        public async Task RunAsync(CancellationToken stopping)
        {
            try
            {
                while (!stopping.IsCancellationRequested)
                {
                    var (stream, @event) = flow.Next();
                    await bus.PublishAsync(stream, @event, cancellationToken: CancellationToken.None);
                    Interlocked.Increment(ref _events);
                    await Task.Delay(pause, clock, stopping);
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
            }
            catch (Exception exception)
            {
                Error = $"{exception.GetType().Name}: {exception.Message}";
            }
        }
    }

    /// <summary>
    /// Readers of the live view, each reading the position, the serving version and the orders counted, over and over.
    /// A read that began after another ended must not see less: the highest position and order count any finished read
    /// saw are each read's floor.
    /// </summary>
    sealed class Readers(IMessageStore messages, ProjectionCatalog catalog, TimeProvider clock, TimeSpan pause)
    {
        readonly Lock _gate = new();
        readonly List<ReadRecord> _records = [];
        long _position;
        long _orders;

        public IReadOnlyList<ReadRecord> Records
        {
            get
            {
                lock (_gate)
                {
                    return [.. _records];
                }
            }
        }

        public async Task RunAsync(int reader, CancellationToken stopping)
        {
            var sql = $"SELECT p.position, p.version, (SELECT coalesce(sum(t.orders), 0) FROM {catalog.View(RevenueProjection.Name, "totals")} t) " +
                $"FROM {catalog.View(RevenueProjection.Name, "progress")} p WHERE p.id = 1";
            DbConnection? connection = null;
            try
            {
                while (!stopping.IsCancellationRequested)
                {
                    var floor = Interlocked.Read(ref _position);
                    var ordersFloor = Interlocked.Read(ref _orders);
                    ReadRecord record;
                    try
                    {
                        connection ??= await messages.Database().OpenReadConnectionAsync(CancellationToken.None);
                        await using var command = connection.CreateCommand();
                        command.CommandText = sql;
                        await using var result = await command.ExecuteReaderAsync(CancellationToken.None);
                        if (!await result.ReadAsync(CancellationToken.None))
                        {
                            throw new InvalidOperationException("the progress view has no row");
                        }

                        record = new ReadRecord(
                            reader,
                            floor,
                            ordersFloor,
                            Convert.ToInt64(result.GetValue(0), CultureInfo.InvariantCulture),
                            Convert.ToInt64(result.GetValue(2), CultureInfo.InvariantCulture),
                            Convert.ToInt32(result.GetValue(1), CultureInfo.InvariantCulture),
                            null);
                        Raise(ref _position, record.Position);
                        Raise(ref _orders, record.Orders);
                    }
                    catch (Exception exception) when (exception is DbException or InvalidOperationException)
                    {
                        record = new ReadRecord(reader, floor, ordersFloor, 0, 0, 0, $"{exception.GetType().Name}: {exception.Message}");
                        if (connection is not null)
                        {
                            await connection.DisposeAsync();
                            connection = null;
                        }
                    }

                    lock (_gate)
                    {
                        _records.Add(record);
                    }

                    await Task.Delay(pause, clock, stopping);
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
            }
            finally
            {
                if (connection is not null)
                {
                    await connection.DisposeAsync();
                }
            }
        }

        static void Raise(ref long highest, long seen)
        {
            var current = Interlocked.Read(ref highest);
            while (seen > current && Interlocked.CompareExchange(ref highest, seen, current) is var previous && previous != current)
            {
                current = previous;
            }
        }
    }
}
