using Converge.Storage;

namespace Converge.Sagas;

/// <summary>Finds the optional saga contracts on a store or a transaction.</summary>
public static class SagaStorageExtensions
{
    /// <summary><paramref name="transaction"/>'s saga storage.</summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="ISagaTransaction"/>.</exception>
    public static ISagaTransaction Sagas(this IStoreTransaction transaction) => StoreContracts.Require<ISagaTransaction>(transaction, "Sagas");

    /// <summary><paramref name="store"/>'s saga queries.</summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="ISagaQueries"/>.</exception>
    public static ISagaQueries SagaQueries(this IStore store) => StoreContracts.Require<ISagaQueries>(store, "Saga queries");
}
