using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Converge.Bench;
using Converge.PostgreSql;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Npgsql;

namespace Converge.Cli;

/// <summary>What <c>converge bench dashboard</c> measures.</summary>
internal sealed record DashboardBenchSettings
{
    public int Jobs { get; init; } = 1_000_000;

    public int Sagas { get; init; } = 100_000;

    public int DeadLetters { get; init; } = 100_000;

    /// <summary>Rounds over every page; each page is requested once a round.</summary>
    public int Requests { get; init; } = 20;

    /// <summary>The most a page's median server time may be.</summary>
    public double BudgetMs { get; init; } = 300;

    /// <summary>The most the GC heap (after a full collection) may grow from the first round to the last.</summary>
    public double HeapGrowthMb { get; init; } = 64;

    /// <summary>A new SQLite file, kept afterwards; null for a temporary one, deleted.</summary>
    public string? DbPath { get; init; }

    public string? Postgres { get; init; }

    /// <summary>A new PostgreSQL schema, kept afterwards; null for a generated one, dropped.</summary>
    public string? Schema { get; init; }

    /// <summary>For tests: middleware put in front of the dashboard, to plant a broken, slow or leaking page.</summary>
    internal Func<HttpContext, Func<Task>, Task>? Fault { get; init; }
}

/// <summary>One page's figures over the rounds.</summary>
internal sealed record DashboardPageTiming(string Page, string Path, int Requests, double ServerMedianMs, double ServerP99Ms, double ClientMedianMs, double ClientP99Ms, int Bytes);

internal sealed record DashboardBenchReport(
    string Store,
    string Dashboard,
    int Jobs,
    int Sagas,
    int DeadLetters,
    double SeedSeconds,
    int Requests,
    double BudgetMs,
    IReadOnlyList<DashboardPageTiming> Pages,
    string SlowestPage,
    double SlowestServerMedianMs,
    double WorkingSetBeforeSeedMb,
    double WorkingSetAfterSeedMb,
    double WorkingSetAfterRequestsMb,
    double HeapAfterFirstRoundMb,
    double HeapAfterLastRoundMb,
    double? LoadAverageBefore,
    double? LoadAverageAfter,
    bool Verified);

/// <summary>
/// Seeds a new store with finished jobs, sagas and dead letters (the internal seeders), serves the dashboard in-process
/// the way <c>converge dashboard</c> does (<see cref="DashboardCommand.Build"/>, signed in with its one-time token) on
/// 127.0.0.1, and requests every page round after round, reading each page's <c>Server-Timing</c>.
/// </summary>
internal static partial class DashboardBench
{
    /// <exception cref="BenchVerificationException">A page answered other than 200, had no timing, was over the budget, or the heap grew.</exception>
    public static async Task<DashboardBenchReport> RunAsync(DashboardBenchSettings settings, TextWriter progress, CancellationToken cancellationToken)
    {
        var loadBefore = LoadAverage();
        var workingSetBefore = WorkingSetMb();
        var temporary = settings.Postgres is null && settings.DbPath is null;
        var path = settings.DbPath ?? Path.Combine(Path.GetTempPath(), "converge-dashbench-" + Guid.NewGuid().ToString("N")[..12] + ".db");
        var schema = settings.Postgres is null ? null : settings.Schema ?? "bench_" + Guid.NewGuid().ToString("N")[..12];
        IMessageStore store;
        try
        {
            store = settings.Postgres is null
                ? new SqliteMessageStore(new SqliteStoreOptions { Path = path }, CliApp.Clock)
                : new PostgreSqlMessageStore(new PostgreSqlStoreOptions { ConnectionString = settings.Postgres, Schema = schema! }, CliApp.Clock);
        }
        catch (ArgumentException invalid)
        {
            // A reserved schema name, a connection string Npgsql cannot read.
            throw new CliException(CliApp.Usage, invalid.Message);
        }

        try
        {
            if (schema is not null && await SchemaExistsAsync(settings.Postgres!, schema, cancellationToken))
            {
                throw new CliException(CliApp.Usage, $"Schema {schema} already exists. Pass a new one: the bench seeds it from empty.");
            }

            await progress.WriteLineAsync($"seeding {settings.Jobs:N0} finished jobs, {settings.Sagas:N0} sagas, {settings.DeadLetters:N0} dead letters into {(schema is null ? path : "schema " + schema)}...");
            var seeding = Stopwatch.StartNew();

            // Three rows a millisecond (3,000 a second), running until a minute from now: while the pages are requested,
            // the overview's count of recent activity reads up to a minute of them (180,000), more than a store handling
            // 3,000 a second holds in its window. (History in the far future would put every row in that count.)
            var start = CliApp.Clock.GetUtcNow() + TimeSpan.FromMinutes(1) - TimeSpan.FromMilliseconds((Math.Max(settings.Jobs, Math.Max(settings.Sagas, settings.DeadLetters)) / 3) + 1);
            if (store is SqliteMessageStore sqlite)
            {
                await SqliteSeeder.SeedAsync(sqlite, new SeedShape(settings.Jobs, settings.Sagas, settings.DeadLetters) { Start = start }, cancellationToken);
            }
            else
            {
                await PostgreSqlSeeder.SeedAsync((PostgreSqlMessageStore)store, settings.Jobs, settings.Sagas, settings.DeadLetters, cancellationToken, start: start);
            }

            var seedSeconds = seeding.Elapsed.TotalSeconds;
            await progress.WriteLineAsync($"seeded in {seedSeconds:0.0} s");
            var workingSetAfterSeed = WorkingSetMb();
            return await MeasureAsync(store, settings, schema is null ? path : "schema " + schema, seedSeconds, loadBefore, workingSetBefore, workingSetAfterSeed, progress, cancellationToken);
        }
        finally
        {
            await store.DisposeAsync();
            if (temporary || (settings.Postgres is not null && settings.Schema is null))
            {
                Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
                await BenchStores.DeleteAsync(settings.Postgres, schema ?? path);
            }
        }
    }

