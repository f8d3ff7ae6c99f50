using System.Diagnostics;
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

    /// <summary>Give every step a timeout (a scheduled message per step), as a production saga would.</summary>
    public bool Timeouts { get; init; }

    /// <summary>Commit durability of the store.</summary>
    public SqliteDurability Durability { get; init; } = SqliteDurability.Full;

    /// <summary>A run fails when no saga completes for this long.</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>Figures: medians over the runs, and each run's throughput.</summary>
public sealed record SagasBenchReport(int Sagas, double Seconds, double PerSecond, double P50Ms, double P99Ms, int Runs, IReadOnlyList<double>? PerSecondRuns, bool Timeouts, string Durability, bool Verified);

/// <summary>
/// The three-step orchestrated saga (reserve credit, charge, ship), fully durable: every start, command, reply,
/// state change and saga log entry committed to the SQLite file; participants on their own queues answer through
/// the inbox. Every run is verified: each saga completed exactly once and nothing is left over.
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
                            await sagas.StartAsync(BenchSaga.SagaName, "order-" + seq.ToString(System.Globalization.CultureInfo.InvariantCulture), new BenchOrder { Seq = seq, Amount = 10 + (seq % 90) }, transaction.Transaction, cancellationToken);
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
            await VerifyAsync(store, count, cancellationToken);
            var latencies = observer.Latencies();
            return (seconds, count / seconds, MessagesBench.Percentile(latencies, 0.50), MessagesBench.Percentile(latencies, 0.99));
        }
        finally
        {
            await BenchRuns.StopAndDisposeAsync(host, stopped);
        }
    }

    static async Task VerifyAsync(IMessageStore store, int count, CancellationToken cancellationToken)
    {
        var counts = await store.CountSagasAsync(cancellationToken);
        var completed = counts.Where(c => c.State == SagaState.Completed).Sum(c => c.Count);
        var status = await store.GetStatusAsync(cancellationToken);
        var problems = new List<string>();
        if (completed != count || counts.Sum(c => c.Count) != count)
        {
            problems.Add($"{completed} of {counts.Sum(c => c.Count)} saga instances completed; expected all {count}");
        }

        // Timeouts stay scheduled until their due time (they find the step answered and do nothing).
        var left = status.Queues.Sum(q => q.Ready + q.InFlight);
        if (left != 0)
        {
            problems.Add($"{left} messages are still ready or in flight");
        }

        if (status.DeadLetters != 0)
        {
            problems.Add($"{status.DeadLetters} dead letters");
        }

        var sample = await store.ReadSagaLogAsync("order-0", cancellationToken);
        if (sample.Count(e => e.Kind == SagaLogKinds.ReplyReceived) != 3)
        {
            problems.Add($"saga order-0 logged {sample.Count(e => e.Kind == SagaLogKinds.ReplyReceived)} replies; expected 3");
        }

        if (problems.Count > 0)
        {
            throw new BenchVerificationException("verification failed: " + string.Join("; ", problems) + $" ({BenchStores.Describe(store)}).");
        }
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

/// <summary>The participants: each command is answered at once through the inbox.</summary>
internal sealed class BenchParticipant : IHandler<ReserveCredit>, IHandler<ReleaseCredit>, IHandler<ChargeOrder>, IHandler<RefundOrder>, IHandler<ShipOrder>
{
    public Task HandleAsync(ReserveCredit message, MessageContext context, CancellationToken cancellationToken) => context.ReplyAsync(new CreditReserved(message.Seq), cancellationToken).AsTask();

    public Task HandleAsync(ReleaseCredit message, MessageContext context, CancellationToken cancellationToken) => context.ReplyAsync(new CreditReleased(message.Seq), cancellationToken).AsTask();

    public Task HandleAsync(ChargeOrder message, MessageContext context, CancellationToken cancellationToken) => context.ReplyAsync(new OrderCharged(message.Seq, "pay-" + message.Seq), cancellationToken).AsTask();

    public Task HandleAsync(RefundOrder message, MessageContext context, CancellationToken cancellationToken) => context.ReplyAsync(new OrderRefunded(message.Seq), cancellationToken).AsTask();

    public Task HandleAsync(ShipOrder message, MessageContext context, CancellationToken cancellationToken) => context.ReplyAsync(new OrderShipped(message.Seq), cancellationToken).AsTask();
}

/// <summary>Counts sagas whose last reply (shipped) was handled and committed on the saga queue.</summary>
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

        var seq = int.Parse(envelope.CorrelationId!.AsSpan("order-".Length), System.Globalization.CultureInfo.InvariantCulture);
        _completedAt[seq] = Stopwatch.GetTimestamp();
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
