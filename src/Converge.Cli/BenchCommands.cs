using System.CommandLine;
using System.CommandLine.Parsing;
using Converge.Bench;
using Converge.Runtime;
using Converge.Sqlite;

namespace Converge.Cli;

/// <summary><c>converge bench messages|sagas|jobs|ceiling</c>: what the library and the disk can do here.</summary>
internal static class BenchCommands
{
    public static Command Create(CliOutput output) => new("bench", "Measure end-to-end message, saga and background-job throughput, or the raw SQLite ceiling of this disk.")
    {
        Messages(output),
        Sagas(output),
        Jobs(output),
        Log(output),
        Dashboard(output),
        Ceiling(output),
    };

    static Command Dashboard(CliOutput output)
    {
        var jobs = new Option<int>("--jobs") { Description = "Finished jobs seeded, over four job queues; every 100th in a batch.", HelpName = "N", DefaultValueFactory = _ => 1_000_000 };
        var sagas = new Option<int>("--sagas") { Description = "Saga instances seeded, over three definitions and every state.", HelpName = "N", DefaultValueFactory = _ => 100_000 };
        var deadLetters = new Option<int>("--dead-letters") { Description = "Dead letters seeded, over four sources and three reasons.", HelpName = "N", DefaultValueFactory = _ => 100_000 };
        var requests = new Option<int>("--requests") { Description = "Requests per page: rounds over every page, one request per page a round.", HelpName = "N", DefaultValueFactory = _ => 20 };
        var budget = new Option<double>("--budget-ms") { Description = "The most a page's median server time (its Server-Timing) may be.", HelpName = "MS", DefaultValueFactory = _ => 300 };
        var heapGrowth = new Option<double>("--heap-growth-mb") { Description = "The most the GC heap, after a full collection, may grow from the first round to the last.", HelpName = "MB", DefaultValueFactory = _ => 64 };
        var store = new BenchStoreOptions(
            "Where to put the database (a new file, kept after the run). Default: a temporary file, deleted.",
            "Run on PostgreSQL instead of SQLite: an Npgsql connection string. The store gets a new schema, dropped after the run.");
        var schema = new Option<string>("--schema") { Description = "With --postgres: the new schema to seed (kept after the run) instead of a generated one.", HelpName = "S" };
        var json = CommonOptions.Json();
        AtLeast(jobs, 300);
        AtLeast(sagas, 300);
        AtLeast(deadLetters, 300);
        AtLeast(requests, 1);
        budget.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<double>() is var ms && !(ms >= 0 && double.IsFinite(ms)))
            {
                result.AddError("--budget-ms must be a number of milliseconds, 0 or more.");
            }
        });
        heapGrowth.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<double>() is var mb && !(mb >= 0 && double.IsFinite(mb)))
            {
                result.AddError("--heap-growth-mb must be a number of megabytes, 0 or more.");
            }
        });
        var command = new Command("dashboard", "Seed a new store with finished jobs, sagas and dead letters, serve the dashboard in-process on 127.0.0.1 as 'converge dashboard' does, request every page (lists with and without filters, pages six deep, one of each item, the log, the audit) --requests times, and report each page's median and p99 server time (its Server-Timing header) and client time, and the process's memory. Fails if a page answers other than 200, a median is over --budget-ms, or the GC heap grows over --heap-growth-mb from the first round to the last.")
        {
            jobs, sagas, deadLetters, requests, budget, heapGrowth, schema, json,
        };
        // The dashboard reads the store: no broker option.
        store.AddTo(command, broker: false);
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var (path, postgres, _) = store.Resolve(parsed);
            if (parsed.GetValue(schema) is not null && postgres is null)
            {
                throw new CliException(CliApp.Usage, "--schema needs --postgres.");
            }

            var report = await DashboardBench.RunAsync(
                new DashboardBenchSettings
                {
                    Jobs = parsed.GetValue(jobs),
                    Sagas = parsed.GetValue(sagas),
                    DeadLetters = parsed.GetValue(deadLetters),
                    Requests = parsed.GetValue(requests),
                    BudgetMs = parsed.GetValue(budget),
                    HeapGrowthMb = parsed.GetValue(heapGrowth),
                    DbPath = path,
                    Postgres = postgres,
                    Schema = parsed.GetValue(schema),
                },
                output.Error,
                cancellationToken);
            if (parsed.GetValue(json))
            {
                await output.WriteMeasuredJsonAsync(report);
                return CliApp.Success;
            }

            var table = CliOutput.Table("Page", "Server p50 (ms)", "Server p99 (ms)", "Client p50 (ms)", "Client p99 (ms)", "Bytes");
            foreach (var page in report.Pages)
            {
                CliOutput.AddRow(table, page.Page, page.ServerMedianMs, page.ServerP99Ms, page.ClientMedianMs, page.ClientP99Ms, page.Bytes);
            }

            output.Console().Write(table);
            var figures = CliOutput.Table("Figure", "Value");
            CliOutput.AddRow(figures, "store", report.Store);
            CliOutput.AddRow(figures, "seeded", $"{report.Jobs:N0} finished jobs, {report.Sagas:N0} sagas, {report.DeadLetters:N0} dead letters");
            CliOutput.AddRow(figures, "seeding (s)", report.SeedSeconds);
            CliOutput.AddRow(figures, "requests per page", report.Requests);
            CliOutput.AddRow(figures, "slowest page (server p50, ms)", $"{report.SlowestPage}: {CliOutput.Format(report.SlowestServerMedianMs)}");
            CliOutput.AddRow(figures, "working set before seeding / after seeding / after requests (MB)", $"{CliOutput.Format(report.WorkingSetBeforeSeedMb)} / {CliOutput.Format(report.WorkingSetAfterSeedMb)} / {CliOutput.Format(report.WorkingSetAfterRequestsMb)}");
            CliOutput.AddRow(figures, "GC heap after a full collection, round 1 / last (MB)", $"{CliOutput.Format(report.HeapAfterFirstRoundMb)} / {CliOutput.Format(report.HeapAfterLastRoundMb)}");
            CliOutput.AddRow(figures, "load average before / after", $"{report.LoadAverageBefore?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"} / {report.LoadAverageAfter?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"}");
            CliOutput.AddRow(figures, "verified", $"every page answered 200 with its Server-Timing, every median within {CliOutput.Format(report.BudgetMs)} ms, the heap bounded");
            CliOutput.AddRow(figures, "peak working set (MB)", CliOutput.PeakWorkingSetMegabytes());
            output.Console().Write(figures);
            return CliApp.Success;
        });
        return command;
    }

    static Command Log(CliOutput output)
    {
        var count = new Option<int>("--count") { Description = "Events appended in batched transactions, then read over HTTP.", HelpName = "N", DefaultValueFactory = _ => 100_000 };
        var single = new Option<int>("--single") { Description = "Events appended one per transaction first.", HelpName = "N", DefaultValueFactory = _ => 2_000 };
        var appendBatch = new Option<int>("--append-batch") { Description = "Events per batched transaction.", HelpName = "N", DefaultValueFactory = _ => 100 };
        var clients = new Option<int>("--clients") { Description = "Clients reading the whole log at once.", HelpName = "N", DefaultValueFactory = _ => 50 };
        var rebuildEvents = new Option<int>("--rebuild-events") { Description = "Events of the projection rebuild, appended to a store of their own; 0 skips the rebuild.", HelpName = "N", DefaultValueFactory = _ => 200_000 };
        var rebuildStreams = new Option<int>("--rebuild-streams") { Description = "Streams the rebuild's events are spread over; the projection keeps a row per stream.", HelpName = "N", DefaultValueFactory = _ => 10_000 };
        var rebuildBatch = new Option<int?>("--rebuild-batch") { Description = "Events per batch of the rebuilt projection. Default: the library's (1,000).", HelpName = "N" };
        var store = new BenchStoreOptions("Where to put the database (a new file, kept after the run; the rebuild's store beside it, FILE.rebuild, deleted). Default: a temporary file, deleted.");
        var json = CommonOptions.Json();
        AtLeast(count, 1);
        AtLeast(single, 1);
        AtLeast(appendBatch, 1);
        AtLeast(clients, 1);
        AtLeast(rebuildEvents, 0);
        AtLeast(rebuildStreams, 1);
        rebuildBatch.Validators.Add(result =>
        {
            if (result.ParsedNullable<int>() is { } b && b is < 1 or > 100_000)
            {
                result.AddError("--rebuild-batch must be between 1 and 100000.");
            }
        });
        var command = new Command("log", "Append events to the log (one per transaction, then in batches) and read the whole log over loopback HTTP with one NDJSON client, one Server-Sent Events client, and many clients at once; verify every client saw every event once, in order. Then rebuild a projection from position 0 on a store of its own, as Marten's peer does (200,000 events over 10,000 streams, a row per stream), and verify its rows.")
        {
            count, single, appendBatch, clients, rebuildEvents, rebuildStreams, rebuildBatch, json,
        };
        // The log stays in the store: no broker option.
        store.AddTo(command, broker: false);
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var (path, postgres, _) = store.Resolve(parsed);
            var report = await LogBench.RunAsync(
                new LogBenchSettings
                {
                    Count = parsed.GetValue(count),
                    Single = parsed.GetValue(single),
                    AppendBatch = parsed.GetValue(appendBatch),
                    Clients = parsed.GetValue(clients),
                    DbPath = path,
                    Postgres = postgres,
                    RebuildEvents = parsed.GetValue(rebuildEvents),
                    RebuildStreams = parsed.GetValue(rebuildStreams),
                    RebuildBatch = parsed.GetValue(rebuildBatch),
                },
                output.Error,
                cancellationToken);
            if (parsed.GetValue(json))
            {
                await output.WriteMeasuredJsonAsync(report);
                return CliApp.Success;
            }

            var table = CliOutput.Table("Figure", "Value");
            CliOutput.AddRow(table, "store", report.Store);
            CliOutput.AddRow(table, "events", report.Events);
            CliOutput.AddRow(table, "append, one per transaction (events/s)", report.AppendSinglePerSecond);
            CliOutput.AddRow(table, $"append, {report.AppendBatch} per transaction (events/s)", report.AppendBatchedPerSecond);
            CliOutput.AddRow(table, "HTTP, one NDJSON client (events/s)", report.NdjsonPerSecond);
            CliOutput.AddRow(table, "HTTP, one SSE client (events/s)", report.SsePerSecond);
            CliOutput.AddRow(table, $"HTTP, {report.Clients} clients at once (events/s, all)", report.ClientsTotalPerSecond);
            CliOutput.AddRow(table, $"HTTP, {report.Clients} clients at once (s, slowest)", report.ClientsSlowestSeconds);
            CliOutput.AddRow(table, "bytes per event on the wire", report.BytesPerEvent);
            if (report.Rebuild is { } rebuild)
            {
                CliOutput.AddRow(table, $"rebuild: {rebuild.Events} events over {rebuild.Streams} streams, appended (events/s, 100 per transaction)", rebuild.AppendPerSecond);
                CliOutput.AddRow(table, $"rebuild from 0, batches of {rebuild.BatchSize} (events/s, by the catalogue)", rebuild.PerSecond);
                CliOutput.AddRow(table, "rebuild from 0 (events/s, wall clock from registering)", rebuild.WallPerSecond);
                CliOutput.AddRow(table, "rebuild from 0 (s, wall clock)", rebuild.Seconds);
            }

            CliOutput.AddRow(table, "verified", report.Rebuild is null ? "every client saw every event once, in order" : "every client saw every event once, in order; every stream's row rebuilt with its count and sum");
            CliOutput.AddRow(table, "peak working set (MB)", CliOutput.PeakWorkingSetMegabytes());
            output.Console().Write(table);
            return CliApp.Success;
        });
        return command;
    }

    static Command Jobs(CliOutput output)
    {
        var count = new Option<int>("--count") { Description = "Jobs per run.", HelpName = "N", Required = true };
        var store = new BenchStoreOptions("Where to put the database (a new file, recreated for every run and kept after the last). Default: a temporary file, deleted.");
        var runs = new Option<int>("--runs") { Description = "Measured runs, each on a fresh file; figures are medians.", HelpName = "N", DefaultValueFactory = _ => 1 };
        var warmup = new Option<int>("--warmup") { Description = "Jobs of an unreported warm-up run first; at most --count; 0 to skip.", HelpName = "N", DefaultValueFactory = _ => 100_000 };
        var concurrency = new Option<int>("--concurrency") { Description = "Jobs running at once in the worker (the queue's Concurrency).", HelpName = "N", DefaultValueFactory = _ => 64 };
        var batchSize = new Option<int?>("--batch-size") { Description = "Jobs claimed at once (the queue's BatchSize). Default: the library's (256).", HelpName = "N" };
        var durability = new Option<string>("--durability") { Description = "full (default: every commit reaches the disk) or normal.", HelpName = "full|normal", DefaultValueFactory = _ => "full" };
        durability.AcceptOnlyFromAmong("full", "normal");
        var json = CommonOptions.Json();
        AtLeast(count, 1);
        AtLeast(runs, 1);
        AtLeast(warmup, 0);
        concurrency.Validators.Add(result =>
        {
            if (result.Parsed<int>() is < 1 or > 1024)
            {
                result.AddError("--concurrency must be between 1 and 1024.");
            }
        });
        batchSize.Validators.Add(result =>
        {
            if (result.ParsedNullable<int>() is { } b && b is < 1 or > 10_000)
            {
                result.AddError("--batch-size must be between 1 and 10000.");
            }
        });
        var command = new Command("jobs", "Enqueue N no-op background jobs through the job client (transactions of 1,000, no worker running), then start a worker and time until every job's outcome committed; verify each ran exactly once.")
        {
            count, runs, warmup, concurrency, batchSize, durability, json,
        };
        store.AddTo(command);
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var (path, postgres, rabbitMq) = store.Resolve(parsed);
            var settings = new JobsBenchSettings
            {
                Count = parsed.GetValue(count),
                DbPath = path,
                Postgres = postgres,
                RabbitMq = rabbitMq,
                Runs = parsed.GetValue(runs),
                WarmupCount = parsed.GetValue(warmup),
                Concurrency = parsed.GetValue(concurrency),
                BatchSize = parsed.GetValue(batchSize),
                Durability = parsed.GetValue(durability) == "normal" ? SqliteDurability.Normal : SqliteDurability.Full,
            };
            var report = await JobsBench.RunAsync(settings, output.Error, cancellationToken);
            if (parsed.GetValue(json))
            {
                await output.WriteMeasuredJsonAsync(report);
                return CliApp.Success;
            }

            var table = CliOutput.Table("Figure", "Value");
            CliOutput.AddRow(table, "jobs", report.Jobs);
            CliOutput.AddRow(table, "jobs per second (drain)", report.JobsPerSecond);
            CliOutput.AddRow(table, "drain seconds", report.Seconds);
            CliOutput.AddRow(table, "enqueued per second", report.EnqueuePerSecond);
            CliOutput.AddRow(table, "enqueue seconds", report.EnqueueSeconds);
            CliOutput.AddRow(table, "concurrency / batch size", $"{report.Concurrency} / {report.BatchSize}");
            CliOutput.AddRow(table, "jobs per enqueue transaction", report.EnqueueBatchSize);
            CliOutput.AddRow(table, "durability", report.Durability);
            CliOutput.AddRow(table, "runs", report.Runs);
            if (report.JobsPerSecondRuns is { } drained && report.EnqueuePerSecondRuns is { } enqueued)
            {
                CliOutput.AddRow(table, "per run, drain (jobs/s)", string.Join(", ", drained.Select(v => CliOutput.Format(v))));
                CliOutput.AddRow(table, "per run, enqueue (jobs/s)", string.Join(", ", enqueued.Select(v => CliOutput.Format(v))));
            }

            CliOutput.AddRow(table, "verified", "every job ran exactly once, queue empty, no dead letters");
            CliOutput.AddRow(table, "peak working set (MB)", CliOutput.PeakWorkingSetMegabytes());
            output.Console().Write(table);
            return CliApp.Success;
        });
        return command;
    }

    static Command Sagas(CliOutput output)
    {
        var count = new Option<int>("--count") { Description = "Sagas per run.", HelpName = "N", Required = true };
        var store = new BenchStoreOptions("Where to put the database (a new file, recreated for every run and kept after the last). Default: a temporary file, deleted.");
        var runs = new Option<int>("--runs") { Description = "Measured runs, each on a fresh file; figures are medians.", HelpName = "N", DefaultValueFactory = _ => 1 };
        var warmup = new Option<int>("--warmup") { Description = "Sagas of an unreported warm-up run first; at most --count; 0 to skip.", HelpName = "N", DefaultValueFactory = _ => 20_000 };
        var sagaBatch = new Option<int?>("--batch-size") { Description = "Messages claimed and handled per transaction on every queue. Default: the library's (256).", HelpName = "N" };
        var timeouts = new Option<bool>("--timeouts") { Description = "Give every step a timeout (one scheduled message per step), as production sagas usually have." };
        var sagaIsolation = CommonOptions.Isolation("every queue (the saga's and its participants')");
        var durability = new Option<string>("--durability") { Description = "full (default: every commit reaches the disk) or normal.", HelpName = "full|normal", DefaultValueFactory = _ => "full" };
        durability.AcceptOnlyFromAmong("full", "normal");
        var json = CommonOptions.Json();
        AtLeast(count, 1);
        AtLeast(runs, 1);
        var command = new Command("sagas", "Run N three-step orchestrated sagas (reserve credit, charge, ship) with participants on their own queues, fully durable on SQLite (or PostgreSQL with --postgres), and verify each completed exactly once.")
        {
            count, runs, warmup, sagaBatch, sagaIsolation, timeouts, durability, json,
        };
        store.AddTo(command);
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var (path, postgres, rabbitMq) = store.Resolve(parsed);
            var settings = new SagasBenchSettings
            {
                Count = parsed.GetValue(count),
                DbPath = path,
                Postgres = postgres,
                RabbitMq = rabbitMq,
                Runs = parsed.GetValue(runs),
                WarmupCount = parsed.GetValue(warmup),
                Timeouts = parsed.GetValue(timeouts),
                BatchSize = parsed.GetValue(sagaBatch),
                Isolation = CommonOptions.IsolationOf(parsed.GetValue(sagaIsolation)),
                Durability = parsed.GetValue(durability) == "normal" ? SqliteDurability.Normal : SqliteDurability.Full,
            };
            var report = await SagasBench.RunAsync(settings, output.Error, cancellationToken);
            if (parsed.GetValue(json))
            {
                await output.WriteMeasuredJsonAsync(report);
                return CliApp.Success;
            }

            var table = CliOutput.Table("Figure", "Value");
            CliOutput.AddRow(table, "sagas", report.Sagas);
            CliOutput.AddRow(table, "seconds", report.Seconds);
            CliOutput.AddRow(table, "sagas per second", report.PerSecond);
            CliOutput.AddRow(table, "saga duration p50 / p99 (ms)", $"{CliOutput.Format(report.P50Ms)} / {CliOutput.Format(report.P99Ms)}");
            CliOutput.AddRow(table, "step timeouts", report.Timeouts ? "yes" : "no");
            CliOutput.AddRow(table, "isolation", report.Isolation);
            CliOutput.AddRow(table, "durability", report.Durability);
            CliOutput.AddRow(table, "runs", report.Runs);
            if (report.PerSecondRuns is { } each)
            {
                CliOutput.AddRow(table, "per run (sagas/s)", string.Join(", ", each.Select(v => CliOutput.Format(v))));
            }

            CliOutput.AddRow(table, "verified", "every participant command took effect once, every saga completed once, queues empty");
            CliOutput.AddRow(table, "peak working set (MB)", CliOutput.PeakWorkingSetMegabytes());
            output.Console().Write(table);
            return CliApp.Success;
        });
        return command;
    }

    static Command Messages(CliOutput output)
    {
        var count = new Option<int>("--count") { Description = "Messages per run.", HelpName = "N", Required = true };
        var rate = new Option<double?>("--rate") { Description = "Send at this fixed rate (messages per second, one per transaction) and measure latency from each message's scheduled time. Without it: send as fast as possible in transactions of 1,000.", HelpName = "R" };
        var store = new BenchStoreOptions("Where to put the bench database (a new file; kept after the last run). Default: a temporary file, deleted.");
        var batchSize = new Option<int?>("--batch-size") { Description = "The queue's BatchSize (default: the library default).", HelpName = "B" };
        var concurrency = new Option<int>("--concurrency") { Description = "Consumers of the queue at once in the process, each with a batch in a transaction of its own (the queue's Concurrency). On SQLite writes take turns, so more only help handlers that wait on something else.", HelpName = "N", DefaultValueFactory = _ => 1 };
        var isolation = CommonOptions.Isolation("the queue");
        var durability = new Option<string>("--durability") { Description = "SQLite synchronous setting of the store.", DefaultValueFactory = _ => "full" };
        durability.AcceptOnlyFromAmong("full", "normal");
        var sender = new Option<string>("--sender") { Description = "Whose transaction the outbox sends are made in: 'converge' (bus.BeginTransactionAsync, queued with Converge's own writers) or 'own' (the caller's own SqliteConnection transaction).", DefaultValueFactory = _ => "converge" };
        sender.AcceptOnlyFromAmong("converge", "own");
        var runs = new Option<int>("--runs") { Description = "Measured runs, each on a fresh file; figures are medians.", HelpName = "K", DefaultValueFactory = _ => 1 };
        var warmup = new Option<int>("--warmup") { Description = "Messages of an unreported warm-up run first, sent as fast as possible so the runtime has reached its steady state (tiered compilation, heap sizes) before measuring; at most --count, so by default one full-size run; 0 to skip.", HelpName = "N", DefaultValueFactory = _ => 100_000 };
        var json = CommonOptions.Json();
        AtLeast(count, 1);
        AtLeast(runs, 1);
        AtLeast(warmup, 0);
        batchSize.Validators.Add(result =>
        {
            if (result.ParsedNullable<int>() is { } b && b is < 1 or > 10_000)
            {
                result.AddError("--batch-size must be between 1 and 10000.");
            }
        });
        concurrency.Validators.Add(result =>
        {
            if (result.Parsed<int>() is < 1 or > 64)
            {
                result.AddError("--concurrency must be between 1 and 64.");
            }
        });
        rate.Validators.Add(result =>
        {
            if (result.ParsedNullable<double>() is { } r && !(r > 0 && double.IsFinite(r)))
            {
                result.AddError("--rate must be a positive number of messages per second.");
            }
        });

        var command = new Command("messages", "Send N messages through the outbox to an in-process consumer whose handler writes one row per message, and verify every one was handled exactly once.")
        {
            count, rate, batchSize, concurrency, isolation, durability, sender, runs, warmup, json,
        };
        store.AddTo(command);
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var (path, postgres, rabbitMq) = store.Resolve(parsed);
            var settings = new MessagesBenchSettings
            {
                Count = parsed.GetValue(count),
                Rate = parsed.GetValue(rate),
                DbPath = path,
                Postgres = postgres,
                RabbitMq = rabbitMq,
                BatchSize = parsed.GetValue(batchSize),
                Concurrency = parsed.GetValue(concurrency),
                Isolation = CommonOptions.IsolationOf(parsed.GetValue(isolation)),
                Durability = parsed.GetValue(durability) == "normal" ? SqliteDurability.Normal : SqliteDurability.Full,
                Sender = parsed.GetValue(sender) == "own" ? OutboxSender.Own : OutboxSender.Converge,
                Runs = parsed.GetValue(runs),
                WarmupCount = parsed.GetValue(warmup),
            };
            var report = await MessagesBench.RunAsync(settings, output.Error, cancellationToken);
            if (parsed.GetValue(json))
            {
                await output.WriteMeasuredJsonAsync(report);
                return CliApp.Success;
            }

            var table = CliOutput.Table("Figure", "Value");
            CliOutput.AddRow(table, "mode", report.Rate is null ? "throughput (send as fast as possible)" : $"fixed rate {CliOutput.Format(report.Rate)} msg/s");
            CliOutput.AddRow(table, "messages", report.Messages);
            CliOutput.AddRow(table, "seconds", report.Seconds);
            CliOutput.AddRow(table, "messages per second", report.PerSecond);
            CliOutput.AddRow(table, "latency p50 (ms)", report.P50Ms);
            CliOutput.AddRow(table, "latency p99 (ms)", report.P99Ms);
            CliOutput.AddRow(table, "latency max (ms)", report.MaxMs);
            CliOutput.AddRow(table, "batch size", report.BatchSize);
            CliOutput.AddRow(table, "consumers (concurrency)", report.Concurrency);
            CliOutput.AddRow(table, "isolation", report.Isolation);
            CliOutput.AddRow(table, "durability", report.Durability);
            CliOutput.AddRow(table, "outbox sender", report.Sender);
            CliOutput.AddRow(table, "runs", report.Runs);
            if (report.PerSecondRuns is { } each)
            {
                CliOutput.AddRow(table, "per run (msg/s)", string.Join(", ", each.Select(v => CliOutput.Format(v))));
            }

            CliOutput.AddRow(table, "verified", "every message handled exactly once, queue empty");
            CliOutput.AddRow(table, "peak working set (MB)", CliOutput.PeakWorkingSetMegabytes());
            output.Console().Write(table);
            return CliApp.Success;
        });
        return command;
    }

    static Command Ceiling(CliOutput output)
    {
        var db = new Option<string>("--db") { Description = "Where to put the scratch database (a new file; deleted afterwards). Default: a temporary file.", HelpName = "FILE" };
        var commits = new Option<int>("--commits") { Description = "Single-row transactions to commit.", HelpName = "N", DefaultValueFactory = _ => 5_000 };
        var rows = new Option<int>("--rows") { Description = "Rows to insert in batched transactions.", HelpName = "N", DefaultValueFactory = _ => 500_000 };
        var batchRows = new Option<int>("--batch-rows") { Description = "Rows per batched transaction.", HelpName = "N", DefaultValueFactory = _ => 1_000 };
        var json = CommonOptions.Json();
        AtLeast(commits, 1);
        AtLeast(batchRows, 1);
        AtLeast(rows, 1);
        var command = new Command("ceiling", "Measure raw SQLite on this disk (WAL, synchronous=FULL, prepared commands, one connection): single-row commits per second and rows per second in batches.")
        {
            db, commits, rows, batchRows, json,
        };
        command.Validators.Add(result =>
        {
            if (result.GetValue(rows) < result.GetValue(batchRows))
            {
                result.AddError("--rows must be at least --batch-rows.");
            }
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var path = parsed.GetValue(db);
            if (path is not null && (File.Exists(path) || Directory.Exists(path)))
            {
                throw new CliException(CliApp.Usage, $"{path} already exists. Pass a path for a new scratch file (it is deleted afterwards).");
            }

            var settings = new CeilingBenchSettings
            {
                DbPath = path is null ? null : Path.GetFullPath(path),
                SingleRowCommits = parsed.GetValue(commits),
                BatchedRows = parsed.GetValue(rows),
                BatchRows = parsed.GetValue(batchRows),
            };
            var result = await Task.Run(() => CeilingBench.Run(settings, output.Error, cancellationToken), cancellationToken);
            if (parsed.GetValue(json))
            {
                await output.WriteMeasuredJsonAsync(result);
                return CliApp.Success;
            }

            var table = CliOutput.Table("Figure", "Value");
            CliOutput.AddRow(table, "single-row commits per second", result.SingleRowCommitsPerSecond);
            CliOutput.AddRow(table, "mean commit (ms)", result.SingleRowCommitMs);
            CliOutput.AddRow(table, "commit p50 / p99 / max (ms)", $"{CliOutput.Format(result.SingleRowCommitP50Ms)} / {CliOutput.Format(result.SingleRowCommitP99Ms)} / {CliOutput.Format(result.SingleRowCommitMaxMs)}");
            CliOutput.AddRow(table, $"rows per second in transactions of {result.BatchRows:N0}", result.BatchedRowsPerSecond);
            CliOutput.AddRow(table, "single-row commits", result.SingleRowCommits);
            CliOutput.AddRow(table, "batched rows", result.BatchedRows);
            CliOutput.AddRow(table, "journal mode / synchronous", $"{result.JournalMode} / {result.Synchronous}");
            CliOutput.AddRow(table, "SQLite", result.SqliteVersion);
            CliOutput.AddRow(table, "peak working set (MB)", CliOutput.PeakWorkingSetMegabytes());
            output.Console().Write(table);
            return CliApp.Success;
        });
        return command;
    }

    static void AtLeast(Option<int> option, int minimum) =>
        option.Validators.Add(result =>
        {
            if (result.Parsed<int>() < minimum)
            {
                result.AddError($"{option.Name} must be at least {minimum}.");
            }
        });
}
