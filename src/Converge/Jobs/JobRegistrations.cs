using Converge.Jobs;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Runtime;

public sealed partial class ConvergeOptions
{
    readonly List<JobRegistration> _jobs = [];
    readonly List<RecurringJobRegistration> _recurring = [];

    /// <summary>Settings of the job runtime: the recurring-job scheduler and misfires.</summary>
    public JobRuntimeOptions Jobs { get; } = new();

    internal IReadOnlyList<JobRegistration> JobHandlers => _jobs;

    internal IReadOnlyList<RecurringJobRegistration> RecurringJobs => _recurring;

    /// <summary>
    /// Runs <typeparamref name="TJob"/> jobs from <paramref name="queue"/> with <typeparamref name="THandler"/>,
    /// resolved from a new DI scope per job (registered as scoped unless already registered), and routes the type
    /// to the queue when it has no route yet. Jobs run outside transactions, up to
    /// <see cref="QueueOptions.Concurrency"/> at once per process (default 16 on a job queue); tune the queue with
    /// <see cref="Queue"/>. A queue runs either jobs or message handlers, not both.
    /// </summary>
    public ConvergeOptions Job<TJob, THandler>(string queue)
        where TJob : notnull
        where THandler : class, IJobHandler<TJob>
    {
        GetQueue(queue).RunsJobs = true;
        _routes.TryAdd(typeof(TJob), queue);
        _jobs.Add(new JobRegistration(queue, typeof(TJob), typeof(THandler), JobInvoker.For<TJob, THandler>()));
        _serviceRegistrations.Add(static services => services.AddScopedIfMissing<THandler>());
        return this;
    }

    /// <summary>
    /// Enqueues <paramref name="job"/> at every occurrence of <paramref name="cron"/>: five fields (minute hour
    /// day-of-month month day-of-week) or six with seconds first, read in <see cref="RecurringJobOptions.TimeZone"/>.
    /// Each occurrence is enqueued exactly once however many processes run; occurrences missed while none ran follow
    /// <see cref="RecurringJobOptions.Misfire"/>. The job type needs a queue (<see cref="Job{TJob, THandler}"/> or a route).
    /// </summary>
    public ConvergeOptions AddRecurringJob<TJob>(string name, string cron, TJob job, Action<RecurringJobOptions>? configure = null) where TJob : notnull
    {
        ValidateName(name, "recurring job");
        ArgumentNullException.ThrowIfNull(job);
        var options = new RecurringJobOptions();
        configure?.Invoke(options);
        _recurring.Add(new RecurringJobRegistration(name, cron, job, typeof(TJob), options));
        return this;
    }

    IEnumerable<string> ValidateJobs()
    {
        foreach (var queue in _queues.Values.Where(q => q.RunsJobs && _handlers.Any(h => h.Queue == q.Name)))
        {
            yield return $"Queue '{queue.Name}' has both job handlers and message handlers; give the jobs a queue of their own.";
        }

        foreach (var job in _jobs)
        {
            if (!Messages.IsRegistered(job.JobType))
            {
                yield return $"Job {job.JobType.Name} is run by {job.HandlerType.Name} but has no type name. Call options.Messages.Register<{job.JobType.Name}>(\"name\", version: 1).";
            }
        }

        foreach (var duplicate in _jobs.GroupBy(j => (j.Queue, j.JobType)).Where(g => g.Count() > 1))
        {
            yield return $"Queue '{duplicate.Key.Queue}' has {duplicate.Count()} handlers for job {duplicate.Key.JobType.Name}; register one.";
        }

        foreach (var duplicate in _recurring.GroupBy(r => r.Name, StringComparer.Ordinal).Where(g => g.Count() > 1))
        {
            yield return $"Recurring job '{duplicate.Key}' is registered {duplicate.Count()} times; give each schedule its own name.";
        }

        foreach (var recurring in _recurring)
        {
            if (CronSchedule.TryParse(recurring.Cron, recurring.Options.TimeZone, out _) is { } error)
            {
                yield return $"Recurring job '{recurring.Name}': {error}";
            }

            if (!Messages.IsRegistered(recurring.JobType))
            {
                yield return $"Recurring job '{recurring.Name}': {recurring.JobType.Name} has no type name. Call options.Messages.Register<{recurring.JobType.Name}>(\"name\", version: 1).";
            }

            if (recurring.Options.Queue is null && !_routes.ContainsKey(recurring.JobType))
            {
                yield return $"Recurring job '{recurring.Name}': {recurring.JobType.Name} has no queue. Register its handler with options.Job<{recurring.JobType.Name}, THandler>(\"queue\") or set RecurringJobOptions.Queue.";
            }
        }

        foreach (var error in Jobs.Validate())
        {
            yield return error;
        }
    }
}

/// <summary>Settings of the job runtime in this process.</summary>
public sealed class JobRuntimeOptions
{
    /// <summary>Whether this process runs the recurring-job scheduler. Default <c>true</c>; several processes may run it at once.</summary>
    public bool RunScheduler { get; set; } = true;

    /// <summary>How often the scheduler looks for due occurrences when it has no better idea. Default 1 second.</summary>
    public TimeSpan SchedulerInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How late an occurrence may be enqueued and still count as on time; later ones were missed during downtime
    /// and follow their schedule's misfire policy. Default 1 minute.
    /// </summary>
    public TimeSpan MisfireThreshold { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>How often a worker asks the store whether a running job was cancelled from another process. Default 1 second.</summary>
    public TimeSpan CancellationCheckInterval { get; set; } = TimeSpan.FromSeconds(1);

    internal IEnumerable<string> Validate()
    {
        if (SchedulerInterval <= TimeSpan.Zero || MisfireThreshold <= TimeSpan.Zero || CancellationCheckInterval <= TimeSpan.Zero)
        {
            yield return "Jobs.SchedulerInterval, Jobs.MisfireThreshold and Jobs.CancellationCheckInterval must be positive (defaults 1 s, 1 min, 1 s).";
        }
    }
}

internal sealed record JobRegistration(string Queue, Type JobType, Type HandlerType, JobInvoker Invoker);

internal sealed record RecurringJobRegistration(string Name, string Cron, object Job, Type JobType, RecurringJobOptions Options);

internal abstract class JobInvoker
{
    public static JobInvoker For<TJob, THandler>() where THandler : class, IJobHandler<TJob> => new Typed<TJob, THandler>();

    public abstract Task InvokeAsync(IServiceProvider services, object job, JobContext context, CancellationToken cancellationToken);

    sealed class Typed<TJob, THandler> : JobInvoker where THandler : class, IJobHandler<TJob>
    {
        public override Task InvokeAsync(IServiceProvider services, object job, JobContext context, CancellationToken cancellationToken) =>
            services.GetRequiredService<THandler>().ExecuteAsync((TJob)job, context, cancellationToken);
    }
}
