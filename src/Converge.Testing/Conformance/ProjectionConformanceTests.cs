using System.Collections.Concurrent;
using System.Data.Common;
using Converge.Projections;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// Projections on a store's database: a first version built from the log and made live; a second built beside it,
/// refused a switch while it builds, compared, switched to in one transaction; the old one rebuilt and dropped; a
/// failing batch retried and never skipped. A store on a database derives one class with its
/// <see cref="DatabaseConformanceStore"/>.
/// </summary>
public abstract class ProjectionConformanceTests : StoreConformanceBase
{
    /// <summary>Runs the suite on <paramref name="store"/>.</summary>
    /// <param name="store">The store under test; the suite disposes it.</param>
    protected ProjectionConformanceTests(DatabaseConformanceStore store)
        : base(store)
    {
    }

    /// <summary>Keys whose events the conformance projections fail on, until removed.</summary>
    static readonly ConcurrentDictionary<string, bool> FailingKeys = new(StringComparer.Ordinal);

    /// <summary>The whole life of a projection: build, live, a new version beside, compare, switch, rebuild, drop.</summary>
    [Fact]
    public async Task A_new_version_is_built_beside_the_live_one_compared_switched_and_the_old_one_dropped()
    {
        await using (var sender = await StartAsync("projections", o => o.RunConsumers = false))
        {
            foreach (var key in new[] { "a", "a", "b" })
            {
                await sender.Bus.PublishAsync("s-" + key, new ConformanceEvent(key));
            }
        }

        await using (var first = await StartAsync("projections", o =>
        {
            o.PollInterval = TimeSpan.FromMilliseconds(20);
            o.AddProjection<CountsProjection>("counts", 1);
        }))
        {
            var catalog = first.Services.GetRequiredService<ProjectionCatalog>();
            await WaitForAsync(async () => await catalog.GetLiveVersionAsync("counts", CancellationToken.None) == 1);
            Assert.Equal(["a=2", "b=1"], await ReadViewAsync(first, catalog.View("counts", "counts")));
            await InTransactionAsync(first.Store, t => t.ConsumerGroups().SetConsumerGroupPausedAsync("projection:counts@2", true, CancellationToken.None));
        }

        await using var host = await StartAsync("projections", o =>
        {
            o.PollInterval = TimeSpan.FromMilliseconds(20);
            o.AddProjection<CountsProjection>("counts", 1);
            o.AddProjection<DoubledCountsProjection>("counts", 2);
        });
        var projections = host.Services.GetRequiredService<ProjectionCatalog>();
        await WaitForAsync(async () => (await projections.ListAsync(CancellationToken.None)).Any(v => v.Version == 2));
        var refused = await projections.SwitchAsync("counts", 2, CancellationToken.None);
        Assert.False(refused.Switched);
        Assert.Contains("still building", refused.Reason, StringComparison.Ordinal);

        await host.Bus.PublishAsync("s-c", new ConformanceEvent("c"));
        await InTransactionAsync(host.Store, t => t.ConsumerGroups().SetConsumerGroupPausedAsync("projection:counts@2", false, CancellationToken.None));
        await WaitForAsync(async () => (await projections.ListAsync(CancellationToken.None)).All(v => v.State != ProjectionState.Building && v.Position == 4));
        Assert.Equal(["a=2", "b=1", "c=1"], await ReadViewAsync(host, projections.View("counts", "counts")));

        var compared = await projections.CompareAsync("counts", 1, 2, 10, CancellationToken.None);
        var table = Assert.Single(compared.Tables);
        Assert.False(compared.Same);
        Assert.Equal((3L, 3L), (table.FromRows!.Value, table.ToRows!.Value));
        Assert.Contains(table.OnlyInFrom, row => row.Contains("key=a", StringComparison.Ordinal) && row.Contains("n=2", StringComparison.Ordinal));
        Assert.Contains(table.OnlyInTo, row => row.Contains("key=a", StringComparison.Ordinal) && row.Contains("n=4", StringComparison.Ordinal));

        var switched = await projections.SwitchAsync("counts", 2, CancellationToken.None);
        Assert.True(switched.Switched, switched.Reason);
        Assert.Equal(1, switched.Previous);
        Assert.Equal(2, await projections.GetLiveVersionAsync("counts", CancellationToken.None));
        Assert.Equal(["a=4", "b=2", "c=2"], await ReadViewAsync(host, projections.View("counts", "counts")));
        Assert.Equal(ProjectionState.Retired, (await projections.ListAsync(CancellationToken.None)).Single(v => v.Version == 1).State);
        await Assert.ThrowsAsync<InvalidOperationException>(() => projections.DropAsync("counts", 2, CancellationToken.None).AsTask());
        await Assert.ThrowsAsync<InvalidOperationException>(() => projections.RebuildAsync("counts", 2, CancellationToken.None).AsTask());

        await projections.RebuildAsync("counts", 1, CancellationToken.None);
        await WaitForAsync(async () => (await projections.ListAsync(CancellationToken.None)).Single(v => v.Version == 1) is { State: ProjectionState.Built, Position: 4 });
        Assert.True((await projections.CompareAsync("counts", 1, 1, 10, CancellationToken.None)).Same);

        await projections.DropAsync("counts", 1, CancellationToken.None);
        var dropped = (await projections.ListAsync(CancellationToken.None)).Single(v => v.Version == 1);
        Assert.Equal(ProjectionState.Dropped, dropped.State);
        Assert.Null(await host.Store.GetConsumerGroupAsync("projection:counts@1", CancellationToken.None));
        await Assert.ThrowsAnyAsync<DbException>(() => ReadViewAsync(host, host.Store.Database().TableName("counts_v1_counts")));
        Assert.Equal(["a=4", "b=2", "c=2"], await ReadViewAsync(host, projections.View("counts", "counts")));
    }

