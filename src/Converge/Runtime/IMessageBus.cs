using System.Data.Common;
using Converge.Storage;

namespace Converge.Runtime;

/// <summary>
/// Sends commands to queues and publishes events to the log. The overloads that take a <see cref="DbTransaction"/>
/// are the outbox: the message commits or rolls back with the caller's own writes in that transaction.
/// <c>AddConverge</c> registers it as a singleton: inject it, or resolve it from the host's services.
/// </summary>
public interface IMessageBus
{
    /// <summary>
    /// Begins a transaction on the store's database for your own writes and the messages that announce them (the
    /// outbox): pass <see cref="IDatabaseTransaction.Transaction"/> to the <c>SendAsync</c> and <c>PublishAsync</c>
    /// overloads, write with its connection, then <see cref="IStoreTransaction.CommitAsync"/>. Consumers in this
    /// process are woken as soon as it commits. On SQLite this transaction waits its turn with Converge's own
    /// writers instead of competing for the file's lock, so prefer it to a transaction of your own there.
    /// The application's own statements, its tables included, go through
    /// <see cref="StoreTransactionExtensions.ExecuteAsync(IStoreTransaction, string, ValueTuple{string, object}[])"/>.
    /// Disposing without committing rolls back.
    /// </summary>
    ValueTask<IStoreTransaction> BeginTransactionAsync(CancellationToken cancellationToken = default);

    /// <summary>Sends <paramref name="message"/> in its own transaction; returns its message id.</summary>
    ValueTask<Guid> SendAsync<T>(T message, SendOptions? options = null, CancellationToken cancellationToken = default) where T : notnull;

    /// <summary>Sends <paramref name="message"/> inside the caller's open <paramref name="transaction"/> on the store's database.</summary>
    ValueTask<Guid> SendAsync<T>(T message, DbTransaction transaction, SendOptions? options = null, CancellationToken cancellationToken = default) where T : notnull;

    /// <summary>Appends <paramref name="event"/> to <paramref name="stream"/> in its own transaction.</summary>
    /// <exception cref="StreamVersionConflictException">The stream is not at <see cref="PublishOptions.ExpectedVersion"/>.</exception>
    ValueTask<LogEvent> PublishAsync<T>(string stream, T @event, PublishOptions? options = null, CancellationToken cancellationToken = default) where T : notnull;

    /// <summary>Appends <paramref name="event"/> to <paramref name="stream"/> inside the caller's open <paramref name="transaction"/>.</summary>
    /// <exception cref="StreamVersionConflictException">The stream is not at <see cref="PublishOptions.ExpectedVersion"/>.</exception>
    ValueTask<LogEvent> PublishAsync<T>(string stream, T @event, DbTransaction transaction, PublishOptions? options = null, CancellationToken cancellationToken = default) where T : notnull;
}
