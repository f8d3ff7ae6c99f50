using System.Globalization;
using Converge.AspNetCore;
using Converge.Client;
using Converge.Degraded;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Converge.Samples.Identity;

/// <summary>What the identity demo runs.</summary>
public sealed class IdentityDemoSettings
{
    public int Requests { get; init; } = 200;

    public int Seed { get; init; } = 42;

    /// <summary>The clock of every simulated latency, outage, deadline and measurement; the caller's composition root chooses it.</summary>
    public required TimeProvider Clock { get; init; }

    /// <summary>The database file (a new one); <c>null</c> for a temporary file. Ignored when <see cref="PostgreSql"/> is set.</summary>
    public string? DbPath { get; init; }

    /// <summary>A PostgreSQL connection string: the demo then runs in <see cref="Schema"/> of that database instead of a SQLite file.</summary>
    public string? PostgreSql { get; init; }

    /// <summary>With <see cref="PostgreSql"/>: the schema (it must not hold an identity run yet).</summary>
    public string Schema { get; init; } = "converge_identity";

    /// <summary>The mean pause between two requests' arrivals (exponentially distributed, seeded). Default 25 ms.</summary>
    public TimeSpan MeanArrivalGap { get; init; } = TimeSpan.FromMilliseconds(25);

    /// <summary>The share of the clients' HTTP responses cut short at a random byte. Default 0.5.</summary>
    public double CutShare { get; init; } = 0.5;

