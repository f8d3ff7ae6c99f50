using System.Text.Json;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Cli.Tests;

/// <summary>A job whose flags say how its handler behaves.</summary>
public sealed record CliJob(string Name, bool Fail = false, bool Progress = false, bool Block = false);

/// <summary>Lets a test "deploy the fix" for failing jobs, and see when a blocking job started.</summary>
public sealed class JobGate
{
    volatile bool _fixed;

    public bool Fixed
    {
        get => _fixed;
        set => _fixed = value;
    }

    public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>
/// Fail: dies at once (non-retryable) until the gate is fixed. Progress: reports 40% then fails, retried in an hour.
/// Block: waits until cancelled. Otherwise succeeds.
/// </summary>
public sealed class CliJobHandler(JobGate gate) : IJobHandler<CliJob>
{
    public async Task ExecuteAsync(CliJob job, JobContext context, CancellationToken cancellationToken)
    {
        if (job.Progress)
        {
            await context.ReportProgressAsync(40, "halfway", cancellationToken);
            throw new HandlerFailureException("try later", nextRetryDelay: TimeSpan.FromHours(1));
        }

        if (job.Block)
        {
            gate.Started.TrySetResult();
            await Task.Delay(Timeout.InfiniteTimeSpan, cancellationToken);
        }

        if (job.Fail && !gate.Fixed)
        {
            throw new HandlerFailureException("mailbox full", nonRetryable: true);
        }
    }
}

internal static class JobHosts
{
    public const string Queue = "mail";

    public static Task<ConvergeTestHost> StartAsync(string db, JobGate? gate = null, Action<ConvergeOptions>? configure = null) =>
        ConvergeTestHost.StartAsync(
            o =>
            {
                o.UseSqlite(db);
                o.PollInterval = TimeSpan.FromMilliseconds(50);
                o.Jobs.CancellationCheckInterval = TimeSpan.FromMilliseconds(100);
                o.Messages.Register<CliJob>("cli.job");
                o.Job<CliJob, CliJobHandler>(Queue);
                configure?.Invoke(o);
            },
            services => services.AddSingleton(gate ?? new JobGate()));

    /// <summary>Enqueues <paramref name="job"/> and waits until it completed or died.</summary>
    public static async Task<Guid> RunAsync(ConvergeTestHost host, CliJob job, JobOptions? options = null)
    {
        var id = Guid.CreateVersion7();
        host.Tracker.Track(id, options?.Queue ?? Queue);
        await host.Jobs.EnqueueAsync(job, (options ?? new JobOptions()) with { JobId = id });
        await host.WaitForQuiescenceAsync();
        return id;
    }

    /// <summary>Waits until job <paramref name="id"/> satisfies <paramref name="until"/>.</summary>
    public static async Task<JobInfo> WaitForAsync(ConvergeTestHost host, Guid id, Func<JobInfo, bool> until)
    {
        var started = TimeProvider.System.GetTimestamp();
        while (true)
        {
            if (await host.Jobs.GetAsync(id) is { } job && until(job))
            {
                return job;
            }

            if (TimeProvider.System.GetElapsedTime(started) > ConvergeTestHost.DefaultTimeout)
            {
                var current = await host.Jobs.GetAsync(id);
                throw new TimeoutException($"Job {id} did not reach the awaited state; it is {current?.State.ToString() ?? "unknown"}.");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(10), TimeProvider.System);
        }
    }

    public static string Text(Guid id) => id.ToString();
}

/// <summary>
/// A store file holding jobs in every resting state, made by running them: alice (succeeded, correlation order-1),
/// bob (dead: permanent failure, priority 5), carol (cancelled while waiting), dave (scheduled in an hour, priority 3),
/// erin (enqueued on "later", which no process works), frank (40% "halfway", failed once, retried in an hour), gina
/// (succeeded) and hank (dead) of the sealed batch "month-close"; and the recurring schedule "nightly-report".
/// </summary>
public sealed class JobStoreFixture : IAsyncLifetime, IDisposable
{
    readonly TempFolder _folder = new();

