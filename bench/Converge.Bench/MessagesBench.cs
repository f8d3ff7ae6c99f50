using System.Data.Common;
using System.Diagnostics;
using Converge.Hosting;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.Bench;

/// <summary>What the messages bench runs.</summary>
public sealed class MessagesBenchSettings
{
    /// <summary>Messages per run.</summary>
    public required int Count { get; init; }

    /// <summary>Messages per second in fixed-rate mode; <c>null</c> for throughput mode (send as fast as possible).</summary>
    public double? Rate { get; init; }

    /// <summary>The database file; <c>null</c> for a temporary file deleted afterwards. Must not exist.</summary>
    public string? DbPath { get; init; }

    /// <summary>A PostgreSQL connection string: each run gets a new schema there (dropped after it) instead of a SQLite file.</summary>
    public string? Postgres { get; init; }

    /// <summary>A RabbitMQ broker that carries the bench's message queues (the store stays the outbox and inbox).</summary>
    public Uri? RabbitMq { get; init; }

    /// <summary>The queue's batch size; <c>null</c> keeps the library default.</summary>
    public int? BatchSize { get; init; }

    /// <summary>Consumers of the queue at once (the queue's <see cref="QueueOptions.Concurrency"/>). Default 1.</summary>
    public int Concurrency { get; init; } = 1;

    /// <summary>How a batch isolates a failing message (the queue's <see cref="QueueOptions.Isolation"/>). Default per message.</summary>
    public BatchIsolation Isolation { get; init; } = BatchIsolation.PerMessage;

    /// <summary>Commit durability of the store.</summary>
    public SqliteDurability Durability { get; init; } = SqliteDurability.Full;

    /// <summary>Measured runs, each on a fresh file; figures are the median over runs.</summary>
    public int Runs { get; init; } = 1;

    /// <summary>
    /// Messages of an unreported warm-up run first, in throughput mode whatever the mode measured (so the code the
    /// measured runs use is compiled at its final tier); at most <see cref="Count"/>; 0 skips it.
    /// </summary>
    public int WarmupCount { get; init; } = 100_000;

    /// <summary>Whose transaction the sender writes its outbox messages in. Default <see cref="OutboxSender.Converge"/>.</summary>
    public OutboxSender Sender { get; init; } = OutboxSender.Converge;

    /// <summary>Messages per sending transaction in throughput mode.</summary>
    public int SendBatchSize { get; init; } = 1000;

    /// <summary>A run fails when no message completes for this long.</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>Whose transaction outbox sends are made in.</summary>
public enum OutboxSender
{
    /// <summary><c>bus.BeginTransactionAsync()</c>: a transaction that queues with Converge's own writers.</summary>
    Converge,

    /// <summary>The caller's own transaction on a connection to the store's database.</summary>
    Own,
}

/// <summary>Figures of one verified run.</summary>
/// <param name="Messages">Messages sent and handled.</param>
/// <param name="Seconds">From the first send to the last committed handling.</param>
/// <param name="PerSecond">Messages / seconds.</param>
/// <param name="P50Ms">Median latency.</param>
/// <param name="P99Ms">99th percentile latency.</param>
/// <param name="MaxMs">Largest latency.</param>
/// <param name="SendP50Ms">Median time from when a message was due to be sent until its sending transaction committed.</param>
/// <param name="SendP99Ms">99th percentile of that.</param>
/// <param name="SendMaxMs">Largest of that.</param>
/// <param name="BatchSize">The queue's batch size in force.</param>
public sealed record MessagesRunResult(int Messages, double Seconds, double PerSecond, double P50Ms, double P99Ms, double MaxMs, double SendP50Ms, double SendP99Ms, double SendMaxMs, int BatchSize);

/// <summary>The bench's answer: medians over the runs, and each run's throughput.</summary>
public sealed record MessagesBenchReport(
    string Mode,
    int Messages,
    double Seconds,
    double PerSecond,
    double P50Ms,
    double P99Ms,
    double MaxMs,
    double SendP50Ms,
    double SendP99Ms,
    double SendMaxMs,
    double? Rate,
    int BatchSize,
    int Concurrency,
    string Isolation,
    string Durability,
    string Sender,
    int Runs,
    IReadOnlyList<double>? PerSecondRuns,
    bool Verified);

/// <summary>
/// End to end through the library: messages sent through the outbox (the caller's own transaction on the
/// store's file), claimed by the queue consumer of an in-process host, handled by a handler that writes one row
/// in the message's transaction, and observed after the commit. Every run is verified.
/// </summary>
public static class MessagesBench
{
    const string Queue = "bench";

