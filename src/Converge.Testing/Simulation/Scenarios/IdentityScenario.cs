using Converge.Jobs;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing.Conformance;
using Converge.Verification;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Testing.Simulation.Scenarios;

/// <summary>
/// The identity flow: each verification request fans out into checks, one job each (read the licence, extract the face,
/// look for tampering, ask the licence register), and extracting the face enqueues matching it. A check waits on its
/// service for a drawn time, fails now and then and is retried, and publishes its partial result to the request's
/// stream in the transaction that completes its job. A consumer group collects the partial results, keeping each in its
/// handler's transaction, and publishes the verdict once it has all five. Judged from the log and the group's records:
/// every check's result once, the group's records once each and in log order, one verdict per request.
/// </summary>
/// <param name="planted"><see cref="PlantedBug.EffectOutsideTransaction"/>: the checks publish their results on their own, outside the job's completing transaction.</param>
public sealed class IdentityScenario(PlantedBug planted = PlantedBug.None) : SimulationScenario
{
    const int Requests = 6;
    const string Group = "identity-verification";
    const string Verdicts = "identity-verdicts";

    static readonly string[] AllChecks = ["ocr", "face", "tamper", "register", "match"];

    /// <inheritdoc />
    public override string Name => "identity";

    /// <inheritdoc />
    public override void Configure(ConvergeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ScenarioParts.Timings(options, quickRetries: true);
        options.Messages.Register<RunCheck>("identity.run-check").Register<PartialResult>("identity.partial-result").Register<Verdict>("identity.verdict");
        options.Job<RunCheck, CheckDesk>("identity.checks");
        options.Queue("identity.checks", q => q.Concurrency = 8);
        options.Subscribe<PartialResult, VerificationDesk>(Group);
    }

    /// <inheritdoc />
    public override void ConfigureServices(IServiceCollection services) => services.AddSingleton(this).AddSingleton<CheckDesk>().AddSingleton<VerificationDesk>();

    /// <inheritdoc />
    public override async Task PlaceAsync(IServiceProvider services, IMessageStore store, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(services);
        var jobs = services.GetRequiredService<IJobClient>();
        for (var request = 1; request <= Requests; request++)
        {
            for (var check = 0; check < 4; check++)
            {
                // A fixed id per request and check: placing again after a crash enqueues nothing twice.
                await jobs.EnqueueAsync(new RunCheck(request, AllChecks[check]), new JobOptions { JobId = ScenarioParts.JobId(10 + check, request) }, cancellationToken);
            }
        }
    }

    /// <inheritdoc />
    public override async Task<bool> SettledAsync(IMessageStore store, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        var events = await ScenarioParts.ReadLogAsync(store, cancellationToken);
        var group = await store.GetConsumerGroupAsync(Group, cancellationToken);
        return events.Count(e => e.Stream == Verdicts) >= Requests && group is not null && group.Position == events[^1].Position;
    }

    /// <inheritdoc />
    public override async Task<IReadOnlyList<string>> JudgeAsync(IMessageStore store, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        var events = await ScenarioParts.ReadLogAsync(store, cancellationToken);
        var partials = events.Where(e => e.Envelope.MessageType.StartsWith("identity.partial-result", StringComparison.Ordinal)).ToList();
        var wanted = Enumerable.Range(1, Requests).SelectMany(r => AllChecks.Select(c => $"{r}:{c}")).ToList();
        var violations = Invariants.ExactlyOnce(wanted, partials.Select(e => Key(ScenarioParts.Body<PartialResult>(e))));
        violations.AddRange(Invariants.ExactlyOnce(
            Enumerable.Range(1, Requests).Select(r => "verdict:" + r),
            events.Where(e => e.Stream == Verdicts).Select(e => "verdict:" + ScenarioParts.Body<Verdict>(e).Request)));
        var positions = partials.GroupBy(e => Key(ScenarioParts.Body<PartialResult>(e))).ToDictionary(g => g.Key, g => g.First().Position);
        var handled = Effects.CommittedKeys(store).Select(k => positions.TryGetValue(k, out var p) ? p : -1).ToList();
        violations.AddRange(Invariants.ReadExactlyOnceInOrder("group " + Group, [.. partials.Select(e => e.Position)], handled));
        return violations;
    }

    static string Key(PartialResult result) => $"{result.Request}:{result.Check}";

    /// <summary>The checks: each waits on its service, which fails now and then.</summary>
    public sealed class CheckDesk(ConvergeOptions options, IdentityScenario scenario, IMessageBus bus) : IJobHandler<RunCheck>
    {
        /// <inheritdoc />
        public async Task ExecuteAsync(RunCheck job, JobContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(job);
            ArgumentNullException.ThrowIfNull(context);
            await Task.Delay(TimeSpan.FromMilliseconds(100 + (1400 * options.Random.NextDouble())), options.TimeProvider, cancellationToken);
            if (options.Random.NextDouble() < 0.05)
            {
                throw new InvalidOperationException($"The {job.Check} service reset the connection.");
            }

            var result = new PartialResult(job.Request, job.Check, options.Random.NextDouble() < 0.9);
            if (scenario._planted == PlantedBug.EffectOutsideTransaction)
            {
                await bus.PublishAsync("identity-" + job.Request, result, cancellationToken: cancellationToken);
            }
            else
            {
                context.Publish("identity-" + job.Request, result);
            }

            if (job.Check == "face")
            {
                context.Enqueue(new RunCheck(job.Request, "match"), new JobOptions { JobId = ScenarioParts.JobId(20, job.Request) });
            }
        }
    }

    /// <summary>The verification: collects the partial results and gives the verdict once all are in.</summary>
    public sealed class VerificationDesk : IHandler<PartialResult>
    {
        /// <inheritdoc />
        public async Task HandleAsync(PartialResult message, MessageContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(message);
            ArgumentNullException.ThrowIfNull(context);
            await Effects.WriteAsync(context, Group, Key(message), cancellationToken);

            // The request's stream holds its results: the verdict goes with the last of the five.
            var stream = await context.Services.GetRequiredService<IMessageStore>().ReadStreamAsync("identity-" + message.Request, 1, 100, cancellationToken);
            var results = stream.Select(ScenarioParts.Body<PartialResult>).ToList();
            if (stream[^1].Envelope.MessageId == context.MessageId && AllChecks.All(c => results.Any(r => r.Check == c)))
            {
                await context.PublishAsync(Verdicts, new Verdict(message.Request, results.All(r => r.Passed)), cancellationToken: cancellationToken);
            }
        }
    }

    readonly PlantedBug _planted = planted;

#pragma warning disable CS1591 // The flow's messages: their names say what they are.
    public sealed record RunCheck(int Request, string Check);
    public sealed record PartialResult(int Request, string Check, bool Passed);
    public sealed record Verdict(int Request, bool Verified);
#pragma warning restore CS1591
}
