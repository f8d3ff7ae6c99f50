using System.Globalization;
using Converge.Consistency;
using Converge.CrashWorker;
using Converge.Projections;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.EndToEnd.Tests;

/// <summary>
/// Read-your-writes across processes: a worker process writes events and runs the projection on a shared SQLite file;
/// this process, which runs nothing (so no bell of its own ever rings), waits for each write's token and then reads
/// the projection's view. A paused projection is never reported to have reached a token; once it runs, every write is
/// in the view when the wait returns.
/// </summary>
public sealed class ReadYourWritesTests
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task A_reader_in_another_process_sees_each_write_once_the_wait_returns_and_never_while_the_projection_is_behind()
    {
        var folder = Path.Combine(Path.GetTempPath(), "converge-ryw-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        var databasePath = Path.Combine(folder, "ryw.db");
        var log = new WorkerLog();
        try
        {
            var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
            builder.Services.AddConverge(o => ConsistencyScenario.Configure(o, databasePath, runConsumers: false));
            using var host = builder.Build();
            await host.StartAsync();
            var store = host.Services.GetRequiredService<IMessageStore>();
            var consistency = host.Services.GetRequiredService<IConsistency>();
            var view = host.Services.GetRequiredService<ProjectionCatalog>().View(ConsistencyScenario.Projection, ConsistencyScenario.Table);
            var group = "projection:" + ConsistencyScenario.Projection + "@1";

            // The first worker builds the projection and makes it live; then the projection is paused while no worker runs,
            // so the next worker's runner finds it paused before it reads a single event.
            using (var builderWorker = WorkerProcess.Start(WorkerProcess.WorkerPath, [databasePath, "consistency"], 1, log))
            {
                await log.WaitForLineAsync(1, line => line == ConsistencyScenario.Ready, Patience, "ready");
                var live = await consistency.WaitForProjectionAsync(ConsistencyScenario.Projection, ConsistencyToken.None, Patience);
                Assert.True(live.Reached, live.Reason);
                Assert.Equal(0, await builderWorker.StopAsync(Patience));
            }

            await using (var pause = await store.BeginAsync(CancellationToken.None))
            {
                await pause.ConsumerGroups().SetConsumerGroupPausedAsync(group, true, CancellationToken.None);
                await pause.CommitAsync(CancellationToken.None);
            }

            using var worker = WorkerProcess.Start(WorkerProcess.WorkerPath, [databasePath, "consistency"], 2, log);
            await log.WaitForLineAsync(2, line => line == ConsistencyScenario.Ready, Patience, "ready");
            var held = await WriteAsync(worker, log, "held");

            var behind = await consistency.WaitForProjectionAsync(ConsistencyScenario.Projection, held, TimeSpan.FromMilliseconds(300));
            Assert.False(behind.Reached);
            Assert.Equal(group, behind.Group);
            Assert.True(behind.Position < held.Position, $"{behind.Position} < {held.Position}");
            Assert.Null(ReadPosition(store, view, "held"));

            await using (var resume = await store.BeginAsync(CancellationToken.None))
            {
                await resume.ConsumerGroups().SetConsumerGroupPausedAsync(group, false, CancellationToken.None);
                await resume.CommitAsync(CancellationToken.None);
            }

            var reached = await consistency.WaitForProjectionAsync(ConsistencyScenario.Projection, held, Patience);
            Assert.True(reached.Reached, reached.Reason);
            Assert.Equal(held.Position, ReadPosition(store, view, "held"));

            // Each write, read at once after its wait: never missing, whatever the interleaving of the two processes.
            for (var i = 0; i < 50; i++)
            {
                var id = "order-" + i.ToString(CultureInfo.InvariantCulture);
                var token = await WriteAsync(worker, log, id);
                var wait = await consistency.WaitForProjectionAsync(ConsistencyScenario.Projection, token, Patience);
                Assert.True(wait.Reached, wait.Reason);
                Assert.True(wait.Position >= token.Position, $"{wait.Position} >= {token.Position}");
                Assert.Equal(token.Position, ReadPosition(store, view, id));
            }

            Assert.Equal(0, await worker.StopAsync(Patience));
            await host.StopAsync();
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (IOException)
            {
                // Left for the OS to clean.
            }
        }
    }

    /// <summary>Asks the worker to write order <paramref name="id"/> and returns the token it answered.</summary>
    static async Task<ConsistencyToken> WriteAsync(WorkerProcess worker, WorkerLog log, string id)
    {
        await worker.SendLineAsync("write " + id);
        var line = await log.WaitForLineAsync(worker.Number, l => l.StartsWith($"{ConsistencyScenario.Wrote} {id} ", StringComparison.Ordinal), Patience, $"the token of {id}");
        return ConsistencyToken.Parse(line.Split(' ')[2]);
    }

    /// <summary>The position stored for <paramref name="id"/> in the projection's view; <c>null</c> when it has no row.</summary>
    static long? ReadPosition(IMessageStore store, string view, string id)
    {
        using var connection = ((SqliteMessageStore)store).OpenConnection();
        using var command = connection.CreateCommand();
        command.CommandText = $"SELECT position FROM {view} WHERE order_id = @id";
        command.Parameters.AddWithValue("@id", id);
        return command.ExecuteScalar() is { } position ? Convert.ToInt64(position, CultureInfo.InvariantCulture) : null;
    }
}