    public string Db => _folder.File("app.db");

    public Dictionary<string, Guid> Ids { get; } = [];

    /// <summary>When the store began to be made: every time the jobs and schedules hold was computed after it.</summary>
    public DateTimeOffset StartedAt { get; private set; }

    public void Dispose() => _folder.Dispose();

    public async Task InitializeAsync()
    {
        StartedAt = TimeProvider.System.GetUtcNow();
        await using var host = await JobHosts.StartAsync(Db, configure: o =>
        {
            // Registered, never run: the schedule is stored at start, its occurrences are not enqueued.
            o.Jobs.RunScheduler = false;
            o.AddRecurringJob("nightly-report", "0 3 * * *", new CliJob("nightly"), r =>
            {
                r.TimeZone = "Europe/Berlin";
                r.Misfire = MisfirePolicy.Skip;
            });
        });

        Ids["alice"] = await JobHosts.RunAsync(host, new CliJob("alice"), new JobOptions { CorrelationId = "order-1" });
        Ids["bob"] = await JobHosts.RunAsync(host, new CliJob("bob", Fail: true), new JobOptions { Priority = 5 });

        Ids["carol"] = (await host.Jobs.EnqueueAsync(new CliJob("carol"), new JobOptions { Delay = TimeSpan.FromHours(1) })).Id;
        Assert.Equal(JobCancelOutcome.Cancelled, await host.Jobs.CancelAsync(Ids["carol"]));

        Ids["dave"] = (await host.Jobs.EnqueueAsync(new CliJob("dave"), new JobOptions { Delay = TimeSpan.FromHours(1), Priority = 3 })).Id;
        Ids["erin"] = (await host.Jobs.EnqueueAsync(new CliJob("erin"), new JobOptions { Queue = "later" })).Id;

        Ids["frank"] = (await host.Jobs.EnqueueAsync(new CliJob("frank", Progress: true))).Id;
        await JobHosts.WaitForAsync(host, Ids["frank"], j => j.State == JobState.Scheduled && j.Attempts >= 1);

        Assert.True(await host.Jobs.StartBatchAsync(new JobBatchOptions { Id = "month-close", Description = "December close" }));
        Ids["gina"] = await JobHosts.RunAsync(host, new CliJob("gina"), new JobOptions { BatchId = "month-close" });
        Ids["hank"] = await JobHosts.RunAsync(host, new CliJob("hank", Fail: true), new JobOptions { BatchId = "month-close" });
        await host.Jobs.SealBatchAsync("month-close");
    }

