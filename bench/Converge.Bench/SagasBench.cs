using System.Diagnostics;
using System.Globalization;
using Converge.Contracts;
using Converge.Hosting;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.Bench;

/// <summary>What the sagas bench runs.</summary>
public sealed class SagasBenchSettings
{
    /// <summary>Sagas per run.</summary>
    public required int Count { get; init; }

    /// <summary>The database file; <c>null</c> for a temporary file deleted afterwards. Must not exist.</summary>
    public string? DbPath { get; init; }

    /// <summary>A PostgreSQL connection string: each run gets a new schema there (dropped after it) instead of a SQLite file.</summary>
    public string? Postgres { get; init; }

    /// <summary>A RabbitMQ broker that carries the bench's message queues (the store stays the outbox and inbox).</summary>
    public Uri? RabbitMq { get; init; }

    /// <summary>Measured runs, each on a fresh file; figures are the median over runs.</summary>
    public int Runs { get; init; } = 1;

    /// <summary>Sagas of an unreported warm-up run first; at most <see cref="Count"/>; 0 skips it.</summary>
    public int WarmupCount { get; init; } = 20_000;

    /// <summary>Sagas started per transaction.</summary>
    public int StartBatchSize { get; init; } = 500;

    /// <summary>Every queue's batch size; <c>null</c> keeps the library default.</summary>
    public int? BatchSize { get; init; }

    /// <summary>How every queue's batch isolates a failing message (<see cref="QueueOptions.Isolation"/>). Default per message.</summary>
    public BatchIsolation Isolation { get; init; } = BatchIsolation.PerMessage;

    /// <summary>Give every step a timeout (a scheduled message per step), as a production saga would.</summary>
    public bool Timeouts { get; init; }

    /// <summary>Commit durability of the store.</summary>
    public SqliteDurability Durability { get; init; } = SqliteDurability.Full;

    /// <summary>A run fails when no saga completes for this long.</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>Figures: medians over the runs, and each run's throughput.</summary>
public sealed record SagasBenchReport(int Sagas, double Seconds, double PerSecond, double P50Ms, double P99Ms, int Runs, IReadOnlyList<double>? PerSecondRuns, bool Timeouts, string Isolation, string Durability, bool Verified);

/// <summary>
/// The three-step orchestrated saga (reserve credit, charge, ship), fully durable: every start, command, reply,
/// state change and saga log entry committed to the SQLite file; participants on their own queues record each
/// command's effect in the transaction of its inbox record and answer. Every run is verified from the store's rows:
/// each participant command took effect exactly once (and no compensation ran), each saga instance completed
/// exactly once, and nothing is left over.
/// </summary>
public static class SagasBench
{
    /// <summary>Runs the warm-up and the measured runs.</summary>
    /// <exception cref="BenchVerificationException">A run lost or failed a saga, or stalled.</exception>
    public static async Task<SagasBenchReport> RunAsync(SagasBenchSettings settings, TextWriter progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(progress);
        var results = await BenchRuns.RunAsync(
            settings.DbPath, settings.Postgres, settings.Count, settings.Runs, settings.WarmupCount, "sagas", progress,
            (path, count, _) => RunOnceAsync(path, count, settings, cancellationToken),
            result => $"{settings.Count} sagas in {result.Seconds:0.000} s, {result.PerSecond:0} sagas/s, saga p50 {result.P50:0.0} ms, p99 {result.P99:0.0} ms");

        return new SagasBenchReport(
            settings.Count,
            Math.Round(MessagesBench.Median(results.Select(r => r.Seconds)), 3),
            Math.Round(MessagesBench.Median(results.Select(r => r.PerSecond)), 1),
            Math.Round(MessagesBench.Median(results.Select(r => r.P50)), 1),
            Math.Round(MessagesBench.Median(results.Select(r => r.P99)), 1),
            settings.Runs,
            settings.Runs > 1 ? results.Select(r => Math.Round(r.PerSecond, 1)).ToList() : null,
            settings.Timeouts,
            settings.Isolation == BatchIsolation.OnFailure ? "on-failure" : "per-message",
            settings.Postgres is not null ? (settings.RabbitMq is null ? "postgresql" : "postgresql+rabbitmq") : settings.Durability == SqliteDurability.Full ? "full" : "normal",
            Verified: true);
    }

