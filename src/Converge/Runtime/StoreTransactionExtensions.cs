using Converge.Storage;

namespace Converge.Runtime;

/// <summary>The application's own statements in a transaction from <see cref="IMessageBus.BeginTransactionAsync"/>.</summary>
public static class StoreTransactionExtensions
{
    /// <summary>
    /// Executes <paramref name="sql"/> in <paramref name="transaction"/> and returns the rows affected: the application's
    /// own writes that commit with the messages sent in it (the outbox), or its own tables created at start-up
    /// (<c>CREATE TABLE IF NOT EXISTS ...</c>, committed like any write). Parameters are (name, value) pairs, named as
    /// the database expects (<c>@name</c> works on every store); a <c>null</c> value is written as SQL NULL. The store
    /// may keep the statement prepared on its connection, so pass constant SQL text and put every value in a parameter.
    /// </summary>
    public static ValueTask<int> ExecuteAsync(this IStoreTransaction transaction, string sql, params (string Name, object? Value)[] parameters) =>
        transaction.ExecuteAsync(sql, parameters, CancellationToken.None);

    /// <inheritdoc cref="ExecuteAsync(IStoreTransaction, string, ValueTuple{string, object}[])"/>
    public static ValueTask<int> ExecuteAsync(this IStoreTransaction transaction, string sql, (string Name, object? Value)[] parameters, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        ArgumentException.ThrowIfNullOrWhiteSpace(sql);
        ArgumentNullException.ThrowIfNull(parameters);
        var pairs = new KeyValuePair<string, object?>[parameters.Length];
        for (var i = 0; i < parameters.Length; i++)
        {
            pairs[i] = new KeyValuePair<string, object?>(parameters[i].Name, parameters[i].Value);
        }

        return transaction.Database().ExecuteAsync(sql, pairs, cancellationToken);
    }
}