    /// <summary>The p99 time from submission to the full result must be under this. Default 10 s.</summary>
    public TimeSpan FullResultDeadline { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A client stops waiting for its result after this long. Default 60 s.</summary>
    public TimeSpan ClientGiveUp { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// When the licence register goes down, after the first request: by default at a fifth of the arrivals' expected
    /// span, for 30% of it, at least 1 s and at most 3 s.
    /// </summary>
    public (TimeSpan Start, TimeSpan End) Outage()
    {
        var span = MeanArrivalGap * Requests;
        var length = TimeSpan.FromTicks(Math.Clamp((span * 0.3).Ticks, TimeSpan.FromSeconds(1).Ticks, TimeSpan.FromSeconds(3).Ticks));
        return (span * 0.2, (span * 0.2) + length);
    }
}

/// <summary>Decision times of one stake tier, from submission to the client's decision.</summary>
public sealed record TierFigures(string Tier, int Requests, int Decided, int Accepted, int Refused, double P50Ms, double P99Ms);

/// <summary>
/// The identity demo's summary. <c>ConnectionsCut</c> counts responses the cutter cut short; <c>Reconnects</c> the
/// times a client connected again after a response ended (cut, or ended by the server). Grants are counted from the
/// dependency's stream at the end; <c>GrantsOpen</c> must be 0 (every grant revisited).
/// </summary>
public sealed record IdentityDemoReport(
    int Requests,
    int Completed,
    int Verified,
    int Refused,
    IReadOnlyList<TierFigures> Tiers,
    double FullResultP50Ms,
    double FullResultP99Ms,
    double DeadlineSeconds,
    int Gaps,
    int Duplicates,
    int Mismatches,
    long ConnectionsCut,
    long Reconnects,
    int GrantsMade,
    int GrantsConfirmed,
    int GrantsRevoked,
    int GrantsOpen,
    long TransientFailures,
    double OutageStartSeconds,
    double OutageEndSeconds,
    int StatisticsPublished,
    double Seconds,
    string Store,
    string Db,
    bool Passed,
    IReadOnlyList<string> Problems);

/// <summary>
/// Runs the identity service with the log served over HTTP in this process, submits N verifications at seeded random
/// moments, has one client per request follow its stream through a network that cuts connections, lets each client
/// decide by its stake, revisits the degraded grants once the register is back, and checks what the clients saw.
/// </summary>
public static class IdentityDemo
{
    public static async Task<IdentityDemoReport> RunAsync(IdentityDemoSettings settings, TextWriter progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(progress);
        if (settings.Requests < 1)
        {
            throw new ArgumentException($"The demo needs at least one request (got {settings.Requests}).", nameof(settings));
        }

        var clock = settings.Clock;
        var store = settings.PostgreSql is { } connectionString
            ? DemoStore.PostgreSql(connectionString, settings.Schema)
            : DemoStore.Sqlite(settings.DbPath ?? Path.Combine(Path.GetTempPath(), "converge-identity-" + Guid.NewGuid().ToString("N") + ".db"));
        if (store.IsPostgreSql ? await store.TableExistsAsync("identity_requests", cancellationToken) : File.Exists(store.Path))
        {
            throw new ArgumentException(store.IsPostgreSql
                ? $"Schema {store.Schema} already holds an identity run, and the demo needs a new one: pass another schema name, or drop it (DROP SCHEMA {store.Schema} CASCADE)."
                : $"{store.Path} already exists; the demo needs a new file.");
        }

        var (outageStart, outageEnd) = settings.Outage();
        var simulation = new IdentitySimulation(clock, settings.Seed, outageStart, outageEnd);
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(simulation);
        builder.Services.AddConverge(o =>
        {
            store.Use(o);
            o.TimeProvider = clock;
            IdentitySetup.Configure(o);
        });
        await using var app = builder.Build();
        app.MapConvergeLog("/log", o =>
        {
            o.AllowAnonymous = true; // a demo on the loopback interface
            o.MaxClients = (settings.Requests * 2) + 16; // a cut connection holds its place until the server notices
        });
        await app.StartAsync(cancellationToken);
        var address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single() + "/");
        var bus = app.Services.GetRequiredService<IMessageBus>();
        var jobs = app.Services.GetRequiredService<IJobClient>();
        var grants = app.Services.GetRequiredService<IDegradedGrants>();
        var messages = app.Services.GetRequiredService<IMessageStore>();
        await IdentitySetup.CreateTablesAsync(bus, cancellationToken);

        using var cutter = new ConnectionCutter(settings.CutShare, 2_000, settings.Seed);
        using var http = new HttpClient(cutter) { BaseAddress = address, Timeout = Timeout.InfiniteTimeSpan };
        long reconnects = 0;
        var log = new ConvergeLogClient(http, new ConvergeLogClientOptions
        {
            Path = "log",
            ReconnectDelay = TimeSpan.FromMilliseconds(20),
            MaxReconnectDelay = TimeSpan.FromMilliseconds(500),
            TimeProvider = clock,
            OnReconnect = _ => Interlocked.Increment(ref reconnects),
        });

        var numbers = new Dictionary<string, int>(StringComparer.Ordinal);
        var reviews = new List<DegradedReview>();
        var started = clock.GetTimestamp();
        simulation.Begin();
        await progress.WriteLineAsync(
            $"identity: {settings.Requests} requests on {store.Describe()}, log at {address}log; licence register down from {outageStart.TotalSeconds:0.00} s to {outageEnd.TotalSeconds:0.00} s");

        // The register comes back: its open grants are revisited at once.
        var recovery = Task.Run(
            async () =>
            {
                await simulation.WaitForRegisterAsync(cancellationToken);
                reviews.Add(await ReviewAsync(grants, simulation, numbers, cancellationToken));
            },
            cancellationToken);

        var clients = new List<Task<ClientRecord>>();
        for (var number = 1; number <= settings.Requests; number++)
        {
            await Task.Delay(simulation.ArrivalGap(number, settings.MeanArrivalGap), clock, cancellationToken);
            var requestId = "idv-" + number.ToString("D6", CultureInfo.InvariantCulture);
            lock (numbers)
            {
                numbers[requestId] = number;
            }

            var stake = simulation.StakeOf(number);
            var submittedAt = clock.GetTimestamp();
            await SubmitAsync(bus, jobs, requestId, number, stake, clock.GetUtcNow(), cancellationToken);
            clients.Add(IdentityClient.FollowAsync(log, requestId, Thresholds.TierOf(stake), submittedAt, clock, settings.ClientGiveUp, cancellationToken));
        }

        await progress.WriteLineAsync($"identity: {settings.Requests} requests submitted; clients waiting for their results");
        var records = await Task.WhenAll(clients);
        await recovery;

        // Grants made by checks that saw the register down just before it came back are revisited now.
        reviews.Add(await ReviewAsync(grants, simulation, numbers, cancellationToken));
        var seconds = clock.GetElapsedTime(started).TotalSeconds;

        var stored = new Dictionary<string, IReadOnlyList<Guid>>(StringComparer.Ordinal);
        foreach (var record in records)
        {
            var events = await messages.ReadStreamAsync(IdentityEvents.StreamOf(record.RequestId), 1, 1_000, cancellationToken);
            stored[record.RequestId] = [.. events.Select(e => e.Envelope.MessageId)];
        }

        var verification = IdentityVerification.Verify(records, stored, settings.FullResultDeadline);
        var problems = verification.Problems.ToList();
        var all = await grants.ListAsync(IdentityStateMachine.RegisterDependency, cancellationToken);
        var open = all.Count(g => g.State == DegradedGrantState.Granted);
        if (open > 0)
        {
            problems.Add($"{open} degraded grant(s) were never revisited");
        }

        var (verified, refused, statistics) = await ReadOutcomesAsync(messages, cancellationToken);
        problems.AddRange(await CheckGrantsAgainstRegisterAsync(store, all, cancellationToken));
        await app.StopAsync(CancellationToken.None);

        var tiers = Enum.GetValues<StakeTier>().Select(tier =>
        {
            var mine = records.Where(r => r.Tier == tier).ToList();
            var times = mine.Where(r => r.DecisionTime is not null).Select(r => r.DecisionTime!.Value).ToList();
            return new TierFigures(
                tier switch { StakeTier.Small => "£2 (OCR)", StakeTier.Medium => "£50 (OCR, tamper, register or grant)", _ => "£3,000 (everything)" },
                mine.Count,
                times.Count,
                mine.Count(r => r.Decision == "accept"),
                mine.Count(r => r.Decision == "refuse"),
                Math.Round(IdentityVerification.Percentile(times, 0.50).TotalMilliseconds),
                Math.Round(IdentityVerification.Percentile(times, 0.99).TotalMilliseconds));
        }).ToList();

        return new IdentityDemoReport(
            settings.Requests,
            verification.Completed,
            verified,
            refused,
            tiers,
            Math.Round(verification.FullResultP50.TotalMilliseconds),
            Math.Round(verification.FullResultP99.TotalMilliseconds),
            settings.FullResultDeadline.TotalSeconds,
            verification.Gaps,
            verification.Duplicates,
            verification.Mismatches,
            cutter.Cuts,
            Interlocked.Read(ref reconnects),
            all.Count,
            all.Count(g => g.State == DegradedGrantState.Confirmed),
            all.Count(g => g.State == DegradedGrantState.Revoked),
            open,
            simulation.TransientFailures,
            Math.Round(outageStart.TotalSeconds, 2),
            Math.Round(outageEnd.TotalSeconds, 2),
            statistics,
            Math.Round(seconds, 2),
            store.Kind,
            store.Describe(),
            problems.Count == 0,
            problems);
    }

    /// <summary>
    /// The outbox at submission: the request's row, its first event and the four independent checks commit together,
    /// so a request is either fully under way or not there at all.
    /// </summary>
    static async Task SubmitAsync(IMessageBus bus, IJobClient jobs, string requestId, int number, long stake, DateTimeOffset now, CancellationToken cancellationToken)
    {
        await using var transaction = await bus.BeginTransactionAsync(cancellationToken);
        await transaction.ExecuteAsync(
            "INSERT INTO identity_requests (id, number, stake_pence, submitted_at) VALUES (@id, @number, @stake, @at)",
            [("@id", requestId), ("@number", number), ("@stake", stake), ("@at", now.UtcTicks)],
            cancellationToken);
        await bus.PublishAsync(
            IdentityEvents.StreamOf(requestId),
            new VerificationRequested(requestId, stake, now),
            transaction.Transaction,
            new PublishOptions { ExpectedVersion = 0, CorrelationId = requestId },
            cancellationToken);
        var options = new JobOptions { CorrelationId = requestId };
        await jobs.EnqueueAsync(new ReadLicence(requestId, number), transaction.Transaction, options, cancellationToken);
        await jobs.EnqueueAsync(new ExtractFace(requestId, number), transaction.Transaction, options, cancellationToken);
        await jobs.EnqueueAsync(new DetectTampering(requestId, number), transaction.Transaction, options, cancellationToken);
        await jobs.EnqueueAsync(new CheckRegister(requestId, number, 0), transaction.Transaction, options, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
    }

    /// <summary>Licences asked of the register at once when grants are revisited.</summary>
    const int ReviewConcurrency = 32;

    /// <summary>Revisits the register's open grants: each licence is asked of the register again (retrying its transient failures).</summary>
    static ValueTask<DegradedReview> ReviewAsync(IDegradedGrants grants, IdentitySimulation simulation, Dictionary<string, int> numbers, CancellationToken cancellationToken) =>
        grants.ReviewAsync(IdentityStateMachine.RegisterDependency, async (grant, ct) =>
        {
            int number;
            lock (numbers)
            {
                number = numbers[grant.Subject];
            }

            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    return await simulation.CallAsync(Checks.Register, number, attempt, ct)
                        ? DegradedDecision.Confirm("licence valid on the register")
                        : DegradedDecision.Revoke("licence not valid on the register");
                }
                catch (TransientServiceException) when (attempt < 10)
                {
                    // Asked again at once: the review is not in a hurry, but it should not give up on a reset connection.
                }
            }
        }, ReviewConcurrency, cancellationToken);

