using System.Text.Json;

namespace Converge.Cli.Tests;

[Collection(WorkerProcessRuns.Name)]
public sealed class DemoMonthCloseTests
{
    [Fact]
    public async Task A_month_close_settles_every_account_once_skipping_paid_invoices_charging_what_credit_leaves_and_holding_the_rest()
    {
        using var folder = new TempFolder();
        var db = folder.File("billing.db");

        var result = await Cli.RunAsync("demo", "month-close", "--accounts", "300", "--latency", "1", "--period", "2026-11", "--db", db, "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var report = result.Json();
        Assert.Equal("2026-11", report.GetProperty("period").GetString());
        Assert.Equal(300, report.GetProperty("accounts").GetInt64());
        Assert.Equal(300, report.GetProperty("invoiced").GetInt64());
        Assert.Equal(0, report.GetProperty("still_open").GetInt64());
        Assert.Equal(0, report.GetProperty("violations").GetInt64());
        Assert.Equal(0, report.GetProperty("double_charges").GetInt64());
        Assert.Equal(0, report.GetProperty("duplicate_emails").GetInt64());
        Assert.Equal(0, report.GetProperty("lost_charges").GetInt64());
        Assert.Equal(0, report.GetProperty("dead_letters").GetInt64());
        Assert.Equal(0, report.GetProperty("jobs_not_finished").GetInt64());
        Assert.False(report.GetProperty("deadline_reached").GetBoolean());
        Assert.True(report.GetProperty("finance_report").GetBoolean(), result.ToString());
        Assert.True(report.GetProperty("finished").GetBoolean(), result.ToString());

        var charged = report.GetProperty("charged").GetInt64();
        var credited = report.GetProperty("credited").GetInt64();
        var skipped = report.GetProperty("skipped_already_paid").GetInt64();
        var held = report.GetProperty("held").GetInt64();
        Assert.Equal(300, charged + credited + skipped + held);
        Assert.True(charged > 0, result.ToString());
        Assert.True(skipped > 0, "No invoice was found paid since its as-of. " + result);
        Assert.True(credited > 0, "No charge took a credit granted since its as-of into account. " + result);
        Assert.True(held > 0, "No account was held. " + result);
        Assert.True(report.GetProperty("changed_after_as_of").GetInt64() > 0, result.ToString());

        // One receipt per charged or credited invoice, in the account's language.
        Assert.Equal(charged + credited, report.GetProperty("emails").GetInt64());
        var languages = report.GetProperty("emails_by_language");
        Assert.True(languages.GetProperty("en").GetInt64() > 0, result.ToString());
        Assert.True(languages.GetProperty("de").GetInt64() > 0, result.ToString());
        Assert.Equal(report.GetProperty("emails").GetInt64(), languages.EnumerateObject().Sum(l => l.Value.GetInt64()));
    }

    [Fact]
    public async Task Running_again_on_the_same_database_resumes_the_close_and_charges_and_mails_nothing_twice()
    {
        using var folder = new TempFolder();
        var db = folder.File("billing.db");
        var first = await Cli.RunAsync("demo", "month-close", "--accounts", "120", "--latency", "0", "--period", "2026-11", "--db", db, "--json");
        Assert.True(first.ExitCode == 0, first.ToString());

        var second = await Cli.RunAsync("demo", "month-close", "--accounts", "120", "--latency", "0", "--period", "2026-11", "--db", db, "--json");

        Assert.True(second.ExitCode == 0, second.ToString());
        var before = first.Json();
        var after = second.Json();
        Assert.False(before.GetProperty("resumed").GetBoolean());
        Assert.True(after.GetProperty("resumed").GetBoolean(), second.ToString());
        Assert.Equal(0, after.GetProperty("seeded_accounts").GetInt64());
        foreach (var figure in new[] { "accounts", "invoiced", "charged", "credited", "skipped_already_paid", "held", "emails", "collected_cents" })
        {
            Assert.Equal(before.GetProperty(figure).GetInt64(), after.GetProperty(figure).GetInt64());
        }

        Assert.Equal(0, after.GetProperty("violations").GetInt64());
        Assert.Equal(0, after.GetProperty("double_charges").GetInt64());
        Assert.Equal(0, after.GetProperty("duplicate_emails").GetInt64());
    }

    [Fact]
    public async Task With_three_worker_processes_one_killed_the_close_on_SQLite_settles_every_account_once()
    {
        using var folder = new TempFolder();
        var db = folder.File("billing.db");

        var result = await Cli.RunAsync("demo", "month-close", "--accounts", "500", "--latency", "1", "--period", "2026-11", "--processes", "3", "--kill", "1", "--db", db, "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var report = result.Json();
        Assert.Equal("sqlite", report.GetProperty("store").GetString());
        Assert.Equal(3, report.GetProperty("processes").GetInt32());
        Assert.Equal(1, report.GetProperty("kills").GetInt32());
        Assert.Equal(500, report.GetProperty("invoiced").GetInt64());
        Assert.Equal(0, report.GetProperty("violations").GetInt64());
        Assert.Equal(0, report.GetProperty("double_charges").GetInt64());
        Assert.Equal(0, report.GetProperty("duplicate_emails").GetInt64());
        Assert.True(report.GetProperty("finished").GetBoolean(), result.ToString());
        foreach (var worker in new[] { "worker 1: process ", "worker 2: process ", "worker 3: process " })
        {
            Assert.Contains(worker, result.Error, StringComparison.Ordinal);
        }

        Assert.Contains("exit code 137", result.Error, StringComparison.Ordinal);
        Assert.True(File.Exists(db + ".provider.db"), "The provider's ledger is not beside the database.");
    }

    [Fact]
    public async Task The_table_names_the_figures_and_the_database()
    {
        using var folder = new TempFolder();
        var db = folder.File("billing.db");

        var result = await Cli.RunAsync("demo", "month-close", "--accounts", "50", "--latency", "0", "--db", db);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("skipped, already paid", result.Out, StringComparison.Ordinal);
        Assert.Contains("double charges", result.Out, StringComparison.Ordinal);
        Assert.Contains("worker processes", result.Out, StringComparison.Ordinal);
        Assert.Contains("sqlite", result.Out, StringComparison.Ordinal);
        Assert.Contains(db, result.Out, StringComparison.Ordinal);
        Assert.ThrowsAny<JsonException>(() => JsonDocument.Parse(result.Out));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public async Task A_close_that_cannot_finish_by_its_deadline_reports_what_is_in_flight_and_fails(int processes)
    {
        using var folder = new TempFolder();
        var db = folder.File("billing.db");

        // Each charge waits 1 to 3 s for the provider: a 1 s deadline passes before the close can finish.
        var result = await Cli.RunAsync(
            "demo", "month-close", "--accounts", "100", "--latency", "2000", "--period", "2026-11", "--deadline", "1",
            "--processes", processes.ToString(System.Globalization.CultureInfo.InvariantCulture), "--db", db, "--json");

        Assert.True(result.ExitCode == 1, result.ToString());
        var report = result.Json();
        Assert.False(report.GetProperty("finished").GetBoolean(), result.ToString());
        Assert.True(report.GetProperty("deadline_reached").GetBoolean(), result.ToString());
        Assert.Equal(1, report.GetProperty("deadline_seconds").GetDouble());
        Assert.True(report.GetProperty("jobs_not_finished").GetInt64() > 0, result.ToString());
        Assert.True(report.GetProperty("messages_queued").GetInt64() > 0, result.ToString());

        // The in-flight counts are taken at the deadline; the figures after it come from the check, once the jobs
        // running then have finished or been abandoned, so they are not asserted here.
        Assert.Equal(JsonValueKind.Number, report.GetProperty("dead_letters").ValueKind);
        Assert.Equal(processes, report.GetProperty("processes").GetInt32());
    }

    [Fact]
    public async Task The_table_shows_what_is_in_flight_when_the_deadline_passes_and_how_to_resume()
    {
        using var folder = new TempFolder();
        var db = folder.File("billing.db");

        var result = await Cli.RunAsync("demo", "month-close", "--accounts", "50", "--latency", "2000", "--deadline", "1", "--db", db);

        Assert.True(result.ExitCode == 1, result.ToString());
        foreach (var row in new[] { "jobs of the close not finished", "messages queued", "dead letters", "lost charges", "1 s, reached" })
        {
            Assert.Contains(row, result.Out, StringComparison.Ordinal);
        }

        Assert.Contains("the close did not finish within the deadline of 1 s", result.Error, StringComparison.Ordinal);
        Assert.Contains("to resume it", result.Error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--deadline", "-3", "--deadline must be a number of seconds above 0")]
    [InlineData("--period", "2026-13", "is not a billing period")]
    [InlineData("--time-zone", "Mars/Olympus_Mons", "is not known on this machine")]
    [InlineData("--accounts", "0", "--accounts must be at least 1")]
    public async Task Bad_settings_are_refused_with_the_fix(string option, string value, string message)
    {
        var result = await Cli.RunAsync("demo", "month-close", option, value);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains(message, result.Error, StringComparison.Ordinal);
    }
}
