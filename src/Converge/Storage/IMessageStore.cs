namespace Converge.Storage;

/// <summary>
/// The core every store provides: the queue (<see cref="IQueueStore"/>), the log (<see cref="ILogStore"/>) and the
/// inbox (<see cref="IInboxStore"/>) on one database, with transactions that write to all three
/// (<see cref="IStoreTransaction"/>). Sagas, jobs, queries and the outbox on the application's own transaction are
/// optional contracts beside it; the capability that needs one says so at start-up when the store lacks it. Every
/// implementation passes the core conformance suites in Converge.Testing. Implementations are thread-safe.
/// </summary>
public interface IMessageStore : IQueueStore, ILogStore, IInboxStore;
