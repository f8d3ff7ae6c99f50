using System.Text.Json;

namespace Converge.Cli.Tests;

[Collection(WorkerProcessRuns.Name)]
public sealed class DemoShopTests
{
    [Theory]
    [InlineData("orchestrated")]
    [InlineData("choreographed")]
    public async Task The_shop_settles_every_order_without_violations_despite_injected_faults(string style)
    {
        using var folder = new TempFolder();
        var db = Path.Combine(folder.Path, "shop.db");

        var result = await Cli.RunAsync("demo", "shop", "--orders", "300", "--fail-rate", "0.4", "--style", style, "--db", db, "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var report = result.Json();
        Assert.Equal(300, report.GetProperty("orders").GetInt32());
        Assert.Equal(0, report.GetProperty("in_flight").GetInt32());
        Assert.Equal(0, report.GetProperty("violations").GetInt32());
        Assert.Equal(0, report.GetProperty("double_charges").GetInt32());
        Assert.Equal(0, report.GetProperty("lost_charges").GetInt32());
        Assert.False(report.GetProperty("deadline_reached").GetBoolean());
        Assert.Equal(0, report.GetProperty("sagas_not_ended").GetInt32());
        Assert.Equal(0, report.GetProperty("messages_queued").GetInt64());
        Assert.Equal(0, report.GetProperty("dead_letters").GetInt64());
        Assert.Equal(300, report.GetProperty("completed").GetInt32() + report.GetProperty("compensated").GetInt32() + report.GetProperty("rejected").GetInt32());
        Assert.True(report.GetProperty("faults_injected").GetInt64() > 0, result.ToString());
        Assert.True(report.GetProperty("completed").GetInt32() > 0, result.ToString());
        if (style == "orchestrated")
        {
            Assert.True(report.GetProperty("compensated").GetInt32() > 0, result.ToString());
            Assert.True(report.GetProperty("timeouts_fired").GetInt64() > 0, result.ToString());
            Assert.True(report.GetProperty("replies_ignored").GetInt64() > 0, result.ToString());
        }
    }

    [Fact]
    public async Task With_a_process_per_service_killed_and_restarted_the_shop_settles_every_order_without_violations()
    {
        using var folder = new TempFolder();
        var db = Path.Combine(folder.Path, "shop.db");

        var result = await Cli.RunAsync("demo", "shop", "--orders", "200", "--fail-rate", "0.3", "--processes", "--kill", "2", "--db", db, "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var report = result.Json();
        Assert.Equal(0, report.GetProperty("in_flight").GetInt32());
        Assert.Equal(0, report.GetProperty("violations").GetInt32());
        Assert.True(report.GetProperty("completed").GetInt32() > 0, result.ToString());
        foreach (var service in new[] { "customers", "payments", "shipping" })
        {
            Assert.Contains(service + ": process ", result.Error, StringComparison.Ordinal);
        }

        Assert.Equal(2, report.GetProperty("kills").GetInt32());
        Assert.Equal(3, report.GetProperty("processes").GetInt32());
        Assert.Equal("sqlite", report.GetProperty("store").GetString());
        Assert.Contains("kill 2: ", result.Error, StringComparison.Ordinal);
        Assert.Contains("exit code 137", result.Error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_shop_that_cannot_settle_by_its_deadline_reports_what_is_in_flight_and_fails(bool processes)
    {
        using var folder = new TempFolder();
        var db = Path.Combine(folder.Path, "shop.db");

        // Every step's timeout is 2 s and injected delays hold replies for 3 s: 0.5 s is too short for any run.
        string[] arguments = ["demo", "shop", "--orders", "60", "--fail-rate", "1", "--deadline", "0.5", "--db", db, "--json"];
        var result = await Cli.RunAsync(processes ? [.. arguments, "--processes"] : arguments);

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.False(string.IsNullOrWhiteSpace(result.Out), "exit 1 without a report: " + result);
        var report = result.Json();
        Assert.True(report.GetProperty("deadline_reached").GetBoolean(), result.ToString());
        Assert.Equal(0.5, report.GetProperty("deadline_seconds").GetDouble());
        Assert.True(report.GetProperty("in_flight").GetInt32() > 0, result.ToString());
        Assert.True(report.GetProperty("sagas_not_ended").GetInt32() > 0, result.ToString());
        Assert.True(report.GetProperty("messages_queued").GetInt64() > 0, result.ToString());
        Assert.Equal(JsonValueKind.Number, report.GetProperty("dead_letters").ValueKind);
        Assert.Equal(processes ? 3 : 0, report.GetProperty("processes").GetInt32());
        Assert.Contains("deadline: 0.5 s passed with ", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_table_shows_the_in_flight_counts_and_dead_letters_when_the_deadline_passes()
    {
        using var folder = new TempFolder();
        var db = Path.Combine(folder.Path, "shop.db");

        var result = await Cli.RunAsync("demo", "shop", "--orders", "20", "--fail-rate", "1", "--deadline", "0.5", "--db", db);

        Assert.True(result.ExitCode == 1, result.ToString());
        foreach (var row in new[] { "in flight", "sagas not ended", "messages queued", "dead letters", "lost charges", "0.5 s, reached" })
        {
            Assert.Contains(row, result.Out, StringComparison.Ordinal);
        }

        Assert.Contains("the orders did not settle within the deadline of 0.5 s", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_deadline_of_zero_is_refused_with_the_fix()
    {
        var result = await Cli.RunAsync("demo", "shop", "--deadline", "0");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--deadline must be a number of seconds above 0", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Killing_workers_without_worker_processes_is_refused_with_the_fix()
    {
        var result = await Cli.RunAsync("demo", "shop", "--kill", "2");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--kill needs --processes", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_fail_rate_outside_0_to_1_is_refused_with_the_fix()
    {
        var result = await Cli.RunAsync("demo", "shop", "--fail-rate", "2");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--fail-rate must be between 0 and 1", result.Error, StringComparison.Ordinal);
    }
}
