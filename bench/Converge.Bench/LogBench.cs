using System.Diagnostics;
using Converge.AspNetCore;
using Converge.Client;
using Converge.Contracts;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Converge.Bench;

/// <summary>What <c>converge bench log</c> runs.</summary>
public sealed class LogBenchSettings
{
    /// <summary>Events appended in transactions of <see cref="AppendBatch"/>, then read over HTTP.</summary>
    public required int Count { get; init; }

    /// <summary>Events appended one per transaction (timed apart, before the batches).</summary>
    public int Single { get; init; } = 2_000;

    /// <summary>Events per transaction of the batched appends.</summary>
    public int AppendBatch { get; init; } = 100;

    /// <summary>Clients reading the whole log at once in the concurrent measurement.</summary>
    public int Clients { get; init; } = 50;

    /// <summary>The database file; <c>null</c> for a temporary file deleted afterwards. Must not exist.</summary>
    public string? DbPath { get; init; }

    /// <summary>A PostgreSQL connection string: the run gets a new schema there (dropped after it) instead of a SQLite file.</summary>
    public string? Postgres { get; init; }

    /// <summary>Events of the projection rebuild, on a store of its own (as Marten's peer: 200,000); 0 skips it.</summary>
    public int RebuildEvents { get; init; } = 200_000;

    /// <summary>Streams the rebuild's events are spread over (as Marten's peer: 10,000).</summary>
    public int RebuildStreams { get; init; } = 10_000;

    /// <summary>Events per batch of the rebuilt projection; <c>null</c> for the library's default.</summary>
    public int? RebuildBatch { get; init; }
}

/// <summary>The figures of one <c>converge bench log</c> run.</summary>
public sealed record LogBenchReport(
    string Store,
    int Events,
    double AppendSinglePerSecond,
    double AppendBatchedPerSecond,
    int AppendBatch,
    double NdjsonPerSecond,
    double SsePerSecond,
    int Clients,
    double ClientsTotalPerSecond,
    double ClientsSlowestSeconds,
    long BytesPerEvent,
    RebuildFigures? Rebuild);

/// <summary>
/// The log over HTTP on this machine: appends (one event per transaction, and in batches), then the whole log read over
/// loopback HTTP by one client as NDJSON, by one as Server-Sent Events, and by many at once. Every read is verified:
/// each client must see every position once, in order. Then, on a store of its own, a projection rebuilt from position 0
/// (<see cref="RebuildBench"/>), its rows verified.
/// </summary>
public static class LogBench
{
    public static async Task<LogBenchReport> RunAsync(LogBenchSettings settings, TextWriter progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var path = settings.DbPath ?? Path.Combine(Path.GetTempPath(), "converge-bench-log-" + Guid.NewGuid().ToString("N") + ".db");
        var location = BenchStores.Fresh(settings.Postgres, path);
        try
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.WebHost.UseUrls("http://127.0.0.1:0");
            builder.Logging.ClearProviders();
            builder.Services.AddConverge(o => BenchStores.Use(o, settings.Postgres, location, SqliteDurability.Full));
            await using var app = builder.Build();
            app.MapConvergeLog(configure: o => o.AllowAnonymous = true);
            await app.StartAsync(cancellationToken);
            var address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single() + "/");
            var store = app.Services.GetRequiredService<IMessageStore>();

            await progress.WriteLineAsync($"appending {settings.Single:N0} events one per transaction, then {settings.Count:N0} in transactions of {settings.AppendBatch} ({BenchStores.Describe(store)})");
            var single = await AppendAsync(store, settings.Single, 1, 0, cancellationToken);
            var batched = await AppendAsync(store, settings.Count, settings.AppendBatch, settings.Single, cancellationToken);
            var total = settings.Single + settings.Count;