    /// <summary>Runs the warm-up and <see cref="MessagesBenchSettings.Runs"/> verified runs.</summary>
    /// <exception cref="BenchVerificationException">A run lost, duplicated or failed messages, or stalled.</exception>
    public static async Task<MessagesBenchReport> RunAsync(MessagesBenchSettings settings, TextWriter progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(progress);
        var results = await BenchRuns.RunAsync(
            settings.DbPath, settings.Postgres, settings.Count, settings.Runs, settings.WarmupCount, "messages", progress,
            (path, count, warmup) => RunOnceAsync(path, count, warmup
                ? new MessagesBenchSettings
                {
                    // Throughput mode whatever is measured, so the code the measured runs use reaches its final tier.
                    Count = count,
                    BatchSize = settings.BatchSize,
                    Concurrency = settings.Concurrency,
                    Isolation = settings.Isolation,
                    Durability = settings.Durability,
                    Postgres = settings.Postgres,
                    RabbitMq = settings.RabbitMq,
                    SendBatchSize = settings.SendBatchSize,
                    Sender = settings.Sender,
                    StallTimeout = settings.StallTimeout,
                }
                : settings, cancellationToken),
            result => $"{result.Messages} messages in {result.Seconds:0.000} s, {result.PerSecond:0} msg/s, p50 {result.P50Ms:0.00} ms, p99 {result.P99Ms:0.00} ms, max {result.MaxMs:0.00} ms; sending p50 {result.SendP50Ms:0.00} ms, p99 {result.SendP99Ms:0.00} ms, max {result.SendMaxMs:0.00} ms");

        return new MessagesBenchReport(
            Mode: settings.Rate is null ? "throughput" : "rate",
            Messages: settings.Count,
            Seconds: Round(Median(results.Select(r => r.Seconds)), 3),
            PerSecond: Round(Median(results.Select(r => r.PerSecond)), 1),
            P50Ms: Round(Median(results.Select(r => r.P50Ms)), 3),
            P99Ms: Round(Median(results.Select(r => r.P99Ms)), 3),
            MaxMs: Round(Median(results.Select(r => r.MaxMs)), 3),
            SendP50Ms: Round(Median(results.Select(r => r.SendP50Ms)), 3),
            SendP99Ms: Round(Median(results.Select(r => r.SendP99Ms)), 3),
            SendMaxMs: Round(Median(results.Select(r => r.SendMaxMs)), 3),
            Rate: settings.Rate,
            BatchSize: results[0].BatchSize,
            Concurrency: settings.Concurrency,
            Isolation: settings.Isolation == BatchIsolation.OnFailure ? "on-failure" : "per-message",
            Durability: settings.Postgres is not null ? (settings.RabbitMq is null ? "postgresql" : "postgresql+rabbitmq") : settings.Durability == SqliteDurability.Full ? "full" : "normal",
            Sender: settings.Sender == OutboxSender.Converge ? "converge" : "own",
            Runs: settings.Runs,
            PerSecondRuns: settings.Runs > 1 ? results.Select(r => Round(r.PerSecond, 1)).ToList() : null,
            Verified: true);
    }

    /// <summary>One run on a new file at <paramref name="path"/>, verified before its figures are returned.</summary>
    static async Task<MessagesRunResult> RunOnceAsync(string path, int count, MessagesBenchSettings settings, CancellationToken cancellationToken)
    {
        var observer = new CompletionObserver(count);
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddSingleton<IMessageObserver>(observer);
        builder.Services.AddConverge(o =>
        {
            BenchStores.Use(o, settings.Postgres, path, settings.Durability, settings.RabbitMq);
            o.Messages.Register<BenchMessage>("bench.message");
            o.Handle<BenchMessage, BenchHandler>(Queue);
            o.Queue(Queue, q =>
            {
                q.Concurrency = settings.Concurrency;
                q.Isolation = settings.Isolation;
                if (settings.BatchSize is { } batchSize)
                {
                    q.BatchSize = batchSize;
                }
            });
        });

        var host = builder.Build();
        var stopped = false;
        try
        {
            await host.StartAsync(cancellationToken);
            var store = host.Services.GetRequiredService<IMessageStore>();
            var bus = host.Services.GetRequiredService<IMessageBus>();
            var batch = host.Services.GetRequiredService<ConvergeOptions>().Queues[Queue].BatchSize;
            await CreateEffectsTableAsync(store, cancellationToken);

            // Latency is measured from the moment each message was due to be sent: its scheduled time at a fixed
            // rate (so a late sender cannot hide queueing), or when its sending transaction began otherwise.
            var sentAt = new long[count];
            var committedAt = new long[count];
            using var stopSending = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var start = Stopwatch.GetTimestamp() + (settings.Rate is null ? 0 : Stopwatch.Frequency / 100);
            var sending = Task.Run(
                () => settings.Rate is { } rate
                    ? SendAtRateAsync(store, bus, settings.Sender, count, rate, start, sentAt, committedAt, stopSending.Token)
                    : SendInBatchesAsync(store, bus, settings.Sender, count, settings.SendBatchSize, sentAt, committedAt, stopSending.Token),
                CancellationToken.None);

            try
            {
                await WaitForCompletionAsync(observer, sending, count, settings.StallTimeout, cancellationToken);
                await sending;
            }
            catch
            {
                await stopSending.CancelAsync();
                await sending.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                throw;
            }

            await host.StopAsync(CancellationToken.None);
            stopped = true;
            if (await VerifyAsync(store, count, cancellationToken) is { Count: > 0 } problems)
            {
                throw new BenchVerificationException("verification failed: " + string.Join("; ", problems) + $" ({BenchStores.Describe(store)}).");
            }
            return Figures(count, start, sentAt, committedAt, observer.CompletedAt, batch);
        }
        finally
        {
            await BenchRuns.StopAndDisposeAsync(host, stopped);
        }
    }

