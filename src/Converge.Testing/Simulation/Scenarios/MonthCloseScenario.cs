using Converge.Jobs;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing.Conformance;
using Converge.Verification;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Testing.Simulation.Scenarios;

/// <summary>
/// The month close: a sealed batch of jobs, one per account, each failing now and then and retried; each records the
/// account closed by publishing an event in the transaction that completes it. The batch's completion callback, a job
/// too, publishes that the close finished. A consumer group (the ledger) keeps each account's event in its handler's
/// transaction. Judged from the log and the ledger's records: every account closed once, the close finished once, the
/// batch's counters exact, and the ledger handled every event once and in log order. A recurring reminder, every five
/// seconds and scheduled by every process, must run once per occurrence.
/// </summary>
/// <param name="planted"><see cref="PlantedBug.EffectOutsideTransaction"/>: the jobs publish on their own, outside the transaction that completes them.</param>
public sealed class MonthCloseScenario(PlantedBug planted = PlantedBug.None) : SimulationScenario
{
    const int Accounts = 20;
    const string Batch = "close-2026-11";
    const string Stream = "close-2026-11";
    const string Ledger = "ledger";
    const string Reminders = "close-reminders";

    /// <inheritdoc />
    public override string Name => "month-close";

    /// <inheritdoc />
    public override void Configure(ConvergeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ScenarioParts.Timings(options, quickRetries: true);
        options.Messages.Register<CloseAccount>("close.account").Register<CloseFinished>("close.finished")
            .Register<AccountClosed>("close.account-closed").Register<CloseCompleted>("close.completed")
            .Register<Remind>("close.remind").Register<Reminded>("close.reminded");
        options.Job<CloseAccount, CloseDesk>("close");
        options.Job<CloseFinished, CloseDesk>("close");
        options.Job<Remind, CloseDesk>("close");
        options.AddRecurringJob("close-reminder", "*/5 * * * * *", new Remind());
        options.Queue("close", q => q.Concurrency = 3);
        options.Subscribe<AccountClosed, LedgerDesk>(Ledger);
    }

    /// <inheritdoc />
    public override void ConfigureServices(IServiceCollection services) => services.AddSingleton(this).AddSingleton<CloseDesk>().AddSingleton<LedgerDesk>();

    /// <inheritdoc />
    public override async Task PlaceAsync(IServiceProvider services, IMessageStore store, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(store);
        if (await store.JobQueries().GetBatchAsync(Batch, cancellationToken) is { Sealed: true })
        {
            return;
        }

        // Every step is idempotent: the batch by its id, each job by its fixed id.
        var jobs = services.GetRequiredService<IJobClient>();
        await jobs.StartBatchAsync(new JobBatchOptions { Id = Batch, OnComplete = new CloseFinished(Batch) }, cancellationToken);
        for (var account = 0; account < Accounts; account++)
        {
            await jobs.EnqueueAsync(new CloseAccount(account), new JobOptions { BatchId = Batch, JobId = ScenarioParts.JobId(1, account) }, cancellationToken);
        }

        await jobs.SealBatchAsync(Batch, cancellationToken);
    }

    /// <inheritdoc />
    public override async Task<bool> SettledAsync(IMessageStore store, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        if (await store.JobQueries().GetBatchAsync(Batch, cancellationToken) is not { FinishedAt: not null })
        {
            return false;
        }

        var events = await ScenarioParts.ReadLogAsync(store, cancellationToken);
        var group = await store.GetConsumerGroupAsync(Ledger, cancellationToken);
        return events.Any(e => e.Envelope.MessageType.StartsWith("close.completed", StringComparison.Ordinal))
            && events.Count(e => e.Stream == Reminders) >= 2
            && group is not null && group.Position == events[^1].Position;
    }

