using Converge.Bench;
using Microsoft.AspNetCore.Http;

namespace Converge.Cli.Tests;

/// <summary>
/// <c>converge bench dashboard</c> on a small store: every page measured and reported, and each of its checks (a page
/// answering other than 200, a page without its timing, a median over the budget, a growing heap) fails when its
/// fault is planted.
/// </summary>
public sealed class DashboardBenchTests
{
    static readonly string[] Pages =
    [
        "overview", "sagas", "sagas, state stuck", "sagas, definition refund", "sagas, 6th page", "saga", "flow of a transaction",
        "jobs", "jobs, succeeded", "jobs, queue jobs-1", "jobs, batch batch-0", "jobs, 6th page", "job", "batch", "recurring jobs",
        "dead letters", "dead letters, source payments", "dead letters, reason permanent-failure", "dead letters, 6th page", "dead letter",
        "log", "log tail", "audit",
    ];

    static DashboardBenchSettings Small(Func<HttpContext, Func<Task>, Task>? fault = null) => new()
    {
        Jobs = 2000,
        Sagas = 400,
        DeadLetters = 400,
        Requests = 2,
        Fault = fault,
    };

    [Fact]
    public async Task Bench_dashboard_reports_every_pages_times_and_the_memory_as_json()
    {
        using var temp = new TempFolder();
        var db = temp.File("dashboard.db");

        var result = await Cli.RunAsync("bench", "dashboard", "--jobs", "2000", "--sagas", "400", "--dead-letters", "400", "--requests", "2", "--db", db, "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal("sqlite", json.GetProperty("store").GetString());
        Assert.Equal(2000, json.GetProperty("jobs").GetInt32());
        Assert.Equal(400, json.GetProperty("sagas").GetInt32());
        Assert.Equal(400, json.GetProperty("dead_letters").GetInt32());
        Assert.Equal(2, json.GetProperty("requests").GetInt32());
        Assert.Equal(300, json.GetProperty("budget_ms").GetDouble());
        Assert.True(json.GetProperty("seed_seconds").GetDouble() > 0);
        var pages = json.GetProperty("pages").EnumerateArray().ToList();
        Assert.Equal(Pages, pages.Select(p => p.GetProperty("page").GetString()));
        foreach (var page in pages)
        {
            var name = page.GetProperty("page").GetString();
            Assert.StartsWith("/converge", page.GetProperty("path").GetString(), StringComparison.Ordinal);
            Assert.Equal(2, page.GetProperty("requests").GetInt32());
            var serverMedian = page.GetProperty("server_median_ms").GetDouble();
            var serverP99 = page.GetProperty("server_p99_ms").GetDouble();
            var clientMedian = page.GetProperty("client_median_ms").GetDouble();
            var clientP99 = page.GetProperty("client_p99_ms").GetDouble();
            Assert.True(serverMedian >= 0 && serverMedian <= serverP99 && serverP99 <= 300, $"{name}: server {serverMedian} / {serverP99}");
            Assert.True(clientMedian > 0 && clientMedian <= clientP99, $"{name}: client {clientMedian} / {clientP99}");
            Assert.True(page.GetProperty("bytes").GetInt32() > 0, name);
        }

        // Deep pages are found by following Next five times: they start after a cursor.
        Assert.Contains("after=", pages.Single(p => p.GetProperty("page").GetString() == "jobs, 6th page").GetProperty("path").GetString(), StringComparison.Ordinal);
        var slowest = pages.MaxBy(p => p.GetProperty("server_median_ms").GetDouble());
        Assert.Equal(slowest.GetProperty("server_median_ms").GetDouble(), json.GetProperty("slowest_server_median_ms").GetDouble());
        Assert.Equal(slowest.GetProperty("page").GetString(), json.GetProperty("slowest_page").GetString());

        var before = json.GetProperty("working_set_before_seed_mb").GetDouble();
        var afterRequests = json.GetProperty("working_set_after_requests_mb").GetDouble();
        var peak = json.GetProperty("peak_working_set_mb").GetDouble();
        Assert.True(before > 0 && json.GetProperty("working_set_after_seed_mb").GetDouble() > 0 && afterRequests > 0);
        Assert.True(peak >= Math.Floor(Math.Max(before, afterRequests)), $"peak {peak} MB; {before} before, {afterRequests} after");
        Assert.True(json.GetProperty("heap_after_first_round_mb").GetDouble() > 0);
        Assert.True(json.GetProperty("heap_after_last_round_mb").GetDouble() > 0);
        Assert.True(json.GetProperty("verified").GetBoolean());
        Assert.True(File.Exists(db), "the store is kept when --db is given");
        Assert.Contains("seeded in", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bench_dashboard_fails_when_a_pages_median_is_over_the_budget()
    {
        var result = await Cli.RunAsync("bench", "dashboard", "--jobs", "2000", "--sagas", "400", "--dead-letters", "400", "--requests", "2", "--budget-ms", "0", "--json");

        Assert.Equal(1, result.ExitCode);
        Assert.Empty(result.Out);
        Assert.Contains("bench failed, figures withheld: verification failed:", result.Error, StringComparison.Ordinal);
        Assert.Matches(@"sagas \(/converge/sagas\) took \d+\.\d ms on the server \(median of 2\); the budget is 0 ms", result.Error);
    }

    [Fact]
    public async Task Bench_dashboard_fails_when_a_page_answers_other_than_200()
    {
        var failure = await Assert.ThrowsAsync<BenchVerificationException>(() => DashboardBench.RunAsync(
            Small((http, next) =>
            {
                if (http.Request.Path == "/converge/jobs/recurring")
                {
                    http.Response.StatusCode = StatusCodes.Status500InternalServerError;
                    return Task.CompletedTask;
                }

                return next();
            }),
            TextWriter.Null,
            CancellationToken.None));

        Assert.Contains("recurring jobs (/converge/jobs/recurring) answered 500 in round 1; recurring jobs (/converge/jobs/recurring) answered 500 in round 2", failure.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("overview", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bench_dashboard_fails_when_a_page_sends_no_server_timing()
    {
        var failure = await Assert.ThrowsAsync<BenchVerificationException>(() => DashboardBench.RunAsync(
            Small((http, next) =>
            {
                if (http.Request.Path == "/converge/audit")
                {
                    http.Response.OnStarting(() =>
                    {
                        http.Response.Headers.Remove("Server-Timing");
                        return Task.CompletedTask;
                    });
                }

                return next();
            }),
            TextWriter.Null,
            CancellationToken.None));

        Assert.Contains("audit (/converge/audit) sent no Server-Timing page;dur in round 1", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bench_dashboard_fails_when_the_heap_grows_with_the_requests()
    {
        // Every request keeps 4 MB alive: 23 pages later, the heap after the second round is about 92 MB larger.
        var kept = new List<byte[]>();
        var failure = await Assert.ThrowsAsync<BenchVerificationException>(() => DashboardBench.RunAsync(
            Small((http, next) =>
            {
                lock (kept)
                {
                    kept.Add(new byte[4 * 1024 * 1024]);
                }

                return next();
            }),
            TextWriter.Null,
            CancellationToken.None));

        Assert.Matches(@"the GC heap grew from \d+\.\d MB after round 1 to \d+\.\d MB after round 2; at most 64 MB of growth is allowed", failure.Message);
        GC.KeepAlive(kept);
    }

    [Fact]
    public async Task Bench_dashboard_on_postgresql_seeds_the_schema_it_is_given_and_keeps_it()
    {
        var schema = PostgresStore.UniqueSchema();
        try
        {
            await RunOnPostgreSqlAsync(schema);
        }
        finally
        {
            await using var connection = new Npgsql.NpgsqlConnection(PostgresStore.ConnectionString);
            await connection.OpenAsync();
            await using var drop = new Npgsql.NpgsqlCommand($"DROP SCHEMA IF EXISTS {schema} CASCADE", connection);
            await drop.ExecuteNonQueryAsync();
        }
    }

    static async Task RunOnPostgreSqlAsync(string schema)
    {
        var result = await Cli.RunAsync("bench", "dashboard", "--postgres", PostgresStore.ConnectionString, "--schema", schema, "--jobs", "2000", "--sagas", "400", "--dead-letters", "400", "--requests", "2", "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal("postgresql", json.GetProperty("store").GetString());
        Assert.Equal(Pages, json.GetProperty("pages").EnumerateArray().Select(p => p.GetProperty("page").GetString()));
        Assert.True(json.GetProperty("verified").GetBoolean());
        var status = await Cli.RunAsync("status", "--postgres", PostgresStore.ConnectionString, "--schema", schema, "--json");
        Assert.Equal(2000, status.Json().GetProperty("inbox_records").GetInt64());

        var again = await Cli.RunAsync("bench", "dashboard", "--postgres", PostgresStore.ConnectionString, "--schema", schema, "--jobs", "2000", "--sagas", "400", "--dead-letters", "400", "--requests", "2");
        Assert.Equal(2, again.ExitCode);
        Assert.Contains($"Schema {schema} already exists", again.Error, StringComparison.Ordinal);
    }
}
