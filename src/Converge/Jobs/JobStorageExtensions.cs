using Converge.Storage;

namespace Converge.Jobs;

/// <summary>Finds the optional job contracts on a store or a transaction.</summary>
public static class JobStorageExtensions
{
    /// <summary><paramref name="transaction"/>'s job storage.</summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="IJobTransaction"/>.</exception>
    public static IJobTransaction Jobs(this IStoreTransaction transaction) => StoreContracts.Require<IJobTransaction>(transaction, "Jobs");

    /// <summary><paramref name="store"/>'s job storage outside a transaction.</summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="IJobStore"/>.</exception>
    public static IJobStore Jobs(this IStore store) => StoreContracts.Require<IJobStore>(store, "Jobs");

    /// <summary><paramref name="store"/>'s job queries.</summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="IJobQueries"/>.</exception>
    public static IJobQueries JobQueries(this IStore store) => StoreContracts.Require<IJobQueries>(store, "Job queries");
}