    static async Task<DashboardBenchReport> MeasureAsync(IMessageStore store, DashboardBenchSettings settings, string where, double seedSeconds, double? loadBefore, double workingSetBefore, double workingSetAfterSeed, TextWriter progress, CancellationToken cancellationToken)
    {
        await using var app = DashboardCommand.Build(store, 0, readOnly: false, out var signIn);
        if (settings.Fault is { } fault)
        {
            app.Use(fault);
        }

        await app.StartAsync(cancellationToken);
        try
        {
            var address = new Uri(app.Urls.First());
            using var handler = new HttpClientHandler { CookieContainer = new CookieContainer(), AllowAutoRedirect = false };
            using var client = new HttpClient(handler) { BaseAddress = address, Timeout = TimeSpan.FromMinutes(5) };
            using (var login = await client.GetAsync(new Uri("/login?token=" + signIn.Token, UriKind.Relative), cancellationToken))
            {
                if (login.StatusCode != HttpStatusCode.Redirect)
                {
                    throw new BenchVerificationException($"signing in with the one-time token answered {(int)login.StatusCode}, not a redirect.");
                }
            }

            var pages = await PagesAsync(client, cancellationToken);
            var server = pages.Select(_ => new List<double>()).ToList();
            var clientMs = pages.Select(_ => new List<double>()).ToList();
            var bytes = new int[pages.Count];
            var problems = new List<string>();
            double heapFirst = 0;
            for (var round = 0; round < settings.Requests; round++)
            {
                for (var p = 0; p < pages.Count; p++)
                {
                    var started = Stopwatch.GetTimestamp();
                    using var response = await client.GetAsync(new Uri(pages[p].Path, UriKind.Relative), cancellationToken);
                    var body = await response.Content.ReadAsByteArrayAsync(cancellationToken);
                    clientMs[p].Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                    bytes[p] = body.Length;
                    if (response.StatusCode != HttpStatusCode.OK)
                    {
                        problems.Add($"{pages[p].Name} ({pages[p].Path}) answered {(int)response.StatusCode} in round {round + 1}");
                    }
                    else if (ServerMs(response) is { } ms)
                    {
                        server[p].Add(ms);
                    }
                    else
                    {
                        problems.Add($"{pages[p].Name} ({pages[p].Path}) sent no Server-Timing page;dur in round {round + 1}");
                    }
                }

                if (round == 0)
                {
                    heapFirst = HeapMb();
                }
            }

            var heapLast = HeapMb();
            var workingSetAfter = WorkingSetMb();
            var timings = pages.Select((page, p) => new DashboardPageTiming(
                page.Name, page.Path, clientMs[p].Count,
                Percentile(server[p], 0.5), Percentile(server[p], 0.99),
                Percentile(clientMs[p], 0.5), Percentile(clientMs[p], 0.99), bytes[p])).ToList();
            foreach (var t in timings)
            {
                await progress.WriteLineAsync($"{t.Page,-34} server p50 {t.ServerMedianMs,8:0.0} ms  p99 {t.ServerP99Ms,8:0.0} ms  client p50 {t.ClientMedianMs,8:0.0} ms  p99 {t.ClientP99Ms,8:0.0} ms  {t.Bytes,8:N0} B  {t.Path}");
            }

            await progress.WriteLineAsync($"GC heap after a full collection: {heapFirst:0.0} MB after round 1, {heapLast:0.0} MB after round {settings.Requests}; working set {workingSetAfter:0.0} MB");
            foreach (var t in timings.Where(t => server[timings.IndexOf(t)].Count > 0 && t.ServerMedianMs > settings.BudgetMs))
            {
                problems.Add($"{t.Page} ({t.Path}) took {t.ServerMedianMs:0.0} ms on the server (median of {t.Requests}); the budget is {settings.BudgetMs:0.#} ms");
            }

            if (heapLast - heapFirst > settings.HeapGrowthMb)
            {
                problems.Add($"the GC heap grew from {heapFirst:0.0} MB after round 1 to {heapLast:0.0} MB after round {settings.Requests}; at most {settings.HeapGrowthMb:0.#} MB of growth is allowed");
            }

            if (problems.Count > 0)
            {
                throw new BenchVerificationException("verification failed: " + string.Join("; ", problems.Take(10)) + (problems.Count > 10 ? $"; and {problems.Count - 10} more" : "") + $" ({where}).");
            }

            var slowest = timings.MaxBy(t => t.ServerMedianMs)!;
            return new DashboardBenchReport(
                settings.Postgres is null ? "sqlite" : "postgresql",
                "converge dashboard's own application (DashboardCommand.Build), signed in with its one-time token as an operator",
                settings.Jobs, settings.Sagas, settings.DeadLetters, Math.Round(seedSeconds, 2), settings.Requests, settings.BudgetMs,
                timings, slowest.Page, slowest.ServerMedianMs,
                workingSetBefore, workingSetAfterSeed, workingSetAfter, heapFirst, heapLast,
                loadBefore, LoadAverage(), Verified: true);
        }
        finally
        {
            await app.StopAsync(CancellationToken.None);
        }
    }

