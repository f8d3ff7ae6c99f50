using System.Data.Common;

namespace Converge.Storage;

/// <summary>Finds an optional contract on a store or a transaction, and says clearly what is missing when it is not there.</summary>
public static class StoreContracts
{
    /// <summary>
    /// <paramref name="store"/> (a store or a transaction) as <typeparamref name="TContract"/>: the object itself when it
    /// implements the contract, else the store or transaction a decorator wraps (<see cref="IStoreDecorator"/>,
    /// <see cref="IStoreTransactionDecorator"/>), and so on inwards.
    /// </summary>
    /// <param name="store">The store or transaction.</param>
    /// <param name="capability">What needs the contract, for the message, such as <c>Sagas</c>.</param>
    /// <exception cref="NotSupportedException">Neither the store nor any store it wraps offers <typeparamref name="TContract"/>.</exception>
    public static TContract Require<TContract>(object store, string capability)
        where TContract : class
    {
        ArgumentNullException.ThrowIfNull(store);
        return Find<TContract>(store) ?? throw new NotSupportedException(
            $"{capability} need a store that implements {typeof(TContract).Name}; "
            + (store is IStore named ? $"the {named.Name} store does not. " : $"this store's transactions ({store.GetType().Name}) do not. ")
            + "Use a store that offers it (the SQLite and PostgreSQL stores offer every contract).");
    }

    /// <summary>
    /// <paramref name="store"/> (a store or a transaction) as <typeparamref name="TContract"/>, looked for as
    /// <see cref="Require{TContract}"/> does; <c>null</c> when neither it nor any store it wraps offers the contract.
    /// </summary>
    public static TContract? Find<TContract>(object store)
        where TContract : class
    {
        ArgumentNullException.ThrowIfNull(store);
        for (var current = store; current is not null;)
        {
            if (current is TContract contract)
            {
                return contract;
            }

            current = current switch
            {
                IStoreDecorator decorator => decorator.Inner,
                IStoreTransactionDecorator decorator => decorator.Inner,
                _ => null,
            };
        }

        return null;
    }
}

/// <summary>Finds the core's optional contracts on a store or a transaction.</summary>
public static class StoreContractExtensions
{
    /// <summary><paramref name="store"/>'s read-only queries (status, dead letters, flows).</summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="IStoreQueries"/>.</exception>
    public static IStoreQueries Queries(this IStore store) => StoreContracts.Require<IStoreQueries>(store, "Store queries");

    /// <summary><paramref name="store"/> as a store on the application's database (the outbox on its own transaction).</summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="IDatabaseStore"/>.</exception>
    public static IDatabaseStore Database(this IStore store) => StoreContracts.Require<IDatabaseStore>(store, "The application's own database transactions");

    /// <summary><paramref name="transaction"/>'s database transaction, which the application's own statements can join.</summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="IDatabaseTransaction"/>.</exception>
    public static IDatabaseTransaction Database(this IStoreTransaction transaction) => StoreContracts.Require<IDatabaseTransaction>(transaction, "SQL statements in a store transaction");

    /// <param name="transaction">A transaction of a store on an ADO.NET database.</param>
    extension(IStoreTransaction transaction)
    {
        /// <summary>
        /// The underlying database transaction (<see cref="IDatabaseTransaction.Transaction"/>): pass it to
        /// <c>SendAsync</c>, <c>PublishAsync</c> and an EF Core <c>DbContext</c> so their writes commit with this one.
        /// </summary>
        /// <exception cref="NotSupportedException">The store has no database (it does not offer <see cref="IDatabaseTransaction"/>).</exception>
        public DbTransaction Transaction => transaction.Database().Transaction;
    }
}
