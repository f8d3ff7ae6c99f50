using System.Data.Common;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing.Conformance;

namespace Converge.Sqlite.Tests;

public sealed class SqliteQueueConformanceTests() : QueueConformanceTests(new SqliteConformanceStore());

public sealed class SqliteLogConformanceTests() : LogConformanceTests(new SqliteConformanceStore());

public sealed class SqliteInboxConformanceTests() : InboxConformanceTests(new SqliteConformanceStore());

public sealed class SqliteInboxRemovalConformanceTests() : InboxRemovalConformanceTests(new SqliteConformanceStore());

public sealed class SqliteStoreQueriesConformanceTests() : StoreQueriesConformanceTests(new SqliteConformanceStore());

public sealed class SqliteSagaStorageConformanceTests() : SagaStorageConformanceTests(new SqliteConformanceStore());

public sealed class SqliteJobStorageConformanceTests() : JobStorageConformanceTests(new SqliteConformanceStore());

public sealed class SqliteDashboardConformanceTests() : DashboardConformanceTests(new SqliteConformanceStore());

public sealed class SqliteDatabaseConformanceTests() : DatabaseConformanceTests(new SqliteConformanceStore());

public sealed class SqliteProjectionConformanceTests() : ProjectionConformanceTests(new SqliteConformanceStore());

/// <summary>A fresh folder of SQLite files per test, one file per store name.</summary>
public sealed class SqliteConformanceStore : DatabaseConformanceStore
{
    readonly string _folder = Directory.CreateTempSubdirectory("converge-conformance-").FullName;

    public override void Use(ConvergeOptions options, string storeName) =>
        options.UseSqlite(Path.Combine(_folder, storeName + ".db"));

    public override Task<DbConnection> OpenConnectionAsync(IMessageStore store) =>
        Task.FromResult<DbConnection>(((SqliteMessageStore)store).OpenConnection());

    public override string QueueTable => "converge_queue";

    /// <summary>SQLite's columns take any value of any type: ids that are not GUIDs, numbers beyond int, times that are floats.</summary>
    public override IReadOnlyList<RowDamage> RowDamages { get; } =
    [
        .. PortableRowDamages,
        new("message_id", r => "not-a-guid-" + Garbage(r)),
        new("message_id", r => RandomBytes(r, r.Next(0, 16))),
        new("message_id", r => RandomBytes(r, r.Next(17, 40))),
        new("message_id", r => r.NextInt64()),
        new("causation_id", r => "not-a-guid-" + Garbage(r)),
        new("causation_id", r => RandomBytes(r, r.Next(0, 16))),
        new("priority", r => (long)int.MaxValue + 1 + r.NextInt64(int.MaxValue)),
        new("priority", r => (long)int.MinValue - 1 - r.NextInt64(int.MaxValue)),
        new("priority", _ => 1e300),
        new("attempts", r => (long)int.MaxValue + r.NextInt64(int.MaxValue)),
        new("attempts", _ => long.MaxValue),
        new("sent_at", _ => 1e30),
        new("as_of", _ => -1e30),
        new("headers", r => RandomBytes(r, r.Next(1, 40))),
        new("history", r => RandomBytes(r, r.Next(1, 40))),
    ];

    /// <summary>SQLite compares a text or blob visible_at above every number, so no claim ever reaches it.</summary>
    public override IReadOnlyList<object> StrandedVisibleAts { get; } =
    [
        .. PortableStrandedVisibleAts,
        "tomorrow",
        new byte[] { 1, 2, 3 },
    ];

    static byte[] RandomBytes(Random random, int count)
    {
        var bytes = new byte[count];
        random.NextBytes(bytes);

        // Not text that happens to spell a GUID or JSON: a leading 0xFF is never valid UTF-8.
        if (count > 0)
        {
            bytes[0] = 0xFF;
        }

        return bytes;
    }

    protected override ValueTask CleanUpAsync()
    {
        Directory.Delete(_folder, recursive: true);
        return ValueTask.CompletedTask;
    }
}