    /// <summary>
    /// The pages with realistic parameters; ids and deep pages are found the way a person would: from the lists, and
    /// by following the Next link five times. These look-ups are not measured.
    /// </summary>
    static async Task<List<(string Name, string Path)>> PagesAsync(HttpClient client, CancellationToken cancellationToken)
    {
        const string Base = "/converge";
        async Task<string> Get(string path)
        {
            using var response = await client.GetAsync(new Uri(path, UriKind.Relative), cancellationToken);
            var body = await response.Content.ReadAsStringAsync(cancellationToken);
            return response.StatusCode == HttpStatusCode.OK ? body : throw new BenchVerificationException($"{path} answered {(int)response.StatusCode} while finding the pages to measure.");
        }

        async Task<string> Deep(string path)
        {
            for (var i = 0; i < 5; i++)
            {
                var next = NextLink().Match(await Get(path));
                if (!next.Success)
                {
                    throw new BenchVerificationException($"{path} has no Next link after {i} pages: seed more rows for a deep page.");
                }

                path = WebUtility.HtmlDecode(next.Groups[1].Value);
            }

            return path;
        }

        string First(Regex link, string html, string what) =>
            link.Match(html) is { Success: true } found ? WebUtility.HtmlDecode(found.Groups[1].Value) : throw new BenchVerificationException($"no {what} link on its list page.");

        var saga = First(SagaLink(), await Get(Base + "/sagas"), "saga");
        var job = First(JobLink(), await Get(Base + "/jobs"), "job");
        var deadLetter = First(DeadLetterLink(), await Get(Base + "/dead-letters"), "dead-letter");
        var transaction = Uri.UnescapeDataString(saga[(Base.Length + "/sagas/".Length)..]);
        return
        [
            ("overview", Base),
            ("sagas", Base + "/sagas"),
            ("sagas, state stuck", Base + "/sagas?state=stuck"),
            ("sagas, definition refund", Base + "/sagas?definition=refund"),
            ("sagas, 6th page", await Deep(Base + "/sagas")),
            ("saga", saga),
            ("flow of a transaction", Base + "/flow?id=" + Uri.EscapeDataString(transaction)),
            ("jobs", Base + "/jobs"),
            ("jobs, succeeded", Base + "/jobs?state=succeeded"),
            ("jobs, queue jobs-1", Base + "/jobs?queue=jobs-1"),
            ("jobs, batch batch-0", Base + "/jobs?batch=batch-0"),
            ("jobs, 6th page", await Deep(Base + "/jobs")),
            ("job", job),
            ("batch", Base + "/jobs/batches/batch-0"),
            ("recurring jobs", Base + "/jobs/recurring"),
            ("dead letters", Base + "/dead-letters"),
            ("dead letters, source payments", Base + "/dead-letters?source=payments"),
            ("dead letters, reason permanent-failure", Base + "/dead-letters?reason=" + DeadLetterReasons.PermanentFailure),
            ("dead letters, 6th page", await Deep(Base + "/dead-letters")),
            ("dead letter", deadLetter),
            ("log", Base + "/log"),
            ("log tail", Base + "/log/tail"),
            ("audit", Base + "/audit"),
        ];
    }

