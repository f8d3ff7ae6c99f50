using System.Data.Common;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing.Conformance;

namespace Converge.PostgreSql.Tests;

public sealed class PostgreSqlConformanceTests : MessageStoreConformanceTests, IAsyncDisposable
{
    readonly TestDatabase _database = new();

    protected override string QueueTable => "queue";

    protected override void UseStore(ConvergeOptions options, string storeName)
    {
        var schema = _database.Schema(storeName);
        options.UsePostgreSql(TestDatabase.ConnectionStringFor(schema), o => o.Schema = schema);
    }

    protected override async Task<DbConnection> OpenConnectionAsync(IMessageStore store) =>
        await ((PostgreSqlMessageStore)store).OpenConnectionAsync();

    public ValueTask DisposeAsync() => _database.DisposeAsync();
}