    static async Task<(double Seconds, double PerSecond, double P50, double P99)> RunOnceAsync(string path, int count, SagasBenchSettings settings, CancellationToken cancellationToken)
    {
        var observer = new SagaCompletionObserver(count);
        BenchSaga.WithTimeouts = settings.Timeouts;
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddSingleton<IMessageObserver>(observer);
        builder.Services.AddSingleton<BenchParticipant>();
        builder.Services.AddConverge(o =>
        {
            BenchStores.Use(o, settings.Postgres, path, settings.Durability, settings.RabbitMq);
            o.Messages
                .Register<ReserveCredit>("bench.reserve-credit").Register<CreditReserved>("bench.credit-reserved").Register<ReleaseCredit>("bench.release-credit").Register<CreditReleased>("bench.credit-released")
                .Register<ChargeOrder>("bench.charge").Register<OrderCharged>("bench.charged").Register<RefundOrder>("bench.refund").Register<OrderRefunded>("bench.refunded")
                .Register<ShipOrder>("bench.ship").Register<OrderShipped>("bench.shipped");
            o.Handle<ReserveCredit, BenchParticipant>("bench.customers").Handle<ReleaseCredit, BenchParticipant>("bench.customers")
                .Handle<ChargeOrder, BenchParticipant>("bench.payments").Handle<RefundOrder, BenchParticipant>("bench.payments")
                .Handle<ShipOrder, BenchParticipant>("bench.shipping");
            o.AddSaga<BenchSaga>();
            foreach (var queue in o.Queues.Keys.ToList())
            {
                o.Queue(queue, q => q.Isolation = settings.Isolation);
            }

            if (settings.BatchSize is { } batchSize)
            {
                foreach (var queue in o.Queues.Keys.ToList())
                {
                    o.Queue(queue, q => q.BatchSize = batchSize);
                }
            }
        });

        var host = builder.Build();
        var stopped = false;
        try
        {
            await host.StartAsync(cancellationToken);
            var store = host.Services.GetRequiredService<IMessageStore>();
            await CreateEffectsTableAsync(store, cancellationToken);
            var bus = host.Services.GetRequiredService<IMessageBus>();
            var sagas = host.Services.GetRequiredService<ISagaClient>();
            var start = Stopwatch.GetTimestamp();
            var startedAt = observer.StartedAt;
            var starting = Task.Run(
                async () =>
                {
                    for (var first = 0; first < count; first += settings.StartBatchSize)
                    {
                        await using var transaction = await bus.BeginTransactionAsync(cancellationToken);
                        var began = Stopwatch.GetTimestamp();
                        for (var seq = first; seq < Math.Min(count, first + settings.StartBatchSize); seq++)
                        {
                            startedAt[seq] = began;
                            await sagas.StartAsync(BenchSaga.SagaName, "order-" + seq.ToString(CultureInfo.InvariantCulture), new BenchOrder { Seq = seq, Amount = 10 + (seq % 90) }, transaction.Transaction, cancellationToken);
                        }

                        await transaction.CommitAsync(cancellationToken);
                    }
                },
                CancellationToken.None);

            await MessagesBench.WaitForAsync(observer.Done, () => observer.Completed, starting, count, "sagas", settings.StallTimeout, cancellationToken);
            await starting;
            var seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            await host.StopAsync(CancellationToken.None);
            stopped = true;
            if (await VerifyAsync(store, count, cancellationToken) is { Count: > 0 } problems)
            {
                throw new BenchVerificationException("verification failed: " + string.Join("; ", problems) + $" ({BenchStores.Describe(store)}).");
            }

            var latencies = observer.Latencies();
            return (seconds, count / seconds, MessagesBench.Percentile(latencies, 0.50), MessagesBench.Percentile(latencies, 0.99));
        }
        finally
        {
            await BenchRuns.StopAndDisposeAsync(host, stopped);
        }
    }