    static async Task CreateEffectsTableAsync(IMessageStore store, CancellationToken cancellationToken)
    {
        await using var connection = await BenchStores.OpenConnectionAsync(store);
        await using var command = connection.CreateCommand();
        command.CommandText = $"CREATE TABLE bench_effects (seq INTEGER NOT NULL, message_id {BenchStores.IdColumnType(store)} NOT NULL)";
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>Throughput mode: transactions of <paramref name="perTransaction"/> messages, back to back.</summary>
    static async Task SendInBatchesAsync(IMessageStore store, IMessageBus bus, OutboxSender sender, int count, int perTransaction, long[] sentAt, long[] committedAt, CancellationToken cancellationToken)
    {
        await using var connection = await BenchStores.OpenConnectionAsync(store);
        for (var first = 0; first < count; first += perTransaction)
        {
            var began = Stopwatch.GetTimestamp();
            var last = Math.Min(count, first + perTransaction);
            await using var transaction = await OutboxTransaction.BeginAsync(sender, bus, connection, cancellationToken);
            for (var seq = first; seq < last; seq++)
            {
                sentAt[seq] = began;
                await bus.SendAsync(new BenchMessage(seq), transaction.Transaction, cancellationToken: cancellationToken);
            }

            await transaction.CommitAsync(cancellationToken);
            Array.Fill(committedAt, Stopwatch.GetTimestamp(), first, last - first);
        }
    }

    /// <summary>Fixed-rate mode: message i is sent at <paramref name="start"/> + i / rate, one per transaction.</summary>
    static async Task SendAtRateAsync(IMessageStore store, IMessageBus bus, OutboxSender sender, int count, double rate, long start, long[] sentAt, long[] committedAt, CancellationToken cancellationToken)
    {
        var interval = Stopwatch.Frequency / rate;
        await using var connection = await BenchStores.OpenConnectionAsync(store);
        for (var seq = 0; seq < count; seq++)
        {
            var due = start + (long)(seq * interval);
            sentAt[seq] = due;
            await PreciseWait.UntilAsync(due, cancellationToken);
            await using (var transaction = await OutboxTransaction.BeginAsync(sender, bus, connection, cancellationToken))
            {
                await bus.SendAsync(new BenchMessage(seq), transaction.Transaction, cancellationToken: cancellationToken);
                await transaction.CommitAsync(cancellationToken);
            }

            committedAt[seq] = Stopwatch.GetTimestamp();
        }
    }

    /// <summary>The sender's transaction, whichever kind was asked for.</summary>
    sealed class OutboxTransaction : IAsyncDisposable
    {
        readonly IStoreTransaction? _converge;
        readonly DbTransaction? _own;

        OutboxTransaction(IStoreTransaction? converge, DbTransaction? own)
        {
            _converge = converge;
            _own = own;
        }

        public DbTransaction Transaction => _converge?.Transaction ?? _own!;

        public static async Task<OutboxTransaction> BeginAsync(OutboxSender sender, IMessageBus bus, DbConnection connection, CancellationToken cancellationToken) =>
            sender == OutboxSender.Converge
                ? new OutboxTransaction(await bus.BeginTransactionAsync(cancellationToken), null)
                : new OutboxTransaction(null, await connection.BeginTransactionAsync(cancellationToken));

        public async Task CommitAsync(CancellationToken cancellationToken)
        {
            if (_converge is not null)
            {
                await _converge.CommitAsync(cancellationToken);
            }
            else
            {
                await _own!.CommitAsync(cancellationToken);
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (_converge is not null)
            {
                await _converge.DisposeAsync();
            }

            if (_own is not null)
            {
                await _own.DisposeAsync();
            }
        }
    }

    static Task WaitForCompletionAsync(CompletionObserver observer, Task sending, int count, TimeSpan stallTimeout, CancellationToken cancellationToken) =>
        WaitForAsync(observer.Done, () => observer.Completed, sending, count, "messages", stallTimeout, cancellationToken);

    /// <summary>
    /// Waits for <paramref name="done"/>, failing fast when <paramref name="producer"/> fails or when
    /// <paramref name="completed"/> makes no progress for <paramref name="stallTimeout"/>.
    /// </summary>
    internal static async Task WaitForAsync(Task done, Func<int> completed, Task producer, int count, string what, TimeSpan stallTimeout, CancellationToken cancellationToken)
    {
        var progress = completed();
        var progressAt = Stopwatch.GetTimestamp();
        while (true)
        {
            try
            {
                await done.WaitAsync(TimeSpan.FromMilliseconds(250), cancellationToken);
                return;
            }
            catch (TimeoutException)
            {
                // Check the producer and progress below.
            }

            if (producer.IsFaulted || producer.IsCanceled)
            {
                await producer;
            }

            var now = completed();
            if (now != progress)
            {
                progress = now;
                progressAt = Stopwatch.GetTimestamp();
            }
            else if (Stopwatch.GetElapsedTime(progressAt) > stallTimeout)
            {
                throw new BenchVerificationException($"stalled: {now} of {count} {what} completed and none for {stallTimeout.TotalSeconds:0} s (producer {(producer.IsCompleted ? "finished" : "still running")}).");
            }
        }
    }

    /// <summary>
    /// Checks a finished run of <paramref name="count"/> messages from the store's rows: one effect row for each
    /// message (none twice, none missing), one inbox record each, nothing left on the queues and nothing
    /// dead-lettered. Returns the problems; empty when verified.
    /// </summary>
    internal static async Task<IReadOnlyList<string>> VerifyAsync(IMessageStore store, int count, CancellationToken cancellationToken)
    {
        long rows, distinct, min, max;
        await using (var connection = await BenchStores.OpenConnectionAsync(store))
        await using (var command = connection.CreateCommand())
        {
            command.CommandText = "SELECT count(*), count(DISTINCT seq), coalesce(min(seq), -1), coalesce(max(seq), -1) FROM bench_effects";
            await using var reader = await command.ExecuteReaderAsync(cancellationToken);
            await reader.ReadAsync(cancellationToken);
            (rows, distinct, min, max) = (reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3));
        }

        var status = await store.Queries().GetStatusAsync(cancellationToken);
        var left = status.Queues.Sum(q => q.Ready + q.Scheduled + q.InFlight);
        var problems = new List<string>();
        if (rows != count || distinct != count || min != 0 || max != count - 1)
        {
            problems.Add($"bench_effects has {rows} rows with {distinct} distinct seq (range {min}..{max}); expected exactly {count} rows, seq 0..{count - 1}");
        }

        if (left != 0)
        {
            problems.Add($"{left} messages are still on the queues");
        }

        if (status.DeadLetters != 0)
        {
            problems.Add($"{status.DeadLetters} dead letters");
        }

        if (status.InboxRecords != count)
        {
            problems.Add($"{status.InboxRecords} inbox records; expected {count}");
        }

        return problems;
    }

    static MessagesRunResult Figures(int count, long start, long[] sentAt, long[] committedAt, long[] completedAt, int batchSize)
    {
        var latencies = new double[count];
        var sending = new double[count];
        var last = long.MinValue;
        for (var i = 0; i < count; i++)
        {
            latencies[i] = ToMilliseconds(completedAt[i] - sentAt[i]);
            sending[i] = ToMilliseconds(committedAt[i] - sentAt[i]);
            last = Math.Max(last, completedAt[i]);
        }

        Array.Sort(latencies);
        Array.Sort(sending);
        var seconds = ToMilliseconds(last - start) / 1000;
        return new MessagesRunResult(
            count,
            seconds,
            count / seconds,
            Percentile(latencies, 0.50),
            Percentile(latencies, 0.99),
            latencies[^1],
            Percentile(sending, 0.50),
            Percentile(sending, 0.99),
            sending[^1],
            batchSize);
    }

    /// <summary>Nearest-rank percentile of sorted values.</summary>
    internal static double Percentile(double[] sorted, double p) => sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];

    static double ToMilliseconds(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;

    internal static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    internal static double Round(double value, int digits) => Math.Round(value, digits, MidpointRounding.AwayFromZero);
}
