using System.Diagnostics;
using Converge.Jobs;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.Data.Sqlite;
using Xunit.Abstractions;

namespace Converge.Sqlite.Tests;

/// <summary>
/// The dashboard's listings on a store of dashboard size. Opt-in, because seeding takes about a minute: set
/// CONVERGE_LISTING_SCALE to a number of finished jobs (1000000 for the dashboard's target; sagas and dead letters are
/// a tenth of it). Without it the fact seeds a small store and checks the same listings, so the seeder stays working.
/// </summary>
public sealed class SqliteListingScaleTests(ITestOutputHelper output) : IDisposable
{
    readonly string _folder = Directory.CreateTempSubdirectory("converge-sqlite-scale-").FullName;

    [Fact]
    public async Task Listings_answer_from_their_indexes_on_a_seeded_store()
    {
        var jobs = int.TryParse(Environment.GetEnvironmentVariable("CONVERGE_LISTING_SCALE"), out var scale) ? scale : 3000;
        var shape = new SeedShape(jobs, jobs / 10, jobs / 10);
        await using var store = new SqliteMessageStore(new SqliteStoreOptions { Path = Path.Combine(_folder, "scale.db") }, TimeProvider.System);
        var seeding = Stopwatch.StartNew();
        await SqliteSeeder.SeedAsync(store, shape, CancellationToken.None);
        output.WriteLine($"seeded {shape.FinishedJobs} finished jobs, {shape.Sagas} sagas, {shape.DeadLetters} dead letters in {seeding.Elapsed.TotalSeconds:F1} s");

        var middle = shape.Sagas / 2;
        var sagaCursor = PageCursor.Create(shape.TicksOf(middle), "saga-" + middle.ToString("D8", System.Globalization.CultureInfo.InvariantCulture));
        var deadCursor = PageCursor.CreateNumbered(shape.TicksOf(shape.DeadLetters / 2), (shape.DeadLetters / 2) + 1);
        var jobCursor = new JobListPosition(shape.TicksOf(jobs / 2), JobListPosition.InboxSource, 0, SeedShape.JobQueue(jobs / 2), Guid.Empty).ToString();
        var listings = new (string Name, Func<Task<int>> List)[]
        {
            ("jobs, newest 50", async () => (await store.ListJobsAsync(new JobQuery(), default)).Count),
            ("jobs succeeded", async () => (await store.ListJobsAsync(new JobQuery { State = JobState.Succeeded }, default)).Count),
            ("jobs succeeded of a queue", async () => (await store.ListJobsAsync(new JobQuery { State = JobState.Succeeded, Queue = "jobs-1" }, default)).Count),
            ("jobs of a batch", async () => (await store.ListJobsAsync(new JobQuery { BatchId = "batch-0" }, default)).Count),
            ("jobs of a queue, page in the middle", async () => (await store.ListJobsAsync(new JobQuery { Queue = "jobs-2", After = jobCursor }, default)).Count),
            ("jobs dead", async () => (await store.ListJobsAsync(new JobQuery { State = JobState.Dead }, default)).Count),
            ("sagas, newest 50", async () => (await store.QuerySagasAsync(new SagaQuery { Max = 50 }, default)).Count),
            ("sagas stuck", async () => (await store.QuerySagasAsync(new SagaQuery { State = SagaState.Stuck, Max = 50 }, default)).Count),
            ("sagas of a definition", async () => (await store.QuerySagasAsync(new SagaQuery { Definition = "refund", Max = 50 }, default)).Count),
            ("sagas of a definition, version and state", async () => (await store.QuerySagasAsync(new SagaQuery { Definition = "order", Version = 2, State = SagaState.Running, Max = 50 }, default)).Count),
            ("sagas of a version (no index of its own)", async () => (await store.QuerySagasAsync(new SagaQuery { Version = 2, Max = 50 }, default)).Count),
            ("sagas, page in the middle", async () => (await store.QuerySagasAsync(new SagaQuery { Max = 50, After = sagaCursor }, default)).Count),
            ("saga counts", async () => (await store.CountSagasAsync(default)).Count),
            ("dead letters, newest 50", async () => (await store.ListDeadLettersAsync(new DeadLetterQuery(), default)).Items.Count),
            ("dead letters of a source", async () => (await store.ListDeadLettersAsync(new DeadLetterQuery { Source = "payments" }, default)).Items.Count),
            ("dead letters of a reason", async () => (await store.ListDeadLettersAsync(new DeadLetterQuery { Reason = DeadLetterReasons.PermanentFailure }, default)).Items.Count),
            ("dead letters of a reason and source", async () => (await store.ListDeadLettersAsync(new DeadLetterQuery { Reason = DeadLetterReasons.MaxAttemptsExceeded, Source = "orders" }, default)).Items.Count),
            ("dead letters of an ordering key", async () => (await store.ListDeadLettersAsync(new DeadLetterQuery { OrderingKey = "customer-40", Source = "orders" }, default)).Items.Count),
            ("dead letters, page in the middle", async () => (await store.ListDeadLettersAsync(new DeadLetterQuery { After = deadCursor }, default)).Items.Count),
            ("dead-letter groups", async () => (await store.GroupDeadLettersAsync(default)).Count),
            ("status (existing)", async () => (await store.GetStatusAsync(default)).Queues.Count),
        };

        foreach (var (name, list) in listings)
        {
            var found = await list();
            var times = new List<double>();
            for (var run = 0; run < 5; run++)
            {
                var watch = Stopwatch.StartNew();
                await list();
                times.Add(watch.Elapsed.TotalMilliseconds);
            }

            times.Sort();
            output.WriteLine($"{name,-50} {found,4} rows  median {times[2],8:F2} ms  worst {times[^1],8:F2} ms");
            Assert.True(found > 0, name + " found nothing");
        }
    }

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(_folder, recursive: true);
    }
}