    /// <summary>The participants' effects: one row per command handled, written in the transaction of its inbox record.</summary>
    static async Task CreateEffectsTableAsync(IMessageStore store, CancellationToken cancellationToken)
    {
        await using var connection = await BenchStores.OpenConnectionAsync(store);
        await using var command = connection.CreateCommand();
        command.CommandText = $"CREATE TABLE bench_saga_effects (seq INTEGER NOT NULL, command TEXT NOT NULL, message_id {BenchStores.IdColumnType(store)} NOT NULL)";
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>The commands every saga sends when all goes well, as <see cref="BenchParticipant"/> records them.</summary>
    internal static readonly string[] ForwardCommands = ["reserve-credit", "charge", "ship"];

    /// <summary>
    /// Checks a finished run of <paramref name="count"/> sagas from the store's rows, de-duplicated: every forward
    /// command (<see cref="ForwardCommands"/>) took effect exactly once for every saga and no compensation ran;
    /// every saga instance exists once and completed exactly once (one change to <c>completed</c> in its saga log);
    /// no message is ready or in flight, and nothing was dead-lettered. Returns the problems; empty when verified.
    /// </summary>
    internal static async Task<IReadOnlyList<string>> VerifyAsync(IMessageStore store, int count, CancellationToken cancellationToken)
    {
        var problems = new List<string>();
        await using (var connection = await BenchStores.OpenConnectionAsync(store))
        {
            // Per command: rows, distinct sagas, and the range of their numbers. A duplicate shows as more rows than
            // sagas, a missing effect as fewer sagas than the run started.
            var effects = new Dictionary<string, (long Rows, long Distinct, long Min, long Max)>(StringComparer.Ordinal);
            await using (var command = connection.CreateCommand())
            {
                command.CommandText = "SELECT command, count(*), count(DISTINCT seq), min(seq), max(seq) FROM bench_saga_effects GROUP BY command";
                await using var reader = await command.ExecuteReaderAsync(cancellationToken);
                while (await reader.ReadAsync(cancellationToken))
                {
                    effects[reader.GetString(0)] = (reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetInt64(4));
                }
            }

            foreach (var name in ForwardCommands)
            {
                var (rows, distinct, min, max) = effects.GetValueOrDefault(name, (0, 0, -1, -1));
                if (rows != count || distinct != count || min != 0 || max != count - 1)
                {
                    problems.Add($"{name} took effect {rows} times for {distinct} distinct sagas (numbers {min}..{max}); expected once for each of the {count}");
                }
            }

            foreach (var (name, (rows, _, _, _)) in effects.Where(e => !ForwardCommands.Contains(e.Key)))
            {
                problems.Add($"{name} took effect {rows} times; no saga should have compensated");
            }

            // Per instance, from its saga log: exactly one change to completed.
            await using (var command = connection.CreateCommand())
            {
                command.CommandText = $"""
                    SELECT count(*), coalesce(sum(CASE WHEN completions = 1 THEN 1 ELSE 0 END), 0)
                    FROM (SELECT s.transaction_id,
                                 (SELECT count(*) FROM {BenchStores.Table(store, "saga_log")} l
                                  WHERE l.transaction_id = s.transaction_id AND l.kind = '{SagaLogKinds.StateChanged}' AND l.detail LIKE '% -> completed') AS completions
                          FROM {BenchStores.Table(store, "sagas")} s WHERE s.state = 'completed') AS c
                    """;
                await using var reader = await command.ExecuteReaderAsync(cancellationToken);
                await reader.ReadAsync(cancellationToken);
                var (completed, once) = (Convert.ToInt64(reader.GetValue(0), CultureInfo.InvariantCulture), Convert.ToInt64(reader.GetValue(1), CultureInfo.InvariantCulture));
                if (completed != count || once != count)
                {
                    problems.Add($"{completed} saga instances are completed and {once} of them logged exactly one completion; expected {count} and {count}");
                }
            }
        }

        var counts = await store.SagaQueries().CountSagasAsync(cancellationToken);
        if (counts.Sum(c => c.Count) != count)
        {
            problems.Add($"{counts.Sum(c => c.Count)} saga instances exist ({string.Join(", ", counts.Select(c => $"{c.Count} {c.State}"))}); expected {count}");
        }

        // Timeouts stay scheduled until their due time (they find the step answered and do nothing).
        var status = await store.Queries().GetStatusAsync(cancellationToken);
        var left = status.Queues.Sum(q => q.Ready + q.InFlight);
        if (left != 0)
        {
            problems.Add($"{left} messages are still ready or in flight");
        }

        if (status.DeadLetters != 0)
        {
            problems.Add($"{status.DeadLetters} dead letters");
        }

        return problems;
    }
}

/// <summary>The bench saga's data.</summary>
public sealed class BenchOrder
{
    /// <summary>Sequence number: indexes the latency arrays.</summary>
    public int Seq { get; set; }