            await progress.WriteLineAsync($"reading {total:N0} events over HTTP: NDJSON, Server-Sent Events, then {settings.Clients} clients at once");
            using var http = new HttpClient { BaseAddress = address, Timeout = Timeout.InfiniteTimeSpan };
            var (ndjson, bytes) = await ReadAsync(http, LogFormat.Ndjson, total, cancellationToken);
            var (sse, _) = await ReadAsync(http, LogFormat.ServerSentEvents, total, cancellationToken);
            var watch = Stopwatch.StartNew();
            var slowest = await Task.WhenAll(Enumerable.Range(0, settings.Clients).Select(async _ =>
            {
                var (seconds, _) = await ReadAsync(http, LogFormat.Ndjson, total, cancellationToken);
                return total / seconds;
            }));
            var together = watch.Elapsed.TotalSeconds;
            await app.StopAsync(cancellationToken);
            var rebuild = settings.RebuildEvents > 0
                ? await RebuildBench.RunAsync(settings.RebuildEvents, settings.RebuildStreams, settings.RebuildBatch, settings.Postgres, path, progress, cancellationToken)
                : null;
            return new LogBenchReport(
                settings.Postgres is null ? "sqlite" : "postgresql",
                total,
                settings.Single / single,
                settings.Count / batched,
                settings.AppendBatch,
                total / ndjson,
                total / sse,
                settings.Clients,
                (double)total * settings.Clients / together,
                total / slowest.Min(),
                bytes,
                rebuild);
        }
        finally
        {
            await BenchStores.DeleteAsync(settings.Postgres, location);
        }
    }

    static async Task<double> AppendAsync(IMessageStore store, int count, int perTransaction, int start, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        for (var appended = 0; appended < count; appended += perTransaction)
        {
            var size = Math.Min(perTransaction, count - appended);
            await using var transaction = await store.BeginAsync(cancellationToken);
            for (var i = 0; i < size; i++)
            {
                var number = start + appended + i;
                await transaction.AppendAsync("account-" + (number % 1000), null, [Event(number)], cancellationToken);
            }

            await transaction.CommitAsync(cancellationToken);
        }

        return watch.Elapsed.TotalSeconds;
    }

    static Envelope Event(int number) => new()
    {
        MessageId = Guid.NewGuid(),
        MessageType = "bench.amount-posted@1",
        CorrelationId = "posting-" + number,
        SentAt = DateTimeOffset.UnixEpoch.AddSeconds(number),
        Body = System.Text.Encoding.UTF8.GetBytes($"{{\"number\":{number},\"amount\":{number % 997}.25,\"currency\":\"GBP\"}}"),
    };

    /// <summary>Reads the whole log with one client; returns the seconds it took and the size of the last event on the wire.</summary>
    static async Task<(double Seconds, long Bytes)> ReadAsync(HttpClient http, LogFormat format, long expected, CancellationToken cancellationToken)
    {
        var client = new ConvergeLogClient(http, new ConvergeLogClientOptions { Format = format, OnReconnect = e => throw new InvalidOperationException("A bench read lost its connection.", e) });
        var positions = new List<long>((int)expected);
        var watch = Stopwatch.StartNew();
        await foreach (var entry in client.ReadLogAsync(new LogQuery { Follow = false }, cancellationToken))
        {
            positions.Add(entry.Position);
        }

        var seconds = watch.Elapsed.TotalSeconds;
        if (Verify(positions, expected) is { } error)
        {
            throw new InvalidOperationException($"The {format} read is wrong: {error}");
        }

        using var raw = await http.GetAsync(format == LogFormat.Ndjson ? "converge/log?follow=false&after=" + (expected - 1) : "converge/log?follow=false&format=sse&after=" + (expected - 1), cancellationToken);
        return (seconds, (await raw.Content.ReadAsByteArrayAsync(cancellationToken)).Length);
    }

    /// <summary>
    /// What is wrong with a client's read of a log of <paramref name="expected"/> events (positions 1 to
    /// <paramref name="expected"/>): a missing position, a repeated one, or one out of order; <c>null</c> when nothing is.
    /// </summary>
    public static string? Verify(IReadOnlyList<long> positions, long expected)
    {
        ArgumentNullException.ThrowIfNull(positions);
        for (var i = 0; i < positions.Count; i++)
        {
            if (positions[i] != i + 1)
            {
                if (positions.Take(i).Contains(positions[i]))
                {
                    return $"position {positions[i]} was delivered twice (again at #{i + 1})";
                }

                var later = positions.Skip(i + 1).ToList().IndexOf(i + 1);
                return later < 0 ? $"position {i + 1} is missing (#{i + 1} was {positions[i]})" : $"position {i + 1} came out of order (at #{i + 2 + later})";
            }
        }

        return positions.Count == expected ? null : $"{positions.Count} of {expected} events were delivered";
    }
}