    static async Task<(int Verified, int Refused, int Statistics)> ReadOutcomesAsync(IMessageStore messages, CancellationToken cancellationToken)
    {
        await using var connection = await messages.Database().OpenReadConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT verified, refused FROM identity_statistics WHERE id = 1";
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        var verified = Convert.ToInt32(reader.GetValue(0), CultureInfo.InvariantCulture);
        var refused = Convert.ToInt32(reader.GetValue(1), CultureInfo.InvariantCulture);
        var statistics = (await messages.ReadStreamAsync(IdentityEvents.StatisticsStream, 1, 100_000, cancellationToken)).Count;
        return (verified, refused, statistics);
    }

    /// <summary>
    /// A grant must be settled the way the register answered for its licence: confirmed where the register check
    /// passed, revoked where it failed.
    /// </summary>
    static async Task<List<string>> CheckGrantsAgainstRegisterAsync(DemoStore store, IReadOnlyList<DegradedGrant> grants, CancellationToken cancellationToken)
    {
        var problems = new List<string>();
        await using var connection = await store.OpenConnectionAsync(cancellationToken);
        foreach (var grant in grants.Where(g => g.State != DegradedGrantState.Granted))
        {
            await using var command = connection.CreateCommand();
            command.CommandText = "SELECT outcome FROM identity_checks WHERE request_id = @request AND check_name = 'register'";
            var parameter = command.CreateParameter();
            parameter.ParameterName = "@request";
            parameter.Value = grant.Subject;
            command.Parameters.Add(parameter);
            var register = await command.ExecuteScalarAsync(cancellationToken) as string;
            var expected = register == Outcomes.Passed ? DegradedGrantState.Confirmed : DegradedGrantState.Revoked;
            if (grant.State != expected)
            {
                problems.Add($"{grant.Subject}: the degraded grant was {grant.State.ToString().ToLowerInvariant()}, but the register check {register ?? "never answered"}");
            }
        }

        return problems;
    }
}
