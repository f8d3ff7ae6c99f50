using System.CommandLine;
using Converge.Samples.Billing;
using Converge.Samples.Identity;
using Converge.Samples.Reprocess;
using Converge.Samples.Shop;
using Spectre.Console;

namespace Converge.Cli;

/// <summary>
/// <c>converge demo shop</c>: the Shop sample end to end, with faults injected, and its outcome checked.
/// <c>converge demo month-close</c>: the Billing sample's month close for N accounts, and its outcome checked.
/// <c>converge demo identity</c>: the Identity sample's verifications followed over HTTP by one client each, and what they saw checked.
/// <c>converge demo reprocess</c>: a buggy projection rebuilt beside the live one while orders flow, compared, switched and checked.
/// All run on a SQLite file (<c>--db</c>) or a PostgreSQL schema (<c>--postgres</c>), in this process or with
/// worker processes of their own, some of which can be killed along the way.
/// </summary>
internal static class DemoCommands
{
    public static Command Create(CliOutput output) => new("demo", "Run a sample end to end on SQLite (--db) or PostgreSQL (--postgres) and check its outcome.")
    {
        Shop(output),
        MonthClose(output),
        Identity(output),
        Reprocess(output),
    };

    static Command Reprocess(CliOutput output) => SeededDemo(
        output,
        "reprocess",
        "Reprocess a projection while the shop runs: revenue per customer, version 1 live with a bug (refunds ignored) and read all along by 4 readers; version 2, fixed, registered beside it while orders keep flowing, rebuilt from position 0, compared with version 1 (the bug shows as differing rows) and switched live. Checks: the live view equals totals computed from the events, no read failed and no read went back. Reports the rebuild rate.",
        new Option<int>("--orders") { Description = "Orders placed (paid, refunded, cancelled) on the log before the fixed version is registered; more keep coming during the run.", HelpName = "N", DefaultValueFactory = _ => 20_000 },
        5_000_000,
        "Seeds the orders: customers, amounts, and which are paid, refunded or cancelled.",
        new DemoStoreOptions(
            "The database to create (a new file; kept, so converge status, groups and projections can inspect it). Default: a new temporary file.",
            "converge_reprocess",
            "It must not hold a Converge store yet.",
            "none"),
        (run, error, cancellationToken) => ReprocessDemo.RunAsync(
            new ReprocessDemoSettings { Orders = run.Size, Seed = run.Seed, Clock = CliApp.Clock, DbPath = run.DbPath, PostgreSql = run.PostgreSql, Schema = run.Schema },
            error,
            cancellationToken),
        report => report.Passed,
        async report =>
        {
            var table = CliOutput.Table("Figure", "Value");
            CliOutput.AddRow(table, "orders seeded", report.OrdersSeeded);
            CliOutput.AddRow(table, "orders placed during the run", report.OrdersDuringRun);
            CliOutput.AddRow(table, "customers", report.Customers);
            CliOutput.AddRow(table, "events (seeded + during the run)", $"{report.Events} ({report.EventsSeeded} + {report.EventsDuringRun})");
            CliOutput.AddRow(table, "rebuild of version 2 (events/s, by the catalogue)", report.RebuildEventsPerSecond);
            CliOutput.AddRow(table, "rebuild of version 2 (s, wall clock)", $"{report.RebuildSeconds} to position {report.RebuildPosition}");
            CliOutput.AddRow(table, "events appended during the rebuild", report.EventsAppendedDuringRebuild);
            CliOutput.AddRow(table, "compare: rows v1 / v2", $"{report.CompareRowsV1} / {report.CompareRowsV2}");
            CliOutput.AddRow(table, "compare: rows only in v1 / only in v2", $"{report.CompareOnlyInV1} / {report.CompareOnlyInV2}");
            CliOutput.AddRow(table, "compare: customers differing (had refunds)", $"{report.CompareDifferingCustomers} ({report.CustomersWithRefunds})");
            CliOutput.AddRow(table, "switched to version 2", report.Switched ? $"yes ({report.SwitchAttempts} attempt(s))" : "no");
            CliOutput.AddRow(table, "live version", report.LiveVersion?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none");
            CliOutput.AddRow(table, "reads (of v1 / of v2)", $"{report.Reads} ({report.ReadsOfV1} / {report.ReadsOfV2})");
            CliOutput.AddRow(table, "failed reads", report.FailedReads);
            CliOutput.AddRow(table, "reads that went back", report.ReadsBack);
            CliOutput.AddRow(table, "customers differing from the events", report.Mismatches);
            CliOutput.AddRow(table, "seconds", report.Seconds);
            CliOutput.AddRow(table, "store", report.Store);
            CliOutput.AddRow(table, "database", report.Db);
            CliOutput.AddRow(table, "peak working set of this process (MB)", CliOutput.PeakWorkingSetMegabytes());
            output.Console().Write(table);
            foreach (var example in report.CompareExamples)
            {
                await output.Error.WriteLineAsync("compare: " + example);
            }

            foreach (var problem in report.Problems)
            {
                await output.Error.WriteLineAsync("problem: " + problem);
            }
        });

    static Command Identity(CliOutput output) => SeededDemo(
        output,
        "identity",
        "Verify identities as for a betting account opened from a phone: OCR, face extraction, tamper detection, a licence register check and a face match run concurrently, each partial result is published to the request's stream on the log the moment it exists, and while the register is down stakes up to £50 are granted on the OCR'd licence (degraded mode), then confirmed or revoked when it is back. One client per request follows its stream over HTTP through a network that cuts connections and decides by its stake (£2: OCR; £50: OCR, tamper and register or a grant; £3,000: everything). Checks: every client got its result with no gap and no duplicate, every grant was revisited, and the p99 time to the full result is under 10 s.",
        new Option<int>("--requests") { Description = "Verifications to submit, at seeded random moments (25 ms apart on average), each followed by a client of its own.", HelpName = "N", DefaultValueFactory = _ => 200 },
        10_000,
        "Seeds the arrivals, the stakes, the checks' latencies, answers and transient failures, and where connections are cut.",
        new DemoStoreOptions(
            "The database to create (a new file; kept, so converge status and groups can inspect it). Default: a new temporary file.",
            "converge_identity",
            "It must not hold an identity run yet.",
            "none"),
        (run, error, cancellationToken) => IdentityDemo.RunAsync(
            new IdentityDemoSettings { Requests = run.Size, Seed = run.Seed, Clock = CliApp.Clock, DbPath = run.DbPath, PostgreSql = run.PostgreSql, Schema = run.Schema },
            error,
            cancellationToken),
        report => report.Passed,
        async report =>
        {
            var tiers = CliOutput.Table("Stake needs", "Requests", "Decided", "Accepted", "Refused", "p50 ms", "p99 ms");
            foreach (var tier in report.Tiers)
            {
                CliOutput.AddRow(tiers, tier.Tier, tier.Requests, tier.Decided, tier.Accepted, tier.Refused, tier.P50Ms, tier.P99Ms);
            }

            var table = CliOutput.Table("Figure", "Value");
            CliOutput.AddRow(table, "requests", report.Requests);
            CliOutput.AddRow(table, "completed (full result received)", report.Completed);
            CliOutput.AddRow(table, "verified", report.Verified);
            CliOutput.AddRow(table, "refused", report.Refused);
            CliOutput.AddRow(table, "full result p50 ms", report.FullResultP50Ms);
            CliOutput.AddRow(table, "full result p99 ms", $"{report.FullResultP99Ms} (deadline {report.DeadlineSeconds:0.#} s)");
            CliOutput.AddRow(table, "gaps seen by clients", report.Gaps);
            CliOutput.AddRow(table, "duplicates seen by clients", report.Duplicates);
            CliOutput.AddRow(table, "events differing from the store", report.Mismatches);
            CliOutput.AddRow(table, "connections cut", report.ConnectionsCut);
            CliOutput.AddRow(table, "reconnects (resumed reads)", report.Reconnects);
            CliOutput.AddRow(table, "register down", $"{report.OutageStartSeconds:0.##} s to {report.OutageEndSeconds:0.##} s");
            CliOutput.AddRow(table, "degraded grants made", report.GrantsMade);
            CliOutput.AddRow(table, "degraded grants confirmed", report.GrantsConfirmed);
            CliOutput.AddRow(table, "degraded grants revoked", report.GrantsRevoked);
            CliOutput.AddRow(table, "degraded grants still open", report.GrantsOpen);
            CliOutput.AddRow(table, "transient failures retried", report.TransientFailures);
            CliOutput.AddRow(table, "statistics events published", report.StatisticsPublished);
            CliOutput.AddRow(table, "seconds", report.Seconds);
            CliOutput.AddRow(table, "store", report.Store);
            CliOutput.AddRow(table, "database", report.Db);
            CliOutput.AddRow(table, "peak working set of this process (MB)", CliOutput.PeakWorkingSetMegabytes());
            output.Console().Write(tiers);
            output.Console().Write(table);
            foreach (var problem in report.Problems)
            {
                await output.Error.WriteLineAsync("problem: " + problem);
            }
        });

    /// <summary>What a seeded demo is run with: its size, its seed and the store it creates.</summary>
    sealed record SeededDemoRun(int Size, int Seed, string? DbPath, string? PostgreSql, string Schema);

    /// <summary>
    /// The shape the identity and reprocess demos share: a size (validated from 1 to <paramref name="maxSize"/>), a seed,
    /// a new store (SQLite or PostgreSQL), the summary as a table or one JSON object, and exit code 0 when the demo's
    /// checks passed, 1 when they did not, 2 on misuse.
    /// </summary>
    static Command SeededDemo<TReport>(
        CliOutput output,
        string name,
        string description,
        Option<int> size,
        int maxSize,
        string seedDescription,
        DemoStoreOptions store,
        Func<SeededDemoRun, TextWriter, CancellationToken, Task<TReport>> run,
        Func<TReport, bool> passed,
        Func<TReport, Task> render)
    {
        var seed = new Option<int>("--seed") { Description = seedDescription, HelpName = "N", DefaultValueFactory = _ => 42 };
        var json = CommonOptions.Json();
        size.Validators.Add(r =>
        {
            if (r.Parsed<int>() < 1 || r.Parsed<int>() > maxSize)
            {
                r.AddError($"{size.Name} must be between 1 and {maxSize}, for example {size.GetDefaultValue()}.");
            }
        });
        var command = new Command(name, description) { size, seed, json };
        store.AddTo(command, filesAndBroker: false);
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var path = store.Db(parsed);
            if (path is not null && File.Exists(path))
            {
                throw new CliException(CliApp.Usage, $"{path} already exists. Pass a path for a new file, or omit --db for a temporary one.");
            }

            await store.CheckPostgresAsync(parsed);
            var report = await RefusedSettingsAreMisuse(() => run(
                new SeededDemoRun(parsed.GetValue(size), parsed.GetValue(seed), path, store.Postgres(parsed), store.Schema(parsed)),
                output.Error,
                cancellationToken));
            if (parsed.GetValue(json))
            {
                await output.WriteMeasuredJsonAsync(report);
            }
            else
            {
                await render(report);
            }

            return passed(report) ? CliApp.Success : CliApp.Failure;
        });
        return command;
    }

    static Command Shop(CliOutput output)
    {
        var orders = new Option<int>("--orders") { Description = "Orders to place.", HelpName = "N", DefaultValueFactory = _ => 2000 };
        var failRate = new Option<double>("--fail-rate") { Description = "Share of orders that meet an injected fault (a failed, delayed, duplicated or dropped step) through the fault plan, 0 to 1.", HelpName = "P", DefaultValueFactory = _ => 0.2 };
        var style = new Option<string>("--style") { Description = "orchestrated (the place-order saga) or choreographed (events on the log).", HelpName = "orchestrated|choreographed", DefaultValueFactory = _ => "orchestrated" };
        style.AcceptOnlyFromAmong("orchestrated", "choreographed");
        var store = new DemoStoreOptions(
            "The database to create (a new file; kept, so converge sagas and flow can inspect it). Default: a new temporary file.",
            "converge_shop",
            "It must not hold a shop yet; it is kept, so converge sagas and flow can inspect it.",
            "the payment provider's ledger");
        var seed = new Option<int>("--seed") { Description = "Seeds the orders and which of them meet faults.", HelpName = "N", DefaultValueFactory = _ => 42 };
        var processes = new Option<bool>("--processes") { Description = "Run Customers, Payments and Shipping in a process each (this one keeps Orders), all on the same store." };
        var kills = new Option<int>("--kill") { Description = "With --processes: kill a worker process this many times with SIGKILL at random moments, starting it again each time.", HelpName = "N" };
        var stepTimeout = new Option<double>("--step-timeout") { Description = "Seconds a saga step waits for its reply before it counts as failed (a compensatable step is then compensated, a later one sent again). With --kill, a timeout shorter than a worker's restart fails the steps it was handling.", HelpName = "SECONDS", DefaultValueFactory = _ => 2 };
        stepTimeout.Validators.Add(r =>
        {
            if (r.Parsed<double>() is <= 0 or > 3600)
            {
                r.AddError("--step-timeout must be a number of seconds above 0 (and at most an hour), for example 2.");
            }
        });
        var deadline = Deadline("How long to wait for the orders to settle, counted from the last order placed; then the summary shows what is still in flight (orders, sagas, messages) and the exit code is 1. Default: 120 s plus 50 ms per order (220 s for 2,000 orders).");
        var json = CommonOptions.Json();
        orders.Validators.Add(r =>
        {
            if (r.Parsed<int>() < 1)
            {
                r.AddError("--orders must be at least 1.");
            }
        });
        failRate.Validators.Add(r =>
        {
            if (r.Parsed<double>() is < 0 or > 1)
            {
                r.AddError("--fail-rate must be between 0 and 1, for example 0.2.");
            }
        });
        var command = new Command("shop", "Place orders through the Shop (orders, customer credit, payments with a simulated provider, shipping) with faults injected at every step, wait until every order has settled, and check: every saga ended, completed orders charged and shipped once, compensated orders hold no credit and no net charge, credit reserved equals the open orders.")
        {
            orders, failRate, style, seed, processes, kills, stepTimeout, deadline, json,
        };
        store.AddTo(command);
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var path = store.Db(parsed);
            if (path is not null && File.Exists(path))
            {
                throw new CliException(CliApp.Usage, $"{path} already exists. Pass a path for a new file, or omit --db for a temporary one.");
            }

            await store.CheckPostgresAsync(parsed);

            if (parsed.GetValue(kills) is var killCount && (killCount < 0 || (killCount > 0 && !parsed.GetValue(processes))))
            {
                throw new CliException(CliApp.Usage, "--kill needs --processes (the workers it kills are processes of their own) and a count of 0 or more.");
            }

            var report = await RefusedSettingsAreMisuse(() => ShopDemo.RunAsync(
                new ShopDemoSettings
                {
                    Orders = parsed.GetValue(orders),
                    FailRate = parsed.GetValue(failRate),
                    Style = parsed.GetValue(style) == "choreographed" ? ShopStyle.Choreographed : ShopStyle.Orchestrated,
                    DbPath = path,
                    PostgreSql = store.Postgres(parsed),
                    RabbitMq = store.RabbitMq(parsed),
                    Schema = store.Schema(parsed),
                    SimulationFolder = store.SimulationFolder(parsed),
                    Seed = parsed.GetValue(seed),
                    Processes = parsed.GetValue(processes),
                    Kills = parsed.GetValue(kills),
                    StepTimeout = TimeSpan.FromSeconds(parsed.GetValue(stepTimeout)),
                    WorkerCommand = DemoWorkers.Command(DemoWorkers.Shop),
                    Deadline = DeadlineValue(parsed, deadline),
                },
                output.Error,
                cancellationToken));
            var outcome = report.Violations == 0 && report.InFlight == 0 && !report.DeadlineReached ? CliApp.Success : CliApp.Failure;
            if (parsed.GetValue(json))
            {
                await output.WriteMeasuredJsonAsync(report);
                return outcome;
            }

            var table = CliOutput.Table("Figure", "Value");
            CliOutput.AddRow(table, "style", report.Style);
            CliOutput.AddRow(table, "orders", report.Orders);
            CliOutput.AddRow(table, "completed", report.Completed);
            CliOutput.AddRow(table, "compensated", report.Compensated);
            CliOutput.AddRow(table, "rejected", report.Rejected);
            CliOutput.AddRow(table, "in flight", report.InFlight);
            CliOutput.AddRow(table, "sagas not ended", report.SagasNotEnded);
            CliOutput.AddRow(table, "messages queued", report.MessagesQueued);
            CliOutput.AddRow(table, "dead letters", report.DeadLetters);
            CliOutput.AddRow(table, "violations", report.Violations);
            CliOutput.AddRow(table, "double charges", report.DoubleCharges);
            CliOutput.AddRow(table, "lost charges", report.LostCharges);
            CliOutput.AddRow(table, "faults injected", report.FaultsInjected);
            CliOutput.AddRow(table, "replies ignored (duplicate or late)", report.RepliesIgnored);
            CliOutput.AddRow(table, "timeouts fired", report.TimeoutsFired);
            CliOutput.AddRow(table, "seconds", report.Seconds);
            CliOutput.AddRow(table, "sagas per second", report.SagasPerSecond);
            CliOutput.AddRow(table, "deadline", $"{report.DeadlineSeconds:0.#} s{(report.DeadlineReached ? ", reached" : "")}");
            CliOutput.AddRow(table, "worker processes", report.Processes);
            CliOutput.AddRow(table, "worker processes killed", report.Kills);
            CliOutput.AddRow(table, "store", report.Store);
            CliOutput.AddRow(table, "database", report.Db);
            CliOutput.AddRow(table, "peak working set of this process (MB)", CliOutput.PeakWorkingSetMegabytes());
            output.Console().Write(table);
            foreach (var example in report.ViolationExamples)
            {
                await output.Error.WriteLineAsync("violation: " + example);
            }

            if (report.DeadlineReached)
            {
                await output.Error.WriteLineAsync($"the orders did not settle within the deadline of {report.DeadlineSeconds:0.#} s: {report.InFlight} orders, {report.SagasNotEnded} sagas and {report.MessagesQueued} messages were still in flight (converge sagas list and converge status --db show them).");
            }

            return outcome;
        });
        return command;
    }

    /// <summary>A demo's <c>--deadline SECONDS</c>; unset, the demo picks a default scaled to its size.</summary>
    static Option<double?> Deadline(string description)
    {
        var option = new Option<double?>("--deadline") { Description = description, HelpName = "SECONDS" };
        option.Validators.Add(r =>
        {
            if (r.ParsedNullable<double>() is <= 0 or > 86_400 * 7)
            {
                r.AddError("--deadline must be a number of seconds above 0 (and at most a week), for example 300.");
            }
        });
        return option;
    }

    static TimeSpan? DeadlineValue(ParseResult parsed, Option<double?> option) =>
        parsed.GetValue(option) is { } seconds ? TimeSpan.FromSeconds(seconds) : null;

    static Command MonthClose(CliOutput output)
    {
        var accounts = new Option<long>("--accounts") { Description = "Accounts to seed when the database has none (an existing database keeps its accounts).", HelpName = "N", DefaultValueFactory = _ => 10_000 };
        var store = new DemoStoreOptions(
            "The database: a new file, or one an earlier run left, in which case the close that ran there resumes (run the same command again after a crash or Ctrl+C). The provider's ledger and the sent mail sit beside it (FILE.provider.db, FILE.email.db). Default: a new temporary file.",
            "converge_billing",
            "A schema that holds a close already resumes it, like an existing --db file.",
            "the payment provider's ledger and the sent mail");
        var processes = new Option<int>("--processes") { Description = "Run the close in this many worker processes on the same store (this one then only seeds, triggers, watches and checks). Default: 0, the close runs in this process.", HelpName = "N" };
        var kills = new Option<int>("--kill") { Description = "With --processes: kill a worker process this many times with SIGKILL while the close runs (at random shares of the accounts settled), starting it again each time.", HelpName = "K" };
        var latency = new Option<double>("--latency") { Description = "The payment provider's latency per call in milliseconds (with seeded jitter of up to half of it either way).", HelpName = "MS", DefaultValueFactory = _ => 20 };
        var seed = new Option<int>("--seed") { Description = "Seeds the accounts, the provider's jitter and outages, and which accounts pay, get a credit or remove their card between invoice and charge.", HelpName = "N", DefaultValueFactory = _ => 42 };
        var period = new Option<string>("--period") { Description = "The month to close. Default: the month before this one in the time zone.", HelpName = "YYYY-MM" };
        var timeZone = new Option<string>("--time-zone") { Description = "The billing time zone (IANA id): the monthly schedule and the \"as of\" on receipts use it.", HelpName = "ID", DefaultValueFactory = _ => "Europe/Berlin" };
        var deadline = Deadline("How long to wait for the close to finish, counted from its trigger; then the summary shows what is still in flight (jobs of the close, messages queued) and the exit code is 1 (run the same command again to resume). Default: 120 s plus 5 ms per account (170 s for 10,000 accounts).");
        var json = CommonOptions.Json();
        accounts.Validators.Add(r =>
        {
            if (r.Parsed<long>() < 1)
            {
                r.AddError("--accounts must be at least 1.");
            }
        });
        latency.Validators.Add(r =>
        {
            if (r.Parsed<double>() is < 0 or > 10_000)
            {
                r.AddError("--latency must be between 0 and 10000 milliseconds, for example 20.");
            }
        });
        processes.Validators.Add(r =>
        {
            if (r.Parsed<int>() is < 0 or > 32)
            {
                r.AddError("--processes must be between 0 and 32, for example 3.");
            }
        });
        var command = new Command("month-close", "Close a billing month for N accounts: a batch of background jobs invoices every account, re-reads it before charging through a simulated provider (latency, 429 throttling, short outages, declines; idempotency keys), skips invoices paid meanwhile, charges only what a credit leaves, holds accounts without a usable card, sends receipts in each account's language, and writes the finance report when the batch completes. Then checks: every account settled exactly once, one receipt per charged or credited invoice, no double charge in the provider's ledger.")
        {
            accounts, latency, seed, period, timeZone, processes, kills, deadline, json,
        };
        store.AddTo(command);
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            if (parsed.GetValue(kills) is var killCount && (killCount < 0 || (killCount > 0 && parsed.GetValue(processes) < 1)))
            {
                throw new CliException(CliApp.Usage, "--kill needs --processes N of 1 or more (the workers it kills are processes of their own) and a count of 0 or more.");
            }

            await store.CheckPostgresAsync(parsed);
            var billing = new BillingOptions
            {
                ProviderLatency = TimeSpan.FromMilliseconds(parsed.GetValue(latency)),
                Seed = parsed.GetValue(seed),
                TimeZone = parsed.GetValue(timeZone)!,
            };
            try
            {
                billing.Zone();
                if (parsed.GetValue(period) is { } given)
                {
                    BillingPeriod.Parse(given);
                }
            }
            catch (Exception exception) when (exception is FormatException or TimeZoneNotFoundException or InvalidTimeZoneException)
            {
                throw new CliException(CliApp.Usage, exception is FormatException
                    ? exception.Message
                    : $"time zone '{billing.TimeZone}' is not known on this machine; use an IANA id such as Europe/Berlin or UTC.");
            }

            MonthCloseSettings Settings(Action<string> log) => new()
            {
                Accounts = parsed.GetValue(accounts),
                DbPath = store.Db(parsed),
                PostgreSql = store.Postgres(parsed),
                RabbitMq = store.RabbitMq(parsed),
                Schema = store.Schema(parsed),
                SimulationFolder = store.SimulationFolder(parsed),
                Processes = parsed.GetValue(processes),
                Kills = parsed.GetValue(kills),
                WorkerCommand = DemoWorkers.Command(DemoWorkers.MonthClose),
                Period = parsed.GetValue(period),
                Billing = billing,
                Log = log,
                Deadline = DeadlineValue(parsed, deadline),
            };
            var lines = new Lock();
            var report = await RefusedSettingsAreMisuse(() => parsed.GetValue(json) || !IsTerminal(output)
                ? MonthCloseDemo.RunAsync(Settings(Line(output, lines)), ProgressLines(output, lines), cancellationToken)
                : RunWithProgressBarAsync(output, Settings, cancellationToken));
            var outcome = report.Violations == 0 && report.Finished ? CliApp.Success : CliApp.Failure;
            if (parsed.GetValue(json))
            {
                await output.WriteMeasuredJsonAsync(report);
                return outcome;
            }

            var table = CliOutput.Table("Figure", "Value");
            CliOutput.AddRow(table, "period", report.Period);
            CliOutput.AddRow(table, "accounts", report.Accounts);
            CliOutput.AddRow(table, "invoiced", report.Invoiced);
            CliOutput.AddRow(table, "charged", report.Charged);
            CliOutput.AddRow(table, "credited (remainder charged)", report.Credited);
            CliOutput.AddRow(table, "skipped, already paid", report.SkippedAlreadyPaid);
            CliOutput.AddRow(table, "held", report.Held);
            CliOutput.AddRow(table, "holds by reason", string.Join(", ", report.HoldsByReason.Select(h => $"{h.Key} {h.Value}")));
            CliOutput.AddRow(table, "still open", report.StillOpen);
            CliOutput.AddRow(table, "changed after their invoice's as-of", report.ChangedAfterAsOf);
            CliOutput.AddRow(table, "receipts sent", report.Emails);
            CliOutput.AddRow(table, "receipts by language", string.Join(", ", report.EmailsByLanguage.Select(e => $"{e.Key} {e.Value}")));
            CliOutput.AddRow(table, "double charges", report.DoubleCharges);
            CliOutput.AddRow(table, "lost charges", report.LostCharges);
            CliOutput.AddRow(table, "duplicate emails", report.DuplicateEmails);
            CliOutput.AddRow(table, "provider: idempotent replays", report.ProviderReplays);
            CliOutput.AddRow(table, "provider: throttled (429)", report.ProviderThrottled);
            CliOutput.AddRow(table, "provider: unavailable (503)", report.ProviderUnavailable);
            CliOutput.AddRow(table, "provider: declined", report.Declined);
            CliOutput.AddRow(table, "collected", $"{report.CollectedCents / 100m:N2} of {report.InvoicedCents / 100m:N2} invoiced");
            CliOutput.AddRow(table, "finance report", report.FinanceReport ? "written" : "missing");
            CliOutput.AddRow(table, "failed jobs", report.FailedJobs);
            CliOutput.AddRow(table, "jobs of the close not finished", report.JobsNotFinished);
            CliOutput.AddRow(table, "messages queued", report.MessagesQueued);
            CliOutput.AddRow(table, "dead letters", report.DeadLetters);
            CliOutput.AddRow(table, "violations", report.Violations);
            CliOutput.AddRow(table, "seconds", report.Seconds);
            CliOutput.AddRow(table, "accounts per second", report.AccountsPerSecond);
            CliOutput.AddRow(table, "deadline", $"{report.DeadlineSeconds:0.#} s{(report.DeadlineReached ? ", reached" : "")}");
            CliOutput.AddRow(table, "resumed an earlier run", report.Resumed ? "yes" : "no");
            CliOutput.AddRow(table, "worker processes", report.Processes);
            CliOutput.AddRow(table, "worker processes killed", report.Kills);
            CliOutput.AddRow(table, "store", report.Store);
            CliOutput.AddRow(table, "database", report.Db);
            CliOutput.AddRow(table, "peak working set of this process (MB)", CliOutput.PeakWorkingSetMegabytes());
            output.Console().Write(table);
            foreach (var example in report.ViolationExamples)
            {
                await output.Error.WriteLineAsync("violation: " + example);
            }

            if (!report.Finished)
            {
                var inFlight = $"the close did not finish within the deadline of {report.DeadlineSeconds:0.#} s: {report.StillOpen} invoices open, {report.JobsNotFinished} jobs of the close not finished, {report.MessagesQueued} messages queued";
                await output.Error.WriteLineAsync(report.Store.StartsWith("postgresql", StringComparison.Ordinal)
                    ? inFlight + "; run the same command again (same --postgres and --schema) to resume it."
                    : $"{inFlight}; run the same command with --db {ShellQuote.Quote(report.Db)} to resume it.");
            }

            return outcome;
        });
        return command;
    }

    static bool IsTerminal(CliOutput output) => ReferenceEquals(output.Error, System.Console.Error) && !System.Console.IsErrorRedirected;

    /// <summary>
    /// Runs a demo; a setting it refuses (a store that is not new, a folder holding another run's files, a connection
    /// string it cannot use) is misuse, exit code 2, with the demo's message.
    /// </summary>
    static async Task<T> RefusedSettingsAreMisuse<T>(Func<Task<T>> run)
    {
        try
        {
            return await run();
        }
        catch (ArgumentException exception)
        {
            throw new CliException(CliApp.Usage, StoreAccess.WithoutParameterName(exception));
        }
    }

    /// <summary>Lines about the worker processes, on stderr; <paramref name="gate"/> keeps them from interleaving with progress lines.</summary>
    static Action<string> Line(CliOutput output, Lock gate) => line =>
    {
        lock (gate)
        {
            output.Error.WriteLine(line);
        }
    };

    /// <summary>Progress as plain lines on stderr: every note, and otherwise at most one line a second.</summary>
    static Action<MonthCloseProgress> ProgressLines(CliOutput output, Lock gate)
    {
        var last = System.Diagnostics.Stopwatch.StartNew();
        var first = true;
        return p =>
        {
            lock (gate)
            {
                if (p.Note is null && !first && last.Elapsed < TimeSpan.FromSeconds(1) && p.Done != p.Total)
                {
                    return;
                }

                first = false;
                last.Restart();
                var batch = p.Batch is { } b ? $" (batch: {b.Succeeded + b.Failed:N0} of {b.Total:N0} jobs done, {b.Pending:N0} pending)" : "";
                output.Error.WriteLine($"{p.Stage}: {p.Done:N0}/{p.Total:N0}{batch}{(p.Note is null ? "" : " - " + p.Note)}");
            }
        };
    }

    /// <summary>Runs the demo under a Spectre.Console progress display on stderr: seeding, settling, checking.</summary>
    /// <param name="output">Where the bars go (stderr).</param>
    /// <param name="settings">The settings, given where the lines about worker processes go (printed above the bars).</param>
    /// <param name="cancellationToken">Stops the demo.</param>
    static async Task<MonthCloseReport> RunWithProgressBarAsync(CliOutput output, Func<Action<string>, MonthCloseSettings> settings, CancellationToken cancellationToken)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output.Error) });
        MonthCloseReport? report = null;
        await console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async context =>
            {
                var run = settings(line => console.MarkupLine(Markup.Escape(line)));
                var seed = context.AddTask("seed accounts", maxValue: Math.Max(1, run.Accounts));
                var close = context.AddTask("month close", autoStart: false, maxValue: Math.Max(1, run.Accounts));
                var check = context.AddTask("check", autoStart: false, maxValue: 1);
                report = await MonthCloseDemo.RunAsync(
                    run,
                    p =>
                    {
                        var task = p.Stage switch { "seed" => seed, "close" => close, _ => check };
                        if (!task.IsStarted)
                        {
                            task.StartTask();
                        }

                        task.MaxValue = Math.Max(1, p.Total);
                        task.Value = p.Done;
                        if (p.Stage == "close")
                        {
                            seed.Value = seed.MaxValue;
                            seed.StopTask();
                            task.Description = p.Batch is { } b
                                ? Markup.Escape($"month close: {p.Done:N0} of {p.Total:N0} settled; batch {b.Succeeded + b.Failed:N0}/{b.Total:N0} jobs, {b.Pending:N0} pending")
                                : "month close";
                        }
                        else if (p.Stage == "check")
                        {
                            close.StopTask();
                        }
                    },
                    cancellationToken);
                context.Refresh();
            });
        return report!;
    }
}