    /// <summary>A batch that fails is rolled back and tried again, never skipped; the failure shows in the catalogue.</summary>
    [Fact]
    public async Task A_failing_batch_is_retried_and_never_skipped()
    {
        var bad = "bad-" + Guid.NewGuid().ToString("N");
        FailingKeys[bad] = true;
        await using var host = await StartAsync("failing", o =>
        {
            o.PollInterval = TimeSpan.FromMilliseconds(20);
            o.AddProjection<CountsProjection>("counts", 1, p => p.BatchSize = 1);
        });
        var catalog = host.Services.GetRequiredService<ProjectionCatalog>();
        await host.Bus.PublishAsync("s", new ConformanceEvent("ok"));
        await host.Bus.PublishAsync("s", new ConformanceEvent(bad));
        await host.Bus.PublishAsync("s", new ConformanceEvent("ok"));

        await WaitForAsync(async () => (await catalog.ListAsync(CancellationToken.None)).SingleOrDefault() is { FailedAttempts: >= 2, Position: 1 });
        Assert.Contains("refuses", (await catalog.ListAsync(CancellationToken.None)).Single().LastError, StringComparison.Ordinal);

        FailingKeys.TryRemove(bad, out _);
        await WaitForAsync(async () => (await catalog.ListAsync(CancellationToken.None)).SingleOrDefault() is { Position: 3, FailedAttempts: 0, State: ProjectionState.Live });
        Assert.Equal([bad + "=1", "ok=2"], await ReadViewAsync(host, catalog.View("counts", "counts")));
    }

    async Task<List<string>> ReadViewAsync(ConvergeTestHost host, string view)
    {
        await using var connection = await ((DatabaseConformanceStore)Target).OpenConnectionAsync(host.Store);
        await using var command = connection.CreateCommand();
        command.CommandText = $"SELECT key, n FROM {view} ORDER BY key";
        var rows = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            rows.Add($"{reader.GetString(0)}={Convert.ToInt64(reader.GetValue(1), System.Globalization.CultureInfo.InvariantCulture)}");
        }

        return rows;
    }

    /// <summary>Version 1: events counted per key, aggregated per batch and written once per key.</summary>
    public class CountsProjection : IProjection
    {
        /// <inheritdoc />
        public IReadOnlyList<string> Tables { get; } = ["counts"];

        /// <inheritdoc />
        public IReadOnlyList<Type> Events { get; } = [typeof(ConformanceEvent)];

        /// <summary>What one event adds to its key.</summary>
        protected virtual long Weight => 1;

        /// <inheritdoc />
        public async ValueTask CreateTablesAsync(ProjectionContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(context);
            await context.Database.ExecuteAsync($"CREATE TABLE {context.Table("counts")} (key text PRIMARY KEY, n bigint NOT NULL)", [], cancellationToken);
        }

        /// <inheritdoc />
        public async ValueTask ApplyAsync(IReadOnlyList<ProjectedEvent> events, ProjectionContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(events);
            ArgumentNullException.ThrowIfNull(context);
            var counts = new Dictionary<string, long>(StringComparer.Ordinal);
            foreach (var projected in events)
            {
                var key = ((ConformanceEvent)projected.Message).Key;
                if (FailingKeys.ContainsKey(key))
                {
                    throw new InvalidOperationException($"The projection refuses '{key}' for now.");
                }

                counts[key] = counts.GetValueOrDefault(key) + Weight;
            }

            foreach (var (key, n) in counts)
            {
                await context.Database.ExecuteAsync(
                    $"INSERT INTO {context.Table("counts")} AS c (key, n) VALUES (@key, @n) ON CONFLICT (key) DO UPDATE SET n = c.n + excluded.n",
                    [new("@key", key), new("@n", n)],
                    cancellationToken);
            }
        }
    }

    /// <summary>Version 2: the same table, each event counted twice, so the versions differ.</summary>
    public sealed class DoubledCountsProjection : CountsProjection
    {
        /// <inheritdoc />
        protected override long Weight => 2;
    }
}
