using System.Data.Common;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing.Conformance;

namespace Converge.Sqlite.Tests;

public sealed class SqliteConformanceTests : MessageStoreConformanceTests, IDisposable
{
    readonly string _folder = Directory.CreateTempSubdirectory("converge-conformance-").FullName;

    protected override void UseStore(ConvergeOptions options, string storeName) =>
        options.UseSqlite(Path.Combine(_folder, storeName + ".db"));

    protected override Task<DbConnection> OpenConnectionAsync(IMessageStore store) =>
        Task.FromResult<DbConnection>(((SqliteMessageStore)store).OpenConnection());

    public void Dispose() => Directory.Delete(_folder, recursive: true);
}