    /// <summary>The order amount.</summary>
    public decimal Amount { get; set; }

    /// <summary>Set by the charge reply.</summary>
    public string? PaymentId { get; set; }
}

#pragma warning disable CS1591 // The bench's message contracts explain themselves.
public sealed record ReserveCredit(int Seq, decimal Amount);
public sealed record CreditReserved(int Seq);
public sealed record ReleaseCredit(int Seq);
public sealed record CreditReleased(int Seq);
public sealed record ChargeOrder(int Seq, decimal Amount);
public sealed record OrderCharged(int Seq, string PaymentId);
public sealed record RefundOrder(int Seq);
public sealed record OrderRefunded(int Seq);
public sealed record ShipOrder(int Seq);
public sealed record OrderShipped(int Seq);
#pragma warning restore CS1591

/// <summary>reserve credit (compensatable) → charge (compensatable) → ship (pivot).</summary>
internal sealed class BenchSaga : SagaDefinition<BenchOrder>
{
    public const string SagaName = "bench-order";

    public static bool WithTimeouts { get; set; }

    public override string Name => SagaName;

    protected override void Define(SagaBuilder<BenchOrder> saga)
    {
        var reserve = saga.Compensatable("reserve-credit")
            .Send(d => new ReserveCredit(d.Seq, d.Amount))
            .OnReply<CreditReserved>()
            .CompensateWith(d => new ReleaseCredit(d.Seq))
            .OnCompensated<CreditReleased>();
        var charge = saga.Compensatable("charge")
            .Send(d => new ChargeOrder(d.Seq, d.Amount))
            .OnReply<OrderCharged>((d, r) => d.PaymentId = r.PaymentId)
            .CompensateWith(d => new RefundOrder(d.Seq))
            .OnCompensated<OrderRefunded>();
        var ship = saga.Pivot("ship")
            .Send(d => new ShipOrder(d.Seq))
            .OnReply<OrderShipped>();
        if (WithTimeouts)
        {
            reserve.Timeout(TimeSpan.FromMinutes(5));
            charge.Timeout(TimeSpan.FromMinutes(5));
            ship.Timeout(TimeSpan.FromMinutes(5));
        }
    }
}

/// <summary>
/// The participants: each command records its effect (a row in <c>bench_saga_effects</c>, committed with its inbox
/// record) and is answered at once.
/// </summary>
internal sealed class BenchParticipant : IHandler<ReserveCredit>, IHandler<ReleaseCredit>, IHandler<ChargeOrder>, IHandler<RefundOrder>, IHandler<ShipOrder>
{
    public async Task HandleAsync(ReserveCredit message, MessageContext context, CancellationToken cancellationToken)
    {
        await RecordAsync(context, message.Seq, "reserve-credit", cancellationToken);
        await context.ReplyAsync(new CreditReserved(message.Seq), cancellationToken);
    }

