using System.Diagnostics;
using Converge.Jobs;
using Converge.Sagas;
using Converge.Storage;
using Npgsql;
using Xunit.Abstractions;

namespace Converge.PostgreSql.Tests;

/// <summary>
/// The dashboard's listings on a store of dashboard size, with their plans. Opt-in, because seeding takes a while: set
/// CONVERGE_LISTING_SCALE to a number of finished jobs (1000000 for the dashboard's target; sagas and dead letters are
/// a tenth of it); then every listing's plan must read an index, not scan its table. Without it the fact seeds a small
/// store (where the planner rightly prefers scans) and checks that the listings find rows.
/// </summary>
public sealed class PostgreSqlListingScaleTests(ITestOutputHelper output) : IAsyncDisposable
{
    readonly TestDatabase _database = new();

    public ValueTask DisposeAsync() => _database.DisposeAsync();

    [Fact]
    public async Task Listings_answer_from_their_indexes_on_a_seeded_store()
    {
        var atScale = int.TryParse(Environment.GetEnvironmentVariable("CONVERGE_LISTING_SCALE"), out var jobs);
        jobs = atScale ? jobs : 3000;
        var schema = _database.Schema("listing_scale");
        await using var store = new PostgreSqlMessageStore(new PostgreSqlStoreOptions { ConnectionString = TestDatabase.ConnectionStringFor(schema), Schema = schema }, TimeProvider.System);
        var seeding = Stopwatch.StartNew();
        await PostgreSqlSeeder.SeedAsync(store, jobs, jobs / 10, jobs / 10, CancellationToken.None);
        output.WriteLine($"seeded {jobs} finished jobs, {jobs / 10} sagas, {jobs / 10} dead letters in {seeding.Elapsed.TotalSeconds:F1} s");

        var start = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero).UtcTicks;
        long TicksOf(int i) => start + (i / 3 * TimeSpan.TicksPerMillisecond);
        var middle = jobs / 20;
        var sagaCursor = PageCursor.Create(TicksOf(middle), "saga-" + middle.ToString("D8", System.Globalization.CultureInfo.InvariantCulture));
        var deadCursor = PageCursor.CreateNumbered(TicksOf(middle), middle + 1);
        var jobCursor = new JobListPosition(TicksOf(jobs / 2), JobListPosition.InboxSource, 0, "jobs-2", Guid.Empty).ToString();
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

        // The plans, with the parameters a first page binds.
        var s = store.Schema;
        var plans = new (string Name, string Sql, (string, object)[] Parameters)[]
        {
            ("sagas", s.QuerySagas[0], [("t", long.MaxValue), ("id", ""), ("max", 50)]),
            ("sagas stuck", s.QuerySagas[1], [("state", "stuck"), ("t", long.MaxValue), ("id", ""), ("max", 50)]),
            ("sagas of a definition, version, state", s.QuerySagas[7], [("state", "running"), ("definition", "order"), ("version", 2), ("t", long.MaxValue), ("id", ""), ("max", 50)]),
            ("dead letters", s.PageDeadLetters[0], [("t", long.MaxValue), ("id", long.MaxValue), ("max", 51)]),
            ("dead letters of a reason and source", s.PageDeadLetters[3], [("source", "orders"), ("reason", "max-attempts-exceeded"), ("t", long.MaxValue), ("id", long.MaxValue), ("max", 51)]),
            ("succeeded jobs", s.ListInboxJobs[0], [("t", long.MaxValue), ("tie_all", true), ("consumer", ""), ("message_id", Guid.Empty), ("max", 50)]),
            ("succeeded jobs of a queue", s.ListInboxJobs[1], [("queue", "jobs-1"), ("t", long.MaxValue), ("tie_all", true), ("consumer", ""), ("message_id", Guid.Empty), ("max", 50)]),
            ("succeeded jobs of a batch", s.ListInboxJobs[2], [("batch", "batch-0"), ("t", long.MaxValue), ("tie_all", true), ("consumer", ""), ("message_id", Guid.Empty), ("max", 50)]),
        };
        await using var connection = await store.OpenConnectionAsync();
        foreach (var (name, sql, parameters) in plans)
        {
            await using var explain = new NpgsqlCommand("EXPLAIN " + sql, connection);
            foreach (var (parameter, value) in parameters)
            {
                explain.Parameters.AddWithValue(parameter, value);
            }

            var plan = new List<string>();
            await using (var reader = await explain.ExecuteReaderAsync())
            {
                while (await reader.ReadAsync())
                {
                    plan.Add(reader.GetString(0));
                }
            }

            output.WriteLine($"-- {name}{Environment.NewLine}{string.Join(Environment.NewLine, plan)}");
            if (atScale)
            {
                Assert.DoesNotContain(plan, step => step.Contains("Seq Scan", StringComparison.Ordinal) && !step.Contains("job_queues", StringComparison.Ordinal));
            }
        }
    }
}
