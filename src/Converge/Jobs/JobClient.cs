using System.Data.Common;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;

namespace Converge.Jobs;

/// <summary>The services a job worker, the scheduler and the client share.</summary>
internal sealed class JobRuntime
{
    public JobRuntime(ConvergeOptions options, IMessageStore store, MessageBus bus)
    {
        Options = options;
        Store = store;
        Bus = bus;
        Client = new JobClient(this);
    }

    public ConvergeOptions Options { get; }

    public IMessageStore Store { get; }

    public MessageBus Bus { get; }

    public JobClient Client { get; }

    public DateTimeOffset Now => Options.TimeProvider.GetUtcNow();
}

internal sealed class JobClient : IJobClient
{
    readonly JobRuntime _runtime;

    public JobClient(JobRuntime runtime) => _runtime = runtime;

    public async ValueTask<EnqueuedJob> EnqueueAsync<TJob>(TJob job, JobOptions? options = null, CancellationToken cancellationToken = default) where TJob : notnull
    {
        await using var transaction = await _runtime.Store.BeginAsync(cancellationToken);
        var enqueued = await EnqueueCoreAsync(transaction, job, options, null, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return enqueued;
    }

    public ValueTask<EnqueuedJob> EnqueueAsync<TJob>(TJob job, DbTransaction transaction, JobOptions? options = null, CancellationToken cancellationToken = default) where TJob : notnull =>
        EnqueueCoreAsync(_runtime.Store.Database().Enlist(transaction), job, options, null, cancellationToken);

    internal async ValueTask<EnqueuedJob> EnqueueCoreAsync<TJob>(IStoreTransaction transaction, TJob job, JobOptions? options, Envelope? cause, CancellationToken cancellationToken) where TJob : notnull
    {
        ArgumentNullException.ThrowIfNull(job);
        options ??= Default;
        var id = options.JobId ?? MessageIds.New(_runtime.Now);
        if (options.UniqueKey is { } key)
        {
            if (options.UniqueFor <= TimeSpan.Zero)
            {
                throw new ArgumentException($"JobOptions.UniqueFor is {options.UniqueFor}; a unique key needs a positive window.", nameof(options));
            }

            if (await transaction.Jobs().TryReserveUniqueKeyAsync(key, id, _runtime.Now + options.UniqueFor, cancellationToken) is { } holder)
            {
                return new EnqueuedJob(holder, Duplicate: true);
            }
        }

        if (options.BatchId is { } batchId)
        {
            await transaction.Jobs().AddToBatchAsync(batchId, 1, cancellationToken);
        }

        var sendOptions = ToSendOptions(options, id);
        await _runtime.Bus.SendCoreAsync(transaction, job, sendOptions, cause, cancellationToken);
        await RegisterQueueAsync(transaction, sendOptions.Queue ?? _runtime.Bus.QueueOf(job.GetType()), cancellationToken);
        return new EnqueuedJob(id, Duplicate: false);
    }

    /// <summary>Job queues this process has recorded in the store; each is recorded once, with its first job.</summary>
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte> _registeredQueues = new(StringComparer.Ordinal);

    async ValueTask RegisterQueueAsync(IStoreTransaction transaction, string queue, CancellationToken cancellationToken)
    {
        if (_registeredQueues.ContainsKey(queue))
        {
            return;
        }

        await transaction.Jobs().RegisterJobQueueAsync(queue, cancellationToken);
        transaction.OnCommitted(() => _registeredQueues.TryAdd(queue, 0));
    }

    /// <summary>Records the job queues this process runs, so job listings show them before their first job.</summary>
    internal async ValueTask RegisterQueuesAsync(IEnumerable<string> queues, CancellationToken cancellationToken)
    {
        var names = queues.ToList();
        if (names.Count == 0)
        {
            return;
        }

        await using var transaction = await _runtime.Store.BeginAsync(cancellationToken);
        foreach (var queue in names)
        {
            await RegisterQueueAsync(transaction, queue, cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
    }

    static readonly JobOptions Default = new();

    static SendOptions ToSendOptions(JobOptions options, Guid id)
    {
        Dictionary<string, string>? headers = null;
        if (options.Headers is not null || options.BatchId is not null || options.UniqueKey is not null)
        {
            headers = options.Headers is null ? new(StringComparer.Ordinal) : new(options.Headers, StringComparer.Ordinal);
            if (options.BatchId is { } batch)
            {
                headers[JobHeaders.Batch] = batch;
            }

            if (options.UniqueKey is { } key)
            {
                headers[JobHeaders.UniqueKey] = key;
            }
        }

        return new SendOptions
        {
            Queue = options.Queue,
            MessageId = id,
            CorrelationId = options.CorrelationId,
            AsOf = options.AsOf,
            Delay = options.Delay,
            DueAt = options.RunAt,
            Priority = options.Priority,
            Headers = headers,
        };
    }

    public async ValueTask<bool> StartBatchAsync(JobBatchOptions batch, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(batch);
        ArgumentException.ThrowIfNullOrWhiteSpace(batch.Id);
        var callbackOptions = ToSendOptions((batch.CallbackOptions ?? Default) with { BatchId = null, UniqueKey = null }, Guid.Empty);
        OutgoingMessage? Callback(object? job) => job is null ? null : _runtime.Bus.CreateOutgoing(job, WithFreshId(callbackOptions), null);
        var record = new JobBatchRecord
        {
            Id = batch.Id,
            Description = batch.Description,
            CreatedAt = _runtime.Now,
            OnSuccess = Callback(batch.OnSuccess),
            OnComplete = Callback(batch.OnComplete),
        };

        await using var transaction = await _runtime.Store.BeginAsync(cancellationToken);
        var created = await transaction.Jobs().CreateBatchAsync(record, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return created;
    }

    SendOptions WithFreshId(SendOptions options) => new()
    {
        Queue = options.Queue,
        MessageId = MessageIds.New(_runtime.Now),
        CorrelationId = options.CorrelationId,
        AsOf = options.AsOf,
        Priority = options.Priority,
        Headers = options.Headers,
    };

    public async ValueTask SealBatchAsync(string batchId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(batchId);
        await using var transaction = await _runtime.Store.BeginAsync(cancellationToken);
        if (await transaction.Jobs().SealBatchAsync(batchId, cancellationToken) is { } finished)
        {
            await EnqueueCallbacksAsync(transaction, finished, cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
    }

    /// <summary>Enqueues the callbacks of a batch that just finished, in the transaction that finished it.</summary>
    internal static async ValueTask EnqueueCallbacksAsync(IStoreTransaction transaction, JobBatchRecord finished, CancellationToken cancellationToken)
    {
        if (finished.Failed == 0 && finished.OnSuccess is { } onSuccess)
        {
            await transaction.EnqueueAsync(onSuccess, cancellationToken);
        }

        if (finished.OnComplete is { } onComplete)
        {
            await transaction.EnqueueAsync(onComplete, cancellationToken);
        }
    }

    public ValueTask<JobBatchRecord?> GetBatchAsync(string batchId, CancellationToken cancellationToken = default) =>
        _runtime.Store.JobQueries().GetBatchAsync(batchId, cancellationToken);

    public ValueTask<JobCancelOutcome> CancelAsync(Guid jobId, CancellationToken cancellationToken = default) =>
        _runtime.Store.Jobs().CancelJobAsync(jobId, cancellationToken);

    public ValueTask<JobInfo?> GetAsync(Guid jobId, CancellationToken cancellationToken = default) =>
        _runtime.Store.JobQueries().GetJobAsync(jobId, cancellationToken);

    public async ValueTask<EnqueuedJob> TriggerRecurringAsync(string name, CancellationToken cancellationToken = default)
    {
        var registration = _runtime.Options.RecurringJobs.FirstOrDefault(r => r.Name == name)
            ?? throw new InvalidOperationException($"No recurring job is named '{name}'. Registered: {string.Join(", ", _runtime.Options.RecurringJobs.Select(r => r.Name))}.");
        var headers = new Dictionary<string, string>(StringComparer.Ordinal) { [JobHeaders.Recurring] = name };
        return await EnqueueAsync(registration.Job, new JobOptions { Queue = registration.Options.Queue, Priority = registration.Options.Priority, AsOf = _runtime.Now, Headers = headers }, cancellationToken);
    }
}