    [GeneratedRegex("rel=\"next\" href=\"([^\"]+)\"")]
    private static partial Regex NextLink();

    [GeneratedRegex("href=\"(/converge/sagas/[^\"?/]+)\"")]
    private static partial Regex SagaLink();

    [GeneratedRegex("href=\"(/converge/jobs/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\"")]
    private static partial Regex JobLink();

    [GeneratedRegex("href=\"(/converge/dead-letters/[0-9]+)\"")]
    private static partial Regex DeadLetterLink();

    static double? ServerMs(HttpResponseMessage response)
    {
        if (!response.Headers.TryGetValues("Server-Timing", out var values))
        {
            return null;
        }

        foreach (var value in values)
        {
            const string Prefix = "page;dur=";
            if (value.StartsWith(Prefix, StringComparison.Ordinal) && double.TryParse(value.AsSpan(Prefix.Length), NumberStyles.Float, CultureInfo.InvariantCulture, out var ms))
            {
                return ms;
            }
        }

        return null;
    }

    /// <summary>Nearest-rank percentile, to a tenth; 0 for no samples.</summary>
    static double Percentile(List<double> samples, double p) =>
        samples.Count == 0 ? 0 : Math.Round(MessagesBench.Percentile([.. samples.Order()], p), 1);

    static double WorkingSetMb() => Math.Round(Environment.WorkingSet / (1024.0 * 1024.0), 1);

    static double HeapMb()
    {
        // What survives a full, compacting collection (finalizers run in between): the heap's size after it, without
        // its free fragments. GC.GetTotalMemory is not used: on this runtime it can come out negative.
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        var info = GC.GetGCMemoryInfo(GCKind.FullBlocking);
        return Math.Round((info.HeapSizeBytes - info.FragmentedBytes) / (1024.0 * 1024.0), 1);
    }

    /// <summary>The machine's one-minute load average (Linux), for reading the figures; null elsewhere.</summary>
    static double? LoadAverage()
    {
        try
        {
            var first = File.ReadAllText("/proc/loadavg").Split(' ')[0];
            return double.Parse(first, CultureInfo.InvariantCulture);
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException or FormatException)
        {
            return null;
        }
    }

    static async Task<bool> SchemaExistsAsync(string postgres, string schema, CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(postgres);
        await connection.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand("SELECT EXISTS (SELECT 1 FROM information_schema.schemata WHERE schema_name = @s)", connection);
        command.Parameters.AddWithValue("s", schema);
        return (bool)(await command.ExecuteScalarAsync(cancellationToken))!;
    }
}
