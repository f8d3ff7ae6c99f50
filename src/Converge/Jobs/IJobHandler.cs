using System.Data.Common;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;

namespace Converge.Jobs;

/// <summary>
/// Runs one job type. Register it with <see cref="ConvergeOptions.Job{TJob, THandler}"/>.
/// </summary>
/// <remarks>
/// A job runs outside any database transaction, so it may wait on slow services (a payment provider, an email
/// service) without holding up other writers; up to <see cref="QueueOptions.Concurrency"/> jobs of a queue run at
/// once in a process. The job's writes are recorded on <see cref="JobContext"/> (<see cref="JobContext.Execute"/>,
/// <see cref="JobContext.Enqueue{TJob}"/>, <see cref="JobContext.Send{T}"/>, <see cref="JobContext.Publish{T}"/>)
/// and committed together with the record that the job ran, once, when it returns. Delivery is at least once: a
/// job killed half-way runs again, so calls to the outside world must be idempotent; use
/// <see cref="JobContext.IdempotencyKey"/>. By the time a job runs the world may have moved on: re-read current
/// state (<see cref="JobContext.OpenReadConnectionAsync"/>) and compare it with <see cref="JobContext.AsOf"/>.
/// </remarks>
public interface IJobHandler<in TJob>
{
    /// <summary>
    /// Runs <paramref name="job"/>. Throwing records a failed attempt, retried with backoff (see
    /// <see cref="RetryOptions"/>; <see cref="HandlerFailureException"/> says "do not retry" or "retry after").
    /// <paramref name="cancellationToken"/> fires when the job is cancelled or the process stops.
    /// </summary>
    Task ExecuteAsync(TJob job, JobContext context, CancellationToken cancellationToken);
}

/// <summary>What a running job knows, and the writes it wants committed when it succeeds.</summary>
public sealed class JobContext
{
    readonly JobRuntime _runtime;
    internal readonly List<Func<IStoreTransaction, CancellationToken, ValueTask>> Effects = [];

    internal JobContext(JobRuntime runtime, Envelope envelope, string queue, int attempt, IServiceProvider services)
    {
        _runtime = runtime;
        Envelope = envelope;
        Queue = queue;
        Attempt = attempt;
        Services = services;
        BatchId = envelope.Headers.TryGetValue(JobHeaders.Batch, out var batch) ? batch : null;
    }

    /// <summary>The job as received.</summary>
    public Envelope Envelope { get; }

    /// <summary>The job id (its message id).</summary>
    public Guid JobId => Envelope.MessageId;

    /// <summary>The queue the job runs on.</summary>
    public string Queue { get; }

    /// <summary>The 1-based attempt number.</summary>
    public int Attempt { get; }

    /// <summary>The business transaction id, if the job carries one.</summary>
    public string? CorrelationId => Envelope.CorrelationId;

    /// <summary>When the job was enqueued.</summary>
    public DateTimeOffset EnqueuedAt => Envelope.SentAt;

    /// <summary>
    /// The moment of the state the job was computed from (<see cref="JobOptions.AsOf"/>); <c>null</c> when the
    /// sender did not say. Anything that changed after it was not known to whoever enqueued the job.
    /// </summary>
    public DateTimeOffset? AsOf => Envelope.AsOf;

    /// <summary>The batch the job belongs to; <c>null</c> when none. Jobs it enqueues can join it (<see cref="JobOptions.BatchId"/>).</summary>
    public string? BatchId { get; }

    /// <summary>A key for idempotent calls to services outside the store: stable across every attempt of this job.</summary>
    public string IdempotencyKey => Envelope.MessageId.ToString("N");

    /// <summary>The DI scope of this job.</summary>
    public IServiceProvider Services { get; }

    internal bool ReportedProgress { get; private set; }

    /// <summary>
    /// Opens a connection for reading current state, outside any transaction. Dispose it before the job returns.
    /// On SQLite it sees every commit made before it opened.
    /// </summary>
    public ValueTask<DbConnection> OpenReadConnectionAsync(CancellationToken cancellationToken = default) =>
        _runtime.Store.Database().OpenReadConnectionAsync(cancellationToken);

    /// <summary>
    /// Stores the job's progress (0 to 100) with an optional note, in its own short transaction, so that
    /// <c>converge jobs show</c> and <see cref="IJobClient.GetAsync"/> see it while the job runs.
    /// </summary>
    public ValueTask ReportProgressAsync(int percent, string? note = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(percent);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(percent, 100);
        ReportedProgress = true;
        return _runtime.Store.Jobs().SaveJobProgressAsync(JobId, percent, note, cancellationToken);
    }

    /// <summary>
    /// Records <paramref name="sql"/> to run in the transaction that completes this job: it takes effect exactly
    /// once, when the job succeeds, and never when it fails. Parameters are (name, value) pairs (<c>@name</c>). The
    /// statements of the jobs completed together run in the order recorded; PostgreSQL sends them in one round trip
    /// (<see cref="Storage.IDatabaseTransaction.WriteAsync"/>), so one that fails (a constraint) fails its job when the
    /// group is written again job by job.
    /// </summary>
    public void Execute(string sql, params (string Name, object? Value)[] parameters)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(sql);
        var pairs = StatementParameters.From(parameters);
        Effects.Add((transaction, ct) => transaction.Database().WriteAsync(sql, pairs, ct));
    }

    /// <summary>
    /// Records a job to enqueue when this job succeeds, in the same transaction. It carries this job's correlation
    /// id and is caused by it; it joins a batch only when <see cref="JobOptions.BatchId"/> says so.
    /// </summary>
    /// <returns>The new job's id (fixed now, written at completion).</returns>
    public Guid Enqueue<TJob>(TJob job, JobOptions? options = null) where TJob : notnull
    {
        ArgumentNullException.ThrowIfNull(job);
        var id = options?.JobId ?? MessageIds.New(_runtime.Now);
        var fixedOptions = (options ?? new JobOptions()) with { JobId = id };
        Effects.Add((transaction, ct) => Discard(_runtime.Client.EnqueueCoreAsync(transaction, job, fixedOptions, Envelope, ct)));
        return id;
    }

    /// <summary>Records a message to send when this job succeeds, in the same transaction.</summary>
    public void Send<T>(T message, SendOptions? options = null) where T : notnull
    {
        ArgumentNullException.ThrowIfNull(message);
        Effects.Add((transaction, ct) => Discard(_runtime.Bus.SendCoreAsync(transaction, message, options, Envelope, ct)));
    }

    /// <summary>Records an event to append to <paramref name="stream"/> when this job succeeds, in the same transaction.</summary>
    public void Publish<T>(string stream, T @event, PublishOptions? options = null) where T : notnull
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(stream);
        ArgumentNullException.ThrowIfNull(@event);
        Effects.Add((transaction, ct) => Discard(_runtime.Bus.PublishCoreAsync(transaction, stream, @event, options, Envelope, ct)));
    }

    static async ValueTask Discard<T>(ValueTask<T> task) => await task;
}
