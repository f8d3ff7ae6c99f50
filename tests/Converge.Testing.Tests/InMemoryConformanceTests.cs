using System.Collections.Concurrent;
using Converge.Runtime;
using Converge.Testing.Conformance;
using Converge.Testing.InMemory;

namespace Converge.Testing.Tests;

// The in-memory store offers every contract but the database one, so it runs every suite but DatabaseConformanceTests.
public sealed class InMemoryQueueConformanceTests() : QueueConformanceTests(new InMemoryConformanceStore());

public sealed class InMemoryLogConformanceTests() : LogConformanceTests(new InMemoryConformanceStore());

public sealed class InMemoryInboxConformanceTests() : InboxConformanceTests(new InMemoryConformanceStore());

public sealed class InMemoryInboxRemovalConformanceTests() : InboxRemovalConformanceTests(new InMemoryConformanceStore());

public sealed class InMemoryStoreQueriesConformanceTests() : StoreQueriesConformanceTests(new InMemoryConformanceStore());

public sealed class InMemorySagaStorageConformanceTests() : SagaStorageConformanceTests(new InMemoryConformanceStore());

public sealed class InMemoryJobStorageConformanceTests() : JobStorageConformanceTests(new InMemoryConformanceStore());

public sealed class InMemoryDashboardConformanceTests() : DashboardConformanceTests(new InMemoryConformanceStore());

/// <summary>In-memory stores, one per store name within a test.</summary>
public sealed class InMemoryConformanceStore : ConformanceStore
{
    // The same name within a test is the same store, as two processes share a database; the first host's clock is its clock.
    readonly ConcurrentDictionary<string, InMemoryMessageStore> _stores = new(StringComparer.Ordinal);

    public override void Use(ConvergeOptions options, string storeName) =>
        options.StoreFactory = context => _stores.GetOrAdd(storeName, _ => new InMemoryMessageStore(context.TimeProvider));
}
