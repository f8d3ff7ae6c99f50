using System.Text.Json;
using Converge.Bench;

namespace Converge.Cli.Tests;

public sealed class BenchTests
{
    [Fact]
    public async Task Bench_messages_reports_verified_figures_as_json()
    {
        var workingSetBefore = Environment.WorkingSet / (1024.0 * 1024.0);
        var result = await Cli.RunAsync("bench", "messages", "--count", "300", "--warmup", "0", "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(300, json.GetProperty("messages").GetInt32());
        Assert.True(json.GetProperty("seconds").GetDouble() > 0);
        Assert.True(json.GetProperty("per_second").GetDouble() > 0);
        var p50 = json.GetProperty("p50_ms").GetDouble();
        var p99 = json.GetProperty("p99_ms").GetDouble();
        var max = json.GetProperty("max_ms").GetDouble();
        Assert.True(p50 > 0 && p50 <= p99 && p99 <= max, $"p50 {p50}, p99 {p99}, max {max}");
        Assert.Equal(JsonValueKind.Null, json.GetProperty("rate").ValueKind);
        Assert.Equal(256, json.GetProperty("batch_size").GetInt32());
        Assert.Equal("full", json.GetProperty("durability").GetString());
        Assert.Equal(1, json.GetProperty("runs").GetInt32());
        Assert.True(json.GetProperty("verified").GetBoolean());
        AssertPeakMemory(json, workingSetBefore);
    }

    [Fact]
    public async Task Bench_messages_at_a_fixed_rate_reports_the_median_and_each_run()
    {
        using var temp = new TempFolder();
        var db = temp.File("bench.db");

        var result = await Cli.RunAsync("bench", "messages", "--count", "200", "--rate", "2000", "--runs", "2", "--batch-size", "50", "--durability", "normal", "--warmup", "0", "--db", db, "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(2000, json.GetProperty("rate").GetDouble());
        Assert.Equal(2, json.GetProperty("runs").GetInt32());
        Assert.Equal(50, json.GetProperty("batch_size").GetInt32());
        Assert.Equal("normal", json.GetProperty("durability").GetString());
        var runs = json.GetProperty("per_second_runs").EnumerateArray().Select(e => e.GetDouble()).ToList();
        Assert.Equal(2, runs.Count);
        Assert.Equal((runs[0] + runs[1]) / 2, json.GetProperty("per_second").GetDouble(), 0.2);
        Assert.True(File.Exists(db), "the last run's store is kept when --db is given");

        // The kept store is a Converge store the other commands can read.
        var status = await Cli.RunAsync("status", "--db", db, "--json");
        Assert.Equal(200, status.Json().GetProperty("inbox_records").GetInt64());
    }

    [Fact]
    public async Task Bench_jobs_reports_drain_and_enqueue_rates_as_json()
    {
        var result = await Cli.RunAsync("bench", "jobs", "--count", "2000", "--runs", "1", "--warmup", "0", "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(2000, json.GetProperty("jobs").GetInt32());
        Assert.True(json.GetProperty("jobs_per_second").GetDouble() > 0);
        Assert.True(json.GetProperty("seconds").GetDouble() > 0);
        Assert.True(json.GetProperty("enqueue_per_second").GetDouble() > 0);
        Assert.True(json.GetProperty("enqueue_seconds").GetDouble() > 0);
        Assert.Equal(2000 / json.GetProperty("seconds").GetDouble(), json.GetProperty("jobs_per_second").GetDouble(), 2000 * 0.01 / json.GetProperty("seconds").GetDouble() + 1);
        Assert.Equal(64, json.GetProperty("concurrency").GetInt32());
        Assert.Equal(256, json.GetProperty("batch_size").GetInt32());
        Assert.Equal(1000, json.GetProperty("enqueue_batch_size").GetInt32());
        Assert.Equal("full", json.GetProperty("durability").GetString());
        Assert.Equal(1, json.GetProperty("runs").GetInt32());
        Assert.Equal(JsonValueKind.Null, json.GetProperty("jobs_per_second_runs").ValueKind);
        Assert.Equal(JsonValueKind.Null, json.GetProperty("enqueue_per_second_runs").ValueKind);
        Assert.True(json.GetProperty("verified").GetBoolean());
        Assert.Contains("run 1/1: enqueued 2000 jobs", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bench_jobs_with_options_reports_each_run_and_keeps_the_store()
    {
        using var temp = new TempFolder();
        var db = temp.File("jobs.db");

        var result = await Cli.RunAsync("bench", "jobs", "--count", "500", "--runs", "2", "--warmup", "100", "--concurrency", "8", "--batch-size", "32", "--durability", "normal", "--db", db, "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(8, json.GetProperty("concurrency").GetInt32());
        Assert.Equal(32, json.GetProperty("batch_size").GetInt32());
        Assert.Equal("normal", json.GetProperty("durability").GetString());
        Assert.Equal(2, json.GetProperty("jobs_per_second_runs").GetArrayLength());
        Assert.Equal(2, json.GetProperty("enqueue_per_second_runs").GetArrayLength());
        Assert.Contains("warm-up: 100 jobs", result.Error, StringComparison.Ordinal);
        var status = await Cli.RunAsync("status", "--db", db, "--json");
        Assert.Equal(500, status.Json().GetProperty("inbox_records").GetInt64());
    }

    [Fact]
    public async Task Bench_sagas_with_step_timeouts_reports_verified_figures_as_json()
    {
        var result = await Cli.RunAsync("bench", "sagas", "--count", "200", "--warmup", "0", "--timeouts", "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(200, json.GetProperty("sagas").GetInt32());
        Assert.True(json.GetProperty("per_second").GetDouble() > 0);
        var p50 = json.GetProperty("p50_ms").GetDouble();
        Assert.True(p50 > 0 && p50 <= json.GetProperty("p99_ms").GetDouble(), result.ToString());
        Assert.True(json.GetProperty("timeouts").GetBoolean());
        Assert.True(json.GetProperty("verified").GetBoolean());
        Assert.Contains("run 1/1: 200 sagas in ", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bench_refuses_to_overwrite_an_existing_file()
    {
        using var temp = new TempFolder();
        var db = temp.File("precious.db");
        await File.WriteAllTextAsync(db, "keep me");

        var result = await Cli.RunAsync("bench", "messages", "--count", "10", "--db", db, "--json");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("already exists", result.Error, StringComparison.Ordinal);
        Assert.Equal("keep me", await File.ReadAllTextAsync(db));
    }

    [Fact]
    public async Task Bench_ceiling_reports_its_fields()
    {
        var workingSetBefore = Environment.WorkingSet / (1024.0 * 1024.0);
        var result = await Cli.RunAsync("bench", "ceiling", "--commits", "50", "--rows", "2000", "--batch-rows", "500", "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.True(json.GetProperty("single_row_commits_per_second").GetDouble() > 0);
        Assert.True(json.GetProperty("batched_rows_per_second").GetDouble() > 0);
        Assert.Equal(500, json.GetProperty("batch_rows").GetInt32());
        Assert.Equal("wal", json.GetProperty("journal_mode").GetString());
        Assert.Equal("full", json.GetProperty("synchronous").GetString());
        AssertPeakMemory(json, workingSetBefore);
    }

    [Fact]
    public async Task Bench_log_reports_append_and_http_rates_as_json()
    {
        var workingSetBefore = Environment.WorkingSet / (1024.0 * 1024.0);
        var result = await Cli.RunAsync("bench", "log", "--count", "500", "--single", "20", "--clients", "3", "--rebuild-events", "3000", "--rebuild-streams", "100", "--rebuild-batch", "500", "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(("sqlite", 520, 3), (json.GetProperty("store").GetString(), json.GetProperty("events").GetInt32(), json.GetProperty("clients").GetInt32()));
        foreach (var rate in new[] { "append_single_per_second", "append_batched_per_second", "ndjson_per_second", "sse_per_second", "clients_total_per_second" })
        {
            Assert.True(json.GetProperty(rate).GetDouble() > 0, rate);
        }

        Assert.InRange(json.GetProperty("bytes_per_event").GetInt64(), 100, 1000);
        var rebuild = json.GetProperty("rebuild");
        Assert.Equal((3000, 100, 500), (rebuild.GetProperty("events").GetInt32(), rebuild.GetProperty("streams").GetInt32(), rebuild.GetProperty("batch_size").GetInt32()));
        foreach (var rate in new[] { "append_per_second", "per_second", "wall_per_second", "seconds" })
        {
            Assert.True(rebuild.GetProperty(rate).GetDouble() > 0, rate);
        }

        AssertPeakMemory(json, workingSetBefore);
    }

    [Fact]
    public void Bench_log_rebuild_verification_reports_a_wrong_sum_a_wrong_count_a_missing_and_an_unexpected_row()
    {
        // 10 events over 3 streams: event i to acct-(i % 3), amount i % 100 + 1.
        Dictionary<string, (long Events, long Amount)> Rows() => new(StringComparer.Ordinal) { ["acct-0"] = (4, 22), ["acct-1"] = (3, 15), ["acct-2"] = (3, 18) };
        Assert.Null(RebuildBench.Verify(Rows(), 10, 3));

        var wrongSum = Rows();
        wrongSum["acct-1"] = (3, 16);
        Assert.Equal("acct-1 has 3 events summing to 16, not 3 summing to 15", RebuildBench.Verify(wrongSum, 10, 3));

        var wrongCount = Rows();
        wrongCount["acct-0"] = (3, 22);
        Assert.Equal("acct-0 has 3 events summing to 22, not 4 summing to 22", RebuildBench.Verify(wrongCount, 10, 3));

        var missing = Rows();
        missing.Remove("acct-2");
        Assert.Equal("acct-2 is missing", RebuildBench.Verify(missing, 10, 3));

        var extra = Rows();
        extra["acct-3"] = (1, 1);
        Assert.Equal("acct-3 should not be there", RebuildBench.Verify(extra, 10, 3));

        Assert.Equal("acct-0 is missing; acct-1 is missing; acct-2 is missing", RebuildBench.Verify(new Dictionary<string, (long, long)>(), 10, 3));
        Assert.Equal("acct-0 is missing; acct-1 is missing; acct-2 is missing (10 streams wrong in all)", RebuildBench.Verify(new Dictionary<string, (long, long)>(), 10, 10));
    }

    [Fact]
    public void Bench_log_verification_reports_a_missing_a_repeated_and_a_misplaced_event()
    {
        Assert.Null(LogBench.Verify([1, 2, 3, 4], 4));
        Assert.Equal("position 3 is missing (#3 was 4)", LogBench.Verify([1, 2, 4], 4));
        Assert.Equal("position 2 was delivered twice (again at #3)", LogBench.Verify([1, 2, 2, 3, 4], 4));
        Assert.Equal("position 2 came out of order (at #3)", LogBench.Verify([1, 3, 2, 4], 4));
        Assert.Equal("3 of 4 events were delivered", LogBench.Verify([1, 2, 3], 4));
    }

    /// <summary>
    /// The peak working set a bench reports is this process's (the CLI runs in-process here): at least what the
    /// process held before the bench ran, and not more than the machine has.
    /// </summary>
    static void AssertPeakMemory(JsonElement json, double workingSetBeforeMb)
    {
        var peak = json.GetProperty("peak_working_set_mb").GetDouble();
        var machineMb = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / (1024.0 * 1024.0);
        Assert.True(peak >= Math.Floor(workingSetBeforeMb) && peak <= machineMb, $"peak working set {peak} MB; {workingSetBeforeMb:0.0} MB before the bench, {machineMb:0} MB on the machine");
    }
}
