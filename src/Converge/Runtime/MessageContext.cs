using System.Data.Common;
using Converge.Contracts;
using Converge.Storage;

namespace Converge.Runtime;

/// <summary>What a handler knows about the message it handles, and the transaction its effects join.</summary>
public sealed class MessageContext
{
    readonly MessageBus _bus;
    readonly IStoreTransaction _transaction;
    List<(string Sql, KeyValuePair<string, object?>[] Parameters)>? _writes;

    internal MessageContext(MessageBus bus, IStoreTransaction transaction, Envelope envelope, string? queue, string? group, int attempt, IServiceProvider services)
    {
        _bus = bus;
        _transaction = transaction;
        Envelope = envelope;
        Queue = queue;
        ConsumerGroup = group;
        Attempt = attempt;
        Services = services;
    }

    internal IStoreTransaction Transaction => _transaction;

    internal MessageBus Bus => _bus;

    /// <summary>The message as received.</summary>
    public Envelope Envelope { get; }

    /// <summary>The message id.</summary>
    public Guid MessageId => Envelope.MessageId;

    /// <summary>The business transaction id, if the message carries one.</summary>
    public string? CorrelationId => Envelope.CorrelationId;

    /// <summary>A key for idempotent calls to services outside the store: stable across redeliveries of this message.</summary>
    public string IdempotencyKey => Envelope.MessageId.ToString("N");

    /// <summary>The queue the message came from; <c>null</c> for a log event.</summary>
    public string? Queue { get; }

    /// <summary>The consumer group handling a log event; <c>null</c> for a queue message.</summary>
    public string? ConsumerGroup { get; }

    /// <summary>The 1-based attempt number.</summary>
    public int Attempt { get; }

    /// <summary>The DI scope of this message.</summary>
    public IServiceProvider Services { get; }

    /// <summary>
    /// The open transaction on the store's database that records this message as handled. Writes made through
    /// it (use <c>transaction.Connection</c> and set each command's <c>Transaction</c>) commit exactly when the
    /// message is acknowledged, and roll back when the handler throws.
    /// </summary>
    public async ValueTask<DbTransaction> GetTransactionAsync(CancellationToken cancellationToken = default)
    {
        // What the store held back (the message's savepoint) must be on the server before the caller's own statements.
        await _transaction.FlushAsync(cancellationToken);
        return _transaction.Database().Transaction;
    }

    /// <summary>
    /// Executes <paramref name="sql"/> in the message's transaction and returns the rows affected. Parameters are
    /// (name, value) pairs, named as the database expects (<c>@name</c> works on every store). The store may keep
    /// the statement prepared across messages, so this is the cheapest way to write a few rows per message.
    /// </summary>
    public ValueTask<int> ExecuteAsync(string sql, params (string Name, object? Value)[] parameters) =>
        ExecuteAsync(sql, parameters, CancellationToken.None);

    /// <inheritdoc cref="ExecuteAsync(string, ValueTuple{string, object}[])"/>
    public ValueTask<int> ExecuteAsync(string sql, (string Name, object? Value)[] parameters, CancellationToken cancellationToken)
    {
        return _transaction.Database().ExecuteAsync(sql, StatementParameters.From(parameters), cancellationToken);
    }

    /// <summary>
    /// Records <paramref name="sql"/> to run in the message's transaction when the handler returns, after its own
    /// statements, for its effect alone (nobody reads the rows affected). It commits exactly when the message is
    /// acknowledged, and never runs when the handler throws. Statements recorded by the handlers of a batch run in the
    /// order recorded, and PostgreSQL may send them together in one round trip
    /// (<see cref="IDatabaseTransaction.WriteAsync"/>): one that fails (a constraint) fails its message as the handler
    /// throwing would. Parameters are (name, value) pairs (<c>@name</c> works on every store).
    /// </summary>
    public void Execute(string sql, params (string Name, object? Value)[] parameters)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(sql);
        (_writes ??= []).Add((sql, StatementParameters.From(parameters)));
    }

    /// <summary>Runs the statements the handler recorded with <see cref="Execute"/>; the consumer calls it when the handler returned.</summary>
    internal async ValueTask WriteRecordedAsync(CancellationToken cancellationToken)
    {
        if (_writes is not { } writes)
        {
            return;
        }

        _writes = null;
        var database = _transaction.Database();
        foreach (var (sql, parameters) in writes)
        {
            await database.WriteAsync(sql, parameters, cancellationToken);
        }
    }

    /// <summary>Sends a message in this handler's transaction; it carries this message's correlation id and is caused by it.</summary>
    public ValueTask<Guid> SendAsync<T>(T message, SendOptions? options = null, CancellationToken cancellationToken = default) where T : notnull =>
        _bus.SendCoreAsync(_transaction, message, options, Envelope, cancellationToken);

    /// <summary>Publishes an event in this handler's transaction; it carries this message's correlation id and is caused by it.</summary>
    public ValueTask<LogEvent> PublishAsync<T>(string stream, T @event, PublishOptions? options = null, CancellationToken cancellationToken = default) where T : notnull =>
        _bus.PublishCoreAsync(_transaction, stream, @event, options, Envelope, cancellationToken);
}
