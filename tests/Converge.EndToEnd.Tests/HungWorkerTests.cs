using System.Diagnostics;
using System.Globalization;
using Converge.CrashWorker;
using Converge.Hosting;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit.Abstractions;

namespace Converge.EndToEnd.Tests;

/// <summary>
/// A worker process whose handler never returns and ignores its token: it abandons the batch at the handler timeout,
/// so the file's write lock is free and a second worker process starts and handles the message; and the hung worker
/// stops within its host's shutdown timeout.
/// </summary>
public sealed class HungWorkerTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_hung_handler_is_abandoned_so_another_worker_process_starts_and_handles_its_message_and_the_hung_one_stops_in_time()
    {
        var folder = Path.Combine(Path.GetTempPath(), "converge-hung-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        var databasePath = Path.Combine(folder, "hung.db");
        var log = new WorkerLog();
        WorkerProcess? hung = null;
        WorkerProcess? healthy = null;
        try
        {
            var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
            builder.Services.AddConverge(o => CrashScenario.Configure(o, databasePath, runConsumers: false));
            using var host = builder.Build();
            await host.StartAsync();
            var store = (SqliteMessageStore)host.Services.GetRequiredService<IMessageStore>();
            using (var db = store.OpenConnection())
            {
                using var create = db.CreateCommand();
                create.CommandText = CrashScenario.CreateEffectsTable;
                create.ExecuteNonQuery();
            }

            await host.Services.GetRequiredService<IMessageBus>().SendAsync(new CrashMessage(7));

            hung = WorkerProcess.Start(WorkerProcess.WorkerPath, [databasePath, "hang"], 1, log);
            await Eventually.UntilAsync(() => log.Tail().Contains(CrashScenario.HangingLine + " 7", StringComparison.Ordinal), () => "worker 1's handler starts hanging\n" + log.Tail(), TimeSpan.FromSeconds(60));

            // A second process can start only with the file's write lock (it migrates under BEGIN IMMEDIATE), which
            // the hung batch held until it was abandoned at the handler timeout (the lease, 2 s) and its grace.
            healthy = WorkerProcess.Start(databasePath, 2, log);

            // Worker 2 handles the message while worker 1 still runs, its handler still hanging.
            await Eventually.UntilAsync(() => Effects(store) == 1, () => $"worker 2 handles the message (worker 2 exited: {healthy.HasExited})\nworker 2 wrote:\n{log.Of(2)}\n" + log.Tail(), TimeSpan.FromSeconds(60));
            Assert.False(hung.HasExited, "Worker 1 exited on its own.\n" + log.Tail());

            // The hung worker stops within its shutdown timeout (and the hand-back time) though its handler still hangs.
            var watch = Stopwatch.StartNew();
            Assert.Equal(0, await hung.StopAsync(TimeSpan.FromSeconds(60)));
            var stopped = watch.Elapsed;
            output.WriteLine($"the hung worker exited {stopped.TotalSeconds:F2} s after it was asked to stop");
            Assert.InRange(stopped, TimeSpan.Zero, CrashScenario.HangingShutdownTimeout + ConvergeHost.HandBackTime + TimeSpan.FromSeconds(5));

            Assert.Equal(1, Effects(store));
            Assert.Empty(await store.ListDeadLettersAsync(null, 10, CancellationToken.None));
            Assert.Equal(0, await healthy.StopAsync(TimeSpan.FromSeconds(60)));
            await host.StopAsync();
        }
        finally
        {
            hung?.Dispose();
            healthy?.Dispose();
            SqliteConnection.ClearAllPools();
            Directory.Delete(folder, recursive: true);
        }
    }

    static long Effects(SqliteMessageStore store)
    {
        using var db = store.OpenConnection();
        using var command = db.CreateCommand();
        command.CommandText = $"SELECT count(*) FROM {CrashScenario.EffectsTable} WHERE seq = 7";
        return Convert.ToInt64(command.ExecuteScalar(), CultureInfo.InvariantCulture);
    }
}
