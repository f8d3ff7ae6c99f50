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

    /// <summary>
    /// Enqueues one occurrence of the recurring job <paramref name="schedule"/> now, in <paramref name="transaction"/>,
    /// outside its cron schedule: the job the schedule stores, on its queue and priority, with a new id, so it runs besides
    /// the scheduled occurrences. Needs no registration of the job in this process (the CLI and the dashboard use it);
    /// <see cref="IJobClient.TriggerRecurringAsync"/> does the same from the application.
    /// </summary>
    /// <returns>The id of the job enqueued.</returns>
    public static async ValueTask<Guid> TriggerRecurringAsync(this IStoreTransaction transaction, RecurringJobRecord schedule, DateTimeOffset now, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        ArgumentNullException.ThrowIfNull(schedule);
        var occurrence = RecurringJobScheduler.Triggered(schedule, now);
        await transaction.EnqueueAsync(occurrence, cancellationToken);
        return occurrence.Envelope.MessageId;
    }
}
