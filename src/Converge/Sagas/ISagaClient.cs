using System.Data.Common;
using Converge.Runtime;
using Converge.Storage;

namespace Converge.Sagas;

/// <summary>Starts orchestrated sagas and reads the saga log. Registered by <c>AddConverge</c>.</summary>
public interface ISagaClient
{
    /// <summary>
    /// Starts an instance of <paramref name="saga"/> on its newest registered version with <paramref name="data"/>,
    /// in a transaction of its own. Idempotent: returns <c>false</c> when an instance with
    /// <paramref name="transactionId"/> already exists (it is left as it is).
    /// </summary>
    ValueTask<bool> StartAsync<TData>(string saga, string transactionId, TData data, CancellationToken cancellationToken = default) where TData : class;

    /// <summary>Starts an instance inside the caller's open <paramref name="transaction"/> on the store's database (the outbox).</summary>
    ValueTask<bool> StartAsync<TData>(string saga, string transactionId, TData data, DbTransaction transaction, CancellationToken cancellationToken = default) where TData : class;

    /// <summary>The instance of <paramref name="transactionId"/>; <c>null</c> when there is none.</summary>
    ValueTask<SagaInstance?> GetAsync(string transactionId, CancellationToken cancellationToken = default);

    /// <summary>Instances by state, definition and version.</summary>
    ValueTask<IReadOnlyList<SagaInstance>> QueryAsync(SagaQuery query, CancellationToken cancellationToken = default);

    /// <summary>Everything that happened to one instance, oldest first.</summary>
    ValueTask<IReadOnlyList<SagaLogEntry>> ReadLogAsync(string transactionId, CancellationToken cancellationToken = default);

    /// <summary>The instance's data, deserialized as <typeparamref name="TData"/>.</summary>
    TData ReadData<TData>(SagaInstance instance) where TData : class;

    /// <summary>
    /// Resumes a <see cref="SagaState.Stuck"/> instance once its participant is fixed, in a transaction of its own:
    /// the step's command (or the compensation) it gave up on is sent again, counting attempts from 1. An instance
    /// that is not stuck is left as it is (<see cref="SagaResumeResult.NotStuck"/>). The instance's definition version
    /// must be registered in this process.
    /// </summary>
    ValueTask<SagaResumeResult> ResumeAsync(string transactionId, CancellationToken cancellationToken = default);
}

/// <summary>What is left to do for a saga instance, read from the instance alone (no definition needed).</summary>
public static class SagaProgress
{
    /// <summary>
    /// The steps still to run, in order: <c>STEP</c> for forward steps, <c>compensate STEP</c> while compensating.
    /// The first is in progress. Empty once the instance has ended.
    /// </summary>
    public static IReadOnlyList<string> RemainingSteps(this SagaInstance instance)
    {
        ArgumentNullException.ThrowIfNull(instance);
        return instance.State switch
        {
            SagaState.Running => [.. instance.Steps.Skip(Math.Max(instance.StepIndex, 0))],
            SagaState.Compensating => [.. Enumerable.Range(0, instance.StepIndex + 1).Reverse().Select(i => "compensate " + instance.Steps[i])],
            SagaState.Stuck when instance.Failure is null => [.. instance.Steps.Skip(Math.Max(instance.StepIndex, 0))],
            SagaState.Stuck => [.. Enumerable.Range(0, instance.StepIndex + 1).Reverse().Select(i => "compensate " + instance.Steps[i])],
            _ => [],
        };
    }
}

internal sealed class SagaClient : ISagaClient
{
    readonly IMessageStore _store;
    readonly SagaEngine _engine;
    readonly ConvergeOptions _options;
    readonly IServiceProvider _services;

    public SagaClient(IMessageStore store, SagaEngine engine, ConvergeOptions options, IServiceProvider services)
    {
        _store = store;
        _engine = engine;
        _options = options;
        _services = services;
    }

    public async ValueTask<bool> StartAsync<TData>(string saga, string transactionId, TData data, CancellationToken cancellationToken = default) where TData : class
    {
        await using var transaction = await _store.BeginAsync(cancellationToken);
        var started = await _engine.StartAsync(transaction, saga, transactionId, data, null, _services, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return started;
    }

    public ValueTask<bool> StartAsync<TData>(string saga, string transactionId, TData data, DbTransaction transaction, CancellationToken cancellationToken = default) where TData : class =>
        _engine.StartAsync(_store.Database().Enlist(transaction), saga, transactionId, data, null, _services, cancellationToken);

    public ValueTask<SagaInstance?> GetAsync(string transactionId, CancellationToken cancellationToken = default) => _store.SagaQueries().GetSagaAsync(transactionId, cancellationToken);

    public ValueTask<IReadOnlyList<SagaInstance>> QueryAsync(SagaQuery query, CancellationToken cancellationToken = default) => _store.SagaQueries().QuerySagasAsync(query, cancellationToken);

    public ValueTask<IReadOnlyList<SagaLogEntry>> ReadLogAsync(string transactionId, CancellationToken cancellationToken = default) => _store.SagaQueries().ReadSagaLogAsync(transactionId, cancellationToken);

    public async ValueTask<SagaResumeResult> ResumeAsync(string transactionId, CancellationToken cancellationToken = default)
    {
        await using var transaction = await _store.BeginAsync(cancellationToken);
        var result = await _engine.ResumeAsync(transaction, transactionId, "the saga client", _services, cancellationToken);
        if (result == SagaResumeResult.Resumed)
        {
            await transaction.CommitAsync(cancellationToken);
        }

        return result;
    }

    public TData ReadData<TData>(SagaInstance instance) where TData : class
    {
        ArgumentNullException.ThrowIfNull(instance);
        return (TData)(_options.Serializer.Deserialize(instance.Data.Span, typeof(TData)) ?? throw new InvalidOperationException($"Saga '{instance.TransactionId}' has empty data."));
    }
}
