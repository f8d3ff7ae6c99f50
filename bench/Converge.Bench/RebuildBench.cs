using System.Diagnostics;
using System.Globalization;
using System.Text;
using Converge.Contracts;
using Converge.Projections;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.Bench;

/// <summary>A deposit to an account: the event the rebuild bench projects.</summary>
/// <param name="Amount">The amount, 1 to 100.</param>
public sealed record Deposited(int Amount);

/// <summary>
/// The rebuild bench's projection: one row per stream with its event count and the sum of its amounts. A batch is
/// aggregated in memory and written with one statement per batch on PostgreSQL (<c>unnest</c> of arrays, upserted),
/// one prepared upsert per stream on SQLite.
/// </summary>
public sealed class StreamTotalsProjection : IProjection
{
    /// <inheritdoc />
    public IReadOnlyList<string> Tables { get; } = ["totals"];

    /// <inheritdoc />
    public IReadOnlyList<Type> Events { get; } = [typeof(Deposited)];

    /// <inheritdoc />
    public async ValueTask CreateTablesAsync(ProjectionContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        await context.Database.ExecuteAsync($"CREATE TABLE {context.Table("totals")} (stream text PRIMARY KEY, events bigint NOT NULL, amount bigint NOT NULL)", [], cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask ApplyAsync(IReadOnlyList<ProjectedEvent> events, ProjectionContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(events);
        ArgumentNullException.ThrowIfNull(context);
        var totals = new Dictionary<string, (long Events, long Amount)>(StringComparer.Ordinal);
        foreach (var projected in events)
        {
            var (count, amount) = totals.GetValueOrDefault(projected.Event.Stream);
            totals[projected.Event.Stream] = (count + 1, amount + ((Deposited)projected.Message).Amount);
        }

        const string Upsert = " ON CONFLICT (stream) DO UPDATE SET events = t.events + excluded.events, amount = t.amount + excluded.amount";
        var table = context.Table("totals");
        if (context.Dialect == SqlDialect.PostgreSql)
        {
            var streams = new string[totals.Count];
            var counts = new long[totals.Count];
            var amounts = new long[totals.Count];
            var i = 0;
            foreach (var (stream, (count, amount)) in totals)
            {
                (streams[i], counts[i], amounts[i]) = (stream, count, amount);
                i++;
            }

            await context.Database.ExecuteAsync(
                $"INSERT INTO {table} AS t (stream, events, amount) SELECT * FROM unnest(@streams, @counts, @amounts)" + Upsert,
                [new("@streams", streams), new("@counts", counts), new("@amounts", amounts)],
                cancellationToken);
            return;
        }

        foreach (var (stream, (count, amount)) in totals)
        {
            await context.Database.ExecuteAsync(
                $"INSERT INTO {table} AS t (stream, events, amount) VALUES (@stream, @events, @amount)" + Upsert,
                [new("@stream", stream), new("@events", count), new("@amount", amount)],
                cancellationToken);
        }
    }
}

/// <summary>The figures of a projection rebuild: the events appended first, then built from position 0.</summary>
/// <param name="Events">Events on the log.</param>
/// <param name="Streams">Streams they are spread over (event <c>i</c> goes to stream <c>i % Streams</c>).</param>
/// <param name="BatchSize">Events per batch of the projection.</param>
/// <param name="AppendPerSecond">Events appended per second, 100 per transaction.</param>
/// <param name="PerSecond">The build rate the projection catalogue reports (positions from registration to built).</param>
/// <param name="WallPerSecond">Events per second from starting the host that registers the version to seeing it built.</param>
/// <param name="Seconds">Those seconds.</param>
public sealed record RebuildFigures(int Events, int Streams, int BatchSize, double AppendPerSecond, double PerSecond, double WallPerSecond, double Seconds);

/// <summary>
/// A projection rebuilt from position 0, measured as Marten's peer measures its own: N events over S streams are
/// appended (100 per transaction, event <c>i</c> to stream <c>i % S</c>, amount <c>i % 100 + 1</c>), then a new
/// projection version that keeps one row per stream is registered and timed until built. The rows are verified.
/// </summary>
public static class RebuildBench
{
    const string Name = "stream-totals";

    public static async Task<RebuildFigures> RunAsync(int events, int streams, int? batchSize, string? postgres, string path, TextWriter progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(progress);
        var location = BenchStores.Fresh(postgres, path, ".rebuild");
        var batch = batchSize ?? new ProjectionOptions().BatchSize;
        try
        {
            double appendSeconds;
            using (var writer = Build(postgres, location, null))
            {
                await writer.StartAsync(cancellationToken);
                var store = writer.Services.GetRequiredService<IMessageStore>();
                await progress.WriteLineAsync($"rebuild: appending {events:N0} events over {streams:N0} streams, 100 per transaction ({BenchStores.Describe(store)})");
                var watch = Stopwatch.StartNew();
                for (var from = 0; from < events; from += 100)
                {
                    await using var transaction = await store.BeginAsync(cancellationToken);
                    for (var i = from; i < Math.Min(events, from + 100); i++)
                    {
                        await transaction.AppendAsync(StreamOf(i % streams), null, [Event(i)], cancellationToken);
                    }

                    await transaction.CommitAsync(cancellationToken);
                }

                appendSeconds = watch.Elapsed.TotalSeconds;
                await writer.StopAsync(cancellationToken);
            }

            await progress.WriteLineAsync($"rebuild: registering a projection (one row per stream, batches of {batch:N0}) and timing its build from position 0");
            var started = Stopwatch.StartNew();
            using var host = Build(postgres, location, batch);
            await host.StartAsync(cancellationToken);
            var catalog = host.Services.GetRequiredService<ProjectionCatalog>();
            ProjectionVersionStatus? built;
            while ((built = await StatusAsync(catalog, cancellationToken)) is not { State: ProjectionState.Live or ProjectionState.Built })
            {
                if (built is { FailedAttempts: > 0 })
                {
                    throw new InvalidOperationException($"The rebuild failed at position {built.Position}: {built.LastError}");
                }

                await Task.Delay(TimeSpan.FromMilliseconds(10), cancellationToken);
            }

            var seconds = started.Elapsed.TotalSeconds;
            var rows = await ReadAsync(host.Services.GetRequiredService<IMessageStore>(), catalog.View(Name, "totals"), cancellationToken);
            await host.StopAsync(cancellationToken);
            if (Verify(rows, events, streams) is { } error)
            {
                throw new InvalidOperationException($"The rebuilt projection is wrong: {error}");
            }

            return new RebuildFigures(events, streams, batch, Math.Round(events / appendSeconds), Math.Round(built.EventsPerSecond), Math.Round(events / seconds), Math.Round(seconds, 2));
        }
        finally
        {
            await BenchStores.DeleteAsync(postgres, location);
        }
    }

    /// <summary>
    /// What is wrong with the rebuilt rows (stream to events and amount) for <paramref name="events"/> events over
    /// <paramref name="streams"/> streams: a stream missing, one that should not be there, a wrong count or sum;
    /// <c>null</c> when nothing is. Names at most three streams, then how many in all.
    /// </summary>
    public static string? Verify(IReadOnlyDictionary<string, (long Events, long Amount)> rows, int events, int streams)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var expected = new Dictionary<string, (long Events, long Amount)>(StringComparer.Ordinal);
        for (var i = 0; i < events; i++)
        {
            var stream = StreamOf(i % streams);
            var (count, amount) = expected.GetValueOrDefault(stream);
            expected[stream] = (count + 1, amount + Amount(i));
        }

        var problems = new List<string>();
        foreach (var (stream, want) in expected.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            if (!rows.TryGetValue(stream, out var got))
            {
                problems.Add($"{stream} is missing");
            }
            else if (got != want)
            {
                problems.Add($"{stream} has {got.Events} events summing to {got.Amount}, not {want.Events} summing to {want.Amount}");
            }
        }

        problems.AddRange(rows.Keys.Where(k => !expected.ContainsKey(k)).Order(StringComparer.Ordinal).Select(k => $"{k} should not be there"));
        return problems.Count == 0 ? null
            : string.Join("; ", problems.Take(3)) + (problems.Count > 3 ? $" ({problems.Count} streams wrong in all)" : "");
    }

    static async Task<ProjectionVersionStatus?> StatusAsync(ProjectionCatalog catalog, CancellationToken cancellationToken)
    {
        var versions = await catalog.ListAsync(cancellationToken);
        return versions.Count == 0 ? null : versions[0];
    }

    static string StreamOf(int stream) => "acct-" + stream.ToString(CultureInfo.InvariantCulture);

    static int Amount(int number) => (number % 100) + 1;

    static Envelope Event(int number) => new()
    {
        MessageId = Guid.NewGuid(),
        MessageType = "bench.deposited@1",
        CorrelationId = "deposit-" + number.ToString(CultureInfo.InvariantCulture),
        SentAt = DateTimeOffset.UnixEpoch.AddSeconds(number),
        Body = Encoding.UTF8.GetBytes($"{{\"amount\":{Amount(number)}}}"),
    };

    /// <summary>A host on the run's store; with <paramref name="batch"/>, running the projection with batches that size.</summary>
    static IHost Build(string? postgres, string location, int? batch)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddConverge(o =>
        {
            BenchStores.Use(o, postgres, location, SqliteDurability.Full);
            o.Messages.Register<Deposited>("bench.deposited");
            if (batch is { } size)
            {
                o.AddProjection<StreamTotalsProjection>(Name, 1, p => p.BatchSize = size);
            }
        });
        return builder.Build();
    }

    static async Task<Dictionary<string, (long Events, long Amount)>> ReadAsync(IMessageStore store, string view, CancellationToken cancellationToken)
    {
        await using var connection = await store.Database().OpenReadConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = $"SELECT stream, events, amount FROM {view}";
        var rows = new Dictionary<string, (long, long)>(StringComparer.Ordinal);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            rows[reader.GetString(0)] = (Convert.ToInt64(reader.GetValue(1), CultureInfo.InvariantCulture), Convert.ToInt64(reader.GetValue(2), CultureInfo.InvariantCulture));
        }

        return rows;
    }
}