    public async Task HandleAsync(ReleaseCredit message, MessageContext context, CancellationToken cancellationToken)
    {
        await RecordAsync(context, message.Seq, "release-credit", cancellationToken);
        await context.ReplyAsync(new CreditReleased(message.Seq), cancellationToken);
    }

    public async Task HandleAsync(ChargeOrder message, MessageContext context, CancellationToken cancellationToken)
    {
        await RecordAsync(context, message.Seq, "charge", cancellationToken);
        await context.ReplyAsync(new OrderCharged(message.Seq, "pay-" + message.Seq), cancellationToken);
    }

    public async Task HandleAsync(RefundOrder message, MessageContext context, CancellationToken cancellationToken)
    {
        await RecordAsync(context, message.Seq, "refund", cancellationToken);
        await context.ReplyAsync(new OrderRefunded(message.Seq), cancellationToken);
    }

    public async Task HandleAsync(ShipOrder message, MessageContext context, CancellationToken cancellationToken)
    {
        await RecordAsync(context, message.Seq, "ship", cancellationToken);
        await context.ReplyAsync(new OrderShipped(message.Seq), cancellationToken);
    }

    static ValueTask<int> RecordAsync(MessageContext context, int seq, string command, CancellationToken cancellationToken) =>
        context.ExecuteAsync(
            "INSERT INTO bench_saga_effects (seq, command, message_id) VALUES (@seq, @command, @message_id)",
            [("@seq", seq), ("@command", command), ("@message_id", context.MessageId)],
            cancellationToken);
}

/// <summary>
/// Counts sagas whose last reply (shipped) was handled and committed on the saga queue, each saga once: a second
/// shipped reply for the same saga (a duplicate the saga ignores) neither counts again nor moves its completion time,
/// so it cannot stop the clock before every saga completed. The run's verification then checks the store's rows.
/// </summary>
internal sealed class SagaCompletionObserver : IMessageObserver
{
    readonly long[] _completedAt;
    readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    int _completed;

    public SagaCompletionObserver(int count)
    {
        _completedAt = new long[count];
        StartedAt = new long[count];
    }

    public long[] StartedAt { get; }

    public Task Done => _done.Task;

    public int Completed => Volatile.Read(ref _completed);

    public void OnHandled(Envelope envelope, string queue, HandlingOutcome outcome)
    {
        if (outcome is HandlingOutcome.DeadLettered)
        {
            _done.TrySetException(new BenchVerificationException($"{envelope.MessageType} {envelope.MessageId} on '{queue}' was dead-lettered."));
            return;
        }

        if (outcome != HandlingOutcome.Completed || envelope.MessageType != "bench.shipped@1")
        {
            return;
        }

        var seq = int.Parse(envelope.CorrelationId!.AsSpan("order-".Length), CultureInfo.InvariantCulture);
        var now = Stopwatch.GetTimestamp();
        if ((uint)seq >= (uint)_completedAt.Length || Interlocked.CompareExchange(ref _completedAt[seq], now, 0) != 0)
        {
            return;
        }

        if (Interlocked.Increment(ref _completed) == _completedAt.Length)
        {
            _done.TrySetResult();
        }
    }

    public double[] Latencies()
    {
        var latencies = new double[_completedAt.Length];
        for (var i = 0; i < latencies.Length; i++)
        {
            latencies[i] = (_completedAt[i] - StartedAt[i]) * 1000.0 / Stopwatch.Frequency;
        }

        Array.Sort(latencies);
        return latencies;
    }
}