    /// <inheritdoc />
    public override async Task<IReadOnlyList<string>> JudgeAsync(IMessageStore store, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        var log = await ScenarioParts.ReadLogAsync(store, cancellationToken);
        var events = log.Where(e => e.Stream == Stream).ToList();
        var closed = events.Where(e => e.Envelope.MessageType.StartsWith("close.account-closed", StringComparison.Ordinal)).ToList();
        var expected = Enumerable.Range(0, Accounts).Select(a => "account-" + a).Append("finished-" + Batch);
        var logged = closed.Select(e => "account-" + ScenarioParts.Body<AccountClosed>(e).Account)
            .Concat(events.Where(e => e.Envelope.MessageType.StartsWith("close.completed", StringComparison.Ordinal)).Select(e => "finished-" + ScenarioParts.Body<CloseCompleted>(e).Batch));
        var violations = Invariants.ExactlyOnce(expected, logged);
        violations.AddRange(Invariants.BatchCounters(Batch, await store.JobQueries().GetBatchAsync(Batch, cancellationToken), Accounts));
        var reminded = log.Where(e => e.Stream == Reminders).Select(e => "reminder at " + ScenarioParts.Body<Reminded>(e).Occurrence.ToString("HH:mm:ss", System.Globalization.CultureInfo.InvariantCulture)).ToList();
        violations.AddRange(Invariants.ExactlyOnce(reminded.Distinct(StringComparer.Ordinal), reminded));

        // The ledger's records, in the order it committed them, against the positions of the accounts' events.
        var positions = closed.GroupBy(e => ScenarioParts.Body<AccountClosed>(e).Account).ToDictionary(g => "ledger:account-" + g.Key, g => g.First().Position);
        var handled = Effects.CommittedKeys(store).Where(k => k.StartsWith("ledger:", StringComparison.Ordinal)).Select(k => positions.TryGetValue(k, out var p) ? p : -1).ToList();
        violations.AddRange(Invariants.ReadExactlyOnceInOrder("group " + Ledger, [.. closed.Select(e => e.Position)], handled));
        return violations;
    }

    /// <summary>The close's jobs.</summary>
    public sealed class CloseDesk(ConvergeOptions options, MonthCloseScenario scenario, IMessageBus bus) : IJobHandler<CloseAccount>, IJobHandler<CloseFinished>, IJobHandler<Remind>
    {
        /// <inheritdoc />
        public Task ExecuteAsync(Remind job, JobContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(context);
            context.Publish(Reminders, new Reminded(context.AsOf ?? context.EnqueuedAt));
            return Task.CompletedTask;
        }

        /// <inheritdoc />
        public async Task ExecuteAsync(CloseAccount job, JobContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(job);
            ArgumentNullException.ThrowIfNull(context);

            // The account's figures take a while to add up, and the ledger service is down now and then.
            await Task.Delay(TimeSpan.FromMilliseconds(200 * options.Random.NextDouble()), options.TimeProvider, cancellationToken);
            if (options.Random.NextDouble() < 0.1)
            {
                throw new InvalidOperationException($"The ledger service did not answer for account {job.Account}.");
            }

            if (scenario._planted == PlantedBug.EffectOutsideTransaction)
            {
                await bus.PublishAsync(Stream, new AccountClosed(job.Account), cancellationToken: cancellationToken);
            }
            else
            {
                context.Publish(Stream, new AccountClosed(job.Account));
            }
        }

        /// <inheritdoc />
        public Task ExecuteAsync(CloseFinished job, JobContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(job);
            ArgumentNullException.ThrowIfNull(context);
            context.Publish(Stream, new CloseCompleted(job.Batch));
            return Task.CompletedTask;
        }
    }

    /// <summary>The ledger: one record per account closed, in its handler's transaction.</summary>
    public sealed class LedgerDesk : IHandler<AccountClosed>
    {
        /// <inheritdoc />
        public Task HandleAsync(AccountClosed message, MessageContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(message);
            return Effects.WriteAsync(context, Ledger, "ledger:account-" + message.Account, cancellationToken);
        }
    }

    readonly PlantedBug _planted = planted;

#pragma warning disable CS1591 // The close's messages: their names say what they are.
    public sealed record CloseAccount(int Account);
    public sealed record CloseFinished(string Batch);
    public sealed record AccountClosed(int Account);
    public sealed record CloseCompleted(string Batch);
    public sealed record Remind;
    public sealed record Reminded(DateTimeOffset Occurrence);
#pragma warning restore CS1591
}
