using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;

namespace Converge.Sagas;

/// <summary>
/// What a saga's end hook sees: the instance, and the transaction that records its end. Writes and messages made
/// through it commit together with the saga's new state.
/// </summary>
public abstract class SagaContext
{
    readonly SagaContextCore _core;

    private protected SagaContext(SagaContextCore core) => _core = core;

    /// <summary>The business transaction id.</summary>
    public string TransactionId => _core.Instance.TransactionId;

    /// <summary>The instance as it is being saved.</summary>
    public SagaInstance Instance => _core.Instance;

    /// <summary>Why the saga compensated (the error of <see cref="FailedStep"/>); <c>null</c> when it completed.</summary>
    public string? Failure => _core.Instance.Failure;

    /// <summary>The step whose failure made the saga compensate; <c>null</c> when it completed.</summary>
    public string? FailedStep => _core.Instance.FailedStep;

    /// <summary>The services of the message being handled.</summary>
    public IServiceProvider Services => _core.Services;

    /// <summary>Executes <paramref name="sql"/> in the saga's transaction; see <see cref="MessageContext.ExecuteAsync(string, ValueTuple{string, object}[])"/>.</summary>
    public ValueTask<int> ExecuteAsync(string sql, params (string Name, object? Value)[] parameters)
    {
        return _core.Transaction.Database().ExecuteAsync(sql, StatementParameters.From(parameters), CancellationToken.None);
    }

    /// <summary>Sends a command in the saga's transaction, carrying its transaction id.</summary>
    public ValueTask<Guid> SendAsync<T>(T message, SendOptions? options = null, CancellationToken cancellationToken = default) where T : notnull
    {
        options ??= new SendOptions();
        options.CorrelationId ??= TransactionId;
        return _core.Bus.SendCoreAsync(_core.Transaction, message, options, _core.Cause, cancellationToken);
    }

    /// <summary>Publishes an event in the saga's transaction, carrying its transaction id, so other services can react.</summary>
    public ValueTask<LogEvent> PublishAsync<T>(string stream, T @event, PublishOptions? options = null, CancellationToken cancellationToken = default) where T : notnull
    {
        options ??= new PublishOptions();
        options.CorrelationId ??= TransactionId;
        return _core.Bus.PublishCoreAsync(_core.Transaction, stream, @event, options, _core.Cause, cancellationToken);
    }
}

/// <summary>The end-hook context with the saga's typed data.</summary>
public sealed class SagaContext<TData> : SagaContext where TData : class
{
    internal SagaContext(SagaContextCore core, TData data) : base(core) => Data = data;

    /// <summary>The saga data.</summary>
    public TData Data { get; }
}

internal sealed record SagaContextCore(IStoreTransaction Transaction, MessageBus Bus, SagaInstance Instance, Envelope? Cause, IServiceProvider Services);
