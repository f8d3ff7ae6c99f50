using System.Data.Common;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing.Conformance;

namespace Converge.PostgreSql.Tests;

public sealed class PostgreSqlQueueConformanceTests() : QueueConformanceTests(new PostgreSqlConformanceStore());

public sealed class PostgreSqlLogConformanceTests() : LogConformanceTests(new PostgreSqlConformanceStore());

public sealed class PostgreSqlInboxConformanceTests() : InboxConformanceTests(new PostgreSqlConformanceStore());

public sealed class PostgreSqlInboxRemovalConformanceTests() : InboxRemovalConformanceTests(new PostgreSqlConformanceStore());

public sealed class PostgreSqlStoreQueriesConformanceTests() : StoreQueriesConformanceTests(new PostgreSqlConformanceStore());

public sealed class PostgreSqlSagaStorageConformanceTests() : SagaStorageConformanceTests(new PostgreSqlConformanceStore());

public sealed class PostgreSqlJobStorageConformanceTests() : JobStorageConformanceTests(new PostgreSqlConformanceStore());

public sealed class PostgreSqlDashboardConformanceTests() : DashboardConformanceTests(new PostgreSqlConformanceStore());

public sealed class PostgreSqlDatabaseConformanceTests() : DatabaseConformanceTests(new PostgreSqlConformanceStore());

public sealed class PostgreSqlProjectionConformanceTests() : ProjectionConformanceTests(new PostgreSqlConformanceStore());

/// <summary>A schema per store name in the test database, dropped afterwards.</summary>
public sealed class PostgreSqlConformanceStore : DatabaseConformanceStore
{
    readonly TestDatabase _database = new();

    public override string QueueTable => "queue";

    public override void Use(ConvergeOptions options, string storeName)
    {
        var schema = _database.Schema(storeName);
        options.UsePostgreSql(TestDatabase.ConnectionStringFor(schema), o => o.Schema = schema);
    }

    public override async Task<DbConnection> OpenConnectionAsync(IMessageStore store) =>
        await ((PostgreSqlMessageStore)store).OpenConnectionAsync();

    protected override ValueTask CleanUpAsync() => _database.DisposeAsync();
}