    public Task DisposeAsync() => Task.CompletedTask;
}

public sealed class JobCommandTests(JobStoreFixture store) : IClassFixture<JobStoreFixture>
{
    async Task<CliResult> RunAsync(params string[] args)
    {
        var result = await Cli.RunAsync([.. args, "--db", store.Db]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("", result.Error);
        return result;
    }

    string Id(string name) => JobHosts.Text(store.Ids[name]);

    List<string> Names(JsonElement list)
    {
        var byId = store.Ids.ToDictionary(p => p.Value, p => p.Key);
        return [.. list.GetProperty("jobs").EnumerateArray().Select(j => byId[j.GetProperty("id").GetGuid()]).Order(StringComparer.Ordinal)];
    }

    [Fact]
    public async Task List_json_has_every_job_with_its_state()
    {
        var list = (await RunAsync("jobs", "list", "--json")).Json();

        Assert.Equal(["alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank"], Names(list));
        Assert.Equal(8, list.GetProperty("count").GetInt32());
        Assert.False(list.GetProperty("more").GetBoolean());
        var jobs = list.GetProperty("jobs").EnumerateArray().ToDictionary(j => j.GetProperty("id").GetGuid());

        var alice = jobs[store.Ids["alice"]];
        Assert.Equal("succeeded", alice.GetProperty("state").GetString());
        Assert.Equal("mail", alice.GetProperty("queue").GetString());
        Assert.Equal("cli.job@1", alice.GetProperty("type").GetString());
        Assert.Equal("order-1", alice.GetProperty("correlation_id").GetString());
        Assert.NotEqual(JsonValueKind.Null, alice.GetProperty("finished_at").ValueKind);

        var bob = jobs[store.Ids["bob"]];
        Assert.Equal("dead", bob.GetProperty("state").GetString());
        Assert.Equal(DeadLetterReasons.PermanentFailure, bob.GetProperty("error").GetString());
        Assert.Equal("HandlerFailureException: mailbox full", bob.GetProperty("last_error").GetString());
        Assert.Equal(1, bob.GetProperty("attempts").GetInt32());
        Assert.Equal(5, bob.GetProperty("priority").GetInt32());

        Assert.Equal("cancelled", jobs[store.Ids["carol"]].GetProperty("state").GetString());
        var dave = jobs[store.Ids["dave"]];
        Assert.Equal("scheduled", dave.GetProperty("state").GetString());
        Assert.Equal(3, dave.GetProperty("priority").GetInt32());
        Assert.True(dave.GetProperty("due_at").GetDateTimeOffset() > store.StartedAt.AddMinutes(30));
        Assert.Equal("enqueued", jobs[store.Ids["erin"]].GetProperty("state").GetString());
        Assert.Equal("later", jobs[store.Ids["erin"]].GetProperty("queue").GetString());
        Assert.Equal(40, jobs[store.Ids["frank"]].GetProperty("progress").GetInt32());
        Assert.Equal("month-close", jobs[store.Ids["hank"]].GetProperty("batch_id").GetString());
    }

    [Theory]
    [InlineData("bob,hank", "--state", "dead")]
    [InlineData("carol", "--state", "CANCELLED")]
    [InlineData("dave,frank", "--state", "scheduled")]
    [InlineData("erin", "--state", "enqueued")]
    [InlineData("alice,gina", "--state", "succeeded")]
    [InlineData("erin", "--queue", "later")]
    [InlineData("gina,hank", "--batch", "month-close")]
    [InlineData("hank", "--batch", "month-close", "--state", "dead", "--queue", "mail")]
    [InlineData("", "--queue", "nobody")]
    public async Task List_filters_by_queue_state_and_batch(string expected, params string[] filters)
    {
        var list = (await RunAsync(["jobs", "list", "--json", .. filters])).Json();

        Assert.Equal(expected.Length == 0 ? [] : expected.Split(','), Names(list));
    }

    [Fact]
    public async Task List_max_says_there_are_more()
    {
        var json = (await RunAsync("jobs", "list", "--max", "2", "--json")).Json();
        Assert.Equal(2, json.GetProperty("count").GetInt32());
        Assert.True(json.GetProperty("more").GetBoolean());

        var table = (await RunAsync("jobs", "list", "--max", "2")).Out;
        Assert.Contains("Showing the newest 2; pass --max to see more.", table, StringComparison.Ordinal);
    }

    [Fact]
    public async Task List_table_shows_states_progress_and_shortened_errors()
    {
        var table = (await RunAsync("jobs", "list")).Out;

        foreach (var expected in new[] { "Due/finished (UTC)", Id("bob"), "cli.job@1", "dead", "cancelled", "scheduled", "enqueued", "succeeded", "40%", "permanent-failure: HandlerFailureException: mailbox full", "HandlerFailureException: try later" })
        {
            Assert.Contains(expected, table, StringComparison.Ordinal);
        }

        Assert.Contains("8 job(s). Show one with: converge jobs show", table, StringComparison.Ordinal);
        var none = (await RunAsync("jobs", "list", "--queue", "nobody")).Out;
        Assert.Contains("No jobs match.", none, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Show_json_has_every_field_history_and_body()
    {
        var bob = (await RunAsync("jobs", "show", Id("bob"), "--json")).Json();

        Assert.Equal(store.Ids["bob"], bob.GetProperty("id").GetGuid());
        Assert.Equal("dead", bob.GetProperty("state").GetString());
        Assert.Equal("mail", bob.GetProperty("queue").GetString());
        Assert.Equal("cli.job@1", bob.GetProperty("type").GetString());
        Assert.Equal(DeadLetterReasons.PermanentFailure, bob.GetProperty("error").GetString());
        Assert.True(bob.GetProperty("dead_letter_id").GetInt64() > 0);
        Assert.NotEqual(JsonValueKind.Null, bob.GetProperty("finished_at").ValueKind);
        var attempt = Assert.Single(bob.GetProperty("history").EnumerateArray());
        Assert.Equal(1, attempt.GetProperty("attempt").GetInt32());
        Assert.Equal("HandlerFailureException: mailbox full", attempt.GetProperty("error").GetString());
        Assert.Equal(JsonValueKind.Object, bob.GetProperty("body").ValueKind);
        Assert.Contains("bob", bob.GetProperty("body").GetRawText(), StringComparison.Ordinal);
        foreach (var field in new[] { "enqueued_at", "due_at", "as_of", "priority", "attempts", "progress", "progress_note", "correlation_id", "batch_id", "batch", "headers" })
        {
            Assert.True(bob.TryGetProperty(field, out _), field);
        }

        var frank = (await RunAsync("jobs", "show", Id("frank"), "--json")).Json();
        Assert.Equal(40, frank.GetProperty("progress").GetInt32());
        Assert.Equal("halfway", frank.GetProperty("progress_note").GetString());
        Assert.Equal("scheduled", frank.GetProperty("state").GetString());

        var hank = (await RunAsync("jobs", "show", Id("hank"), "--json")).Json();
        Assert.Equal("month-close", hank.GetProperty("batch_id").GetString());
        Assert.Equal("month-close", hank.GetProperty("headers").GetProperty(JobHeaders.Batch).GetString());
        var batch = hank.GetProperty("batch");
        Assert.Equal(2, batch.GetProperty("total").GetInt64());
        Assert.Equal(1, batch.GetProperty("succeeded").GetInt64());
        Assert.Equal(1, batch.GetProperty("failed").GetInt64());
        Assert.True(batch.GetProperty("sealed").GetBoolean());
    }

    [Fact]
    public async Task Show_table_prints_fields_attempts_body_and_what_to_do()
    {
        var bob = (await RunAsync("jobs", "show", Id("bob"))).Out;
        foreach (var expected in new[] { $"Job {Id("bob")}: cli.job@1 on 'mail', dead", "Failed attempts:", "HandlerFailureException: mailbox full", "Body:", "\"bob\"", $"converge jobs retry --db {store.Db} {Id("bob")}" })
        {
            Assert.Contains(expected, bob, StringComparison.Ordinal);
        }

        var frank = (await RunAsync("jobs", "show", Id("frank"))).Out;
        Assert.Contains("40% (halfway)", frank, StringComparison.Ordinal);
        Assert.Contains($"converge jobs cancel --db {store.Db} {Id("frank")}", frank, StringComparison.Ordinal);

        var hank = (await RunAsync("jobs", "show", Id("hank"))).Out;
        Assert.Contains("month-close: finished, 1 succeeded, 1 failed, 0 pending of 2", hank, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Batch_shows_counters_and_when_it_finished()
    {
        var json = (await RunAsync("jobs", "batch", "month-close", "--json")).Json().GetProperty("batch");
        Assert.Equal("month-close", json.GetProperty("id").GetString());
        Assert.Equal("December close", json.GetProperty("description").GetString());
        Assert.Equal(2, json.GetProperty("total").GetInt64());
        Assert.Equal(0, json.GetProperty("pending").GetInt64());
        Assert.Equal(1, json.GetProperty("succeeded").GetInt64());
        Assert.Equal(1, json.GetProperty("failed").GetInt64());
        Assert.True(json.GetProperty("sealed").GetBoolean());
        Assert.NotEqual(JsonValueKind.Null, json.GetProperty("finished_at").ValueKind);

        var table = (await RunAsync("jobs", "batch", "month-close")).Out;
        Assert.Contains("Batch month-close: finished", table, StringComparison.Ordinal);
        Assert.Contains($"converge jobs list --db {store.Db} --batch month-close", table, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Recurring_lists_the_schedules()
    {
        var json = (await RunAsync("jobs", "recurring", "--json")).Json();
        var schedule = Assert.Single(json.GetProperty("schedules").EnumerateArray());
        Assert.Equal("nightly-report", schedule.GetProperty("name").GetString());
        Assert.Equal("0 3 * * *", schedule.GetProperty("cron").GetString());
        Assert.Equal("Europe/Berlin", schedule.GetProperty("time_zone").GetString());
        Assert.Equal("mail", schedule.GetProperty("queue").GetString());
        Assert.Equal("cli.job@1", schedule.GetProperty("type").GetString());
        Assert.Equal("skip", schedule.GetProperty("misfire").GetString());
        Assert.True(schedule.GetProperty("next_at").GetDateTimeOffset() > store.StartedAt);
        Assert.Equal(JsonValueKind.Null, schedule.GetProperty("last_at").ValueKind);

        var table = (await RunAsync("jobs", "recurring")).Out;
        Assert.Contains("nightly-report", table, StringComparison.Ordinal);
        Assert.Contains("Europe/Berlin", table, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("show")]
    [InlineData("retry")]
    [InlineData("cancel")]
    public async Task An_unknown_job_id_exits_1_and_says_how_to_list_jobs(string verb)
    {
        var unknown = Guid.CreateVersion7();

        var result = await Cli.RunAsync("jobs", verb, unknown.ToString(), "--db", store.Db);

        Assert.Equal(1, result.ExitCode);
        Assert.Contains($"no job has id {unknown}", result.Error, StringComparison.Ordinal);
        Assert.Contains($"converge jobs list --db {store.Db}", result.Error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("erin", "job {0} is enqueued; only dead or cancelled jobs can be retried.")]
    [InlineData("dave", "job {0} is scheduled; only dead or cancelled jobs can be retried.")]
    [InlineData("alice", "job {0} is succeeded; only dead or cancelled jobs can be retried. It already succeeded")]
    public async Task Retrying_a_job_that_is_not_dead_exits_1_and_says_why(string name, string expected)
    {
        var result = await Cli.RunAsync("jobs", "retry", Id(name), "--db", store.Db);

        Assert.Equal(1, result.ExitCode);
        Assert.Contains(string.Format(System.Globalization.CultureInfo.InvariantCulture, expected, Id(name)), result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
    }

    [Theory]
    [InlineData("alice", "already succeeded")]
    [InlineData("bob", "already dead")]
    [InlineData("carol", "already cancelled")]
    public async Task Cancelling_a_finished_job_exits_1(string name, string expected)
    {
        var result = await Cli.RunAsync("jobs", "cancel", Id(name), "--db", store.Db);

        Assert.Equal(1, result.ExitCode);
        Assert.Contains($"job {Id(name)} {expected}", result.Error, StringComparison.Ordinal);
        Assert.Contains("nothing to cancel", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unknown_batch_exits_1()
    {
        var result = await Cli.RunAsync("jobs", "batch", "year-close", "--db", store.Db);

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("no batch has id 'year-close'", result.Error, StringComparison.Ordinal);
    }
}

/// <summary>Commands that change jobs, each on a store of its own with the application running.</summary>
public sealed class JobActionTests
{
    [Fact]
    public async Task A_dead_job_is_retried_after_the_fix_and_then_succeeds()
    {
        using var temp = new TempFolder();
        var db = temp.File("app.db");
        var gate = new JobGate();
        await using var host = await JobHosts.StartAsync(db, gate);
        var id = await JobHosts.RunAsync(host, new CliJob("bob", Fail: true));
        Assert.Equal(JobState.Dead, (await host.Jobs.GetAsync(id))!.State);

        gate.Fixed = true;
        host.Tracker.Track(id, JobHosts.Queue);
        var retry = await Cli.RunAsync("jobs", "retry", id.ToString(), "--db", db, "--json");

        Assert.True(retry.ExitCode == 0, retry.ToString());
        var json = retry.Json();
        Assert.Equal(id, json.GetProperty("id").GetGuid());
        Assert.Equal("dead", json.GetProperty("previous_state").GetString());
        Assert.Equal("mail", json.GetProperty("queue").GetString());
        await host.WaitForQuiescenceAsync();
        var show = (await Cli.RunAsync("jobs", "show", id.ToString(), "--db", db, "--json")).Json();
        Assert.Equal("succeeded", show.GetProperty("state").GetString());

        var again = await Cli.RunAsync("jobs", "retry", id.ToString(), "--db", db);
        Assert.Equal(1, again.ExitCode);
        Assert.Contains($"job {id} is succeeded; only dead or cancelled jobs can be retried", again.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_waiting_job_is_cancelled_and_a_cancelled_job_can_be_retried()
    {
        using var temp = new TempFolder();
        var db = temp.File("app.db");
        await using var host = await JobHosts.StartAsync(db);
        var id = (await host.Jobs.EnqueueAsync(new CliJob("dave"), new JobOptions { Delay = TimeSpan.FromHours(1) })).Id;

        var cancel = await Cli.RunAsync("jobs", "cancel", id.ToString(), "--db", db, "--json");

        Assert.True(cancel.ExitCode == 0, cancel.ToString());
        var json = cancel.Json();
        Assert.Equal("cancelled", json.GetProperty("outcome").GetString());
        Assert.Equal("scheduled", json.GetProperty("previous_state").GetString());
        Assert.Contains("now in the dead letters with reason 'cancelled'", json.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal(JobState.Cancelled, (await host.Jobs.GetAsync(id))!.State);

        host.Tracker.Track(id, JobHosts.Queue);
        var retry = await Cli.RunAsync("jobs", "retry", id.ToString(), "--db", db);
        Assert.True(retry.ExitCode == 0, retry.ToString());
        Assert.Contains($"Job {id} (cli.job@1, was cancelled) is back on queue 'mail'", retry.Out, StringComparison.Ordinal);
        await host.WaitForQuiescenceAsync();
        Assert.Equal(JobState.Succeeded, (await host.Jobs.GetAsync(id))!.State);
    }

    [Fact]
    public async Task A_running_job_is_asked_to_stop_and_ends_cancelled()
    {
        using var temp = new TempFolder();
        var db = temp.File("app.db");
        var gate = new JobGate();
        await using var host = await JobHosts.StartAsync(db, gate);
        var id = Guid.CreateVersion7();
        host.Tracker.Track(id, JobHosts.Queue);
        await host.Jobs.EnqueueAsync(new CliJob("ivan", Block: true), new JobOptions { JobId = id });
        await gate.Started.Task.WaitAsync(ConvergeTestHost.DefaultTimeout);

        var show = (await Cli.RunAsync("jobs", "show", id.ToString(), "--db", db, "--json")).Json();
        Assert.Equal("processing", show.GetProperty("state").GetString());
        var retry = await Cli.RunAsync("jobs", "retry", id.ToString(), "--db", db);
        Assert.Equal(1, retry.ExitCode);
        Assert.Contains($"job {id} is processing; only dead or cancelled jobs can be retried. A worker is running it now", retry.Error, StringComparison.Ordinal);

        var cancel = await Cli.RunAsync("jobs", "cancel", id.ToString(), "--db", db);

        Assert.True(cancel.ExitCode == 0, cancel.ToString());
        Assert.Contains($"Job {id} (cli.job@1) is running; its worker was asked to stop", cancel.Out, StringComparison.Ordinal);
        await host.WaitForQuiescenceAsync();
        var after = (await Cli.RunAsync("jobs", "show", id.ToString(), "--db", db, "--json")).Json();
        Assert.Equal("cancelled", after.GetProperty("state").GetString());
    }

    [Fact]
    public async Task Jobs_of_a_missing_file_exit_2_and_do_not_create_it()
    {
        using var temp = new TempFolder();
        var db = temp.File("missing.db");

        var result = await Cli.RunAsync("jobs", "list", "--db", db);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"{db} does not exist", result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
        Assert.Empty(Directory.EnumerateFileSystemEntries(temp.Path));
    }
}
