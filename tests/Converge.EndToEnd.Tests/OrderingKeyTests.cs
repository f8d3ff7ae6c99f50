using System.Diagnostics;
using System.Globalization;
using Converge.CrashWorker;
using Converge.Hosting;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Testing.Conformance;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit.Abstractions;

namespace Converge.EndToEnd.Tests;

/// <summary>
/// Ordering keys across processes: two worker processes share 10,000 keyed messages over 100 keys, with failures
/// injected (every seventh handler call throws; one message of every tenth key fails for good until released), and
/// every key must be handled one at a time in send order, its dead-lettered message holding its followers until
/// retried. Order is checked from the table the handlers write in their transactions.
/// </summary>
public sealed class OrderingKeyTests(ITestOutputHelper output)
{
    const int Keys = 100;
    const int PerKey = 100;
    const int HeldSequence = 40;
    const int SendTransactionSize = 1_000;
    static readonly TimeSpan ProgressTimeout = TimeSpan.FromSeconds(180);
    static readonly TimeSpan ExitTimeout = TimeSpan.FromSeconds(30);

    static string Key(int k) => "customer-" + k.ToString("D3", CultureInfo.InvariantCulture);

    static bool IsHeld(int k) => k % 10 == 0;

    [Fact]
    public async Task Two_processes_handle_keyed_messages_in_send_order_and_a_dead_lettered_key_releases_in_order_on_retry()
    {
        ThreadPool.GetMinThreads(out var minWorkers, out var minIo);
        ThreadPool.SetMinThreads(Math.Max(minWorkers, 16), minIo);
        var folder = Path.Combine(Path.GetTempPath(), "converge-ordering-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        var databasePath = Path.Combine(folder, "ordered.db");
        var log = new WorkerLog();
        var workers = new List<WorkerProcess>();
        try
        {
            var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
            builder.Services.AddConverge(o => OrderedScenario.Configure(o, databasePath, runConsumers: false));
            using var host = builder.Build();
            await host.StartAsync();
            var store = (SqliteMessageStore)host.Services.GetRequiredService<IMessageStore>();
            var bus = host.Services.GetRequiredService<IMessageBus>();
            using var db = store.OpenConnection();
            Execute(db, OrderedScenario.CreateTables);
            var heldKeys = Enumerable.Range(0, Keys).Where(IsHeld).Select(Key).ToList();
            foreach (var key in heldKeys)
            {
                Execute(db, $"INSERT INTO {OrderedScenario.HoldTable} (item_key, sequence) VALUES ('{key}', {HeldSequence})");
            }

            // Interleaved: each transaction carries messages of every key, as many senders' traffic would.
            var clock = Stopwatch.StartNew();
            var sent = 0;
            while (sent < Keys * PerKey)
            {
                using var transaction = db.BeginTransaction();
                for (var i = 0; i < SendTransactionSize; i++, sent++)
                {
                    var (seq, k) = (1 + (sent / Keys), sent % Keys);
                    await bus.SendAsync(new OrderedMessage(Key(k), seq), transaction, new SendOptions { OrderingKey = Key(k) });
                }

                transaction.Commit();
            }

            output.WriteLine($"{clock.Elapsed.TotalSeconds,6:F2}s sent {sent} keyed messages over {Keys} keys");
            workers.Add(WorkerProcess.Start(WorkerProcess.WorkerPath, [databasePath, "ordered"], 1, log));
            workers.Add(WorkerProcess.Start(WorkerProcess.WorkerPath, [databasePath, "ordered"], 2, log));

            // Every free key finishes; each held key stops at its dead letter, with the rest of the key waiting.
            var handledBeforeRelease = ((Keys - heldKeys.Count) * PerKey) + (heldKeys.Count * (HeldSequence - 1));
            await WaitAsync(() => Count(db, "SELECT count(*) FROM conformance_ordered") >= handledBeforeRelease && Count(db, $"SELECT count(*) FROM converge_dead_letters") == heldKeys.Count, "the free keys to finish and the held keys to stop", workers, log);
            var status = await store.GetStatusAsync(CancellationToken.None);
            Assert.Equal(handledBeforeRelease, Count(db, "SELECT count(*) FROM conformance_ordered"));
            output.WriteLine($"{clock.Elapsed.TotalSeconds,6:F2}s {handledBeforeRelease} handled, {status.HeldKeys.Count} keys held: {string.Join(", ", status.HeldKeys.Take(3).Select(h => $"{h.Key} ({h.DeadLetters} dead letter, {h.Waiting} waiting)"))}...");
            Assert.Equal(heldKeys, status.HeldKeys.Select(h => h.Key));
            Assert.All(status.HeldKeys, h => Assert.Equal((OrderedScenario.Queue, 1L, (long)(PerKey - HeldSequence)), (h.Queue, h.DeadLetters, h.Waiting)));
            Assert.Equal(PerKey - HeldSequence, Count(db, $"SELECT count(*) FROM converge_queue WHERE ordering_key = '{heldKeys[0]}'"));

            // Released and retried as 'dead-letters retry --all' does (oldest first): each goes back ahead of its key.
            foreach (var key in heldKeys)
            {
                Execute(db, $"INSERT INTO {OrderedScenario.ReleasedTable} (item_key) VALUES ('{key}')");
            }

            foreach (var letter in (await store.ListDeadLettersAsync(OrderedScenario.Queue, int.MaxValue, CancellationToken.None)).Reverse())
            {
                Assert.True(await store.RetryDeadLetterAsync(letter.Id, CancellationToken.None));
            }

            await WaitAsync(() => Count(db, "SELECT count(*) FROM conformance_ordered") == Keys * PerKey && Count(db, $"SELECT count(*) FROM converge_queue") == 0, "every message to be handled", workers, log);
            var elapsed = clock.Elapsed;
            foreach (var worker in workers)
            {
                Assert.Equal(0, await worker.StopAsync(ExitTimeout));
            }

            var rows = await OrderedEffects.ReadAsync(db);
            var expected = Enumerable.Range(0, Keys).ToDictionary(Key, _ => PerKey, StringComparer.Ordinal);
            var violations = OrderedEffects.Violations(rows, expected);
            var injected = log.Count(OrderedScenario.InjectedLine);
            var injectedPerWorker = workers.Select(w => log.Count($"[worker {w.Number}] {OrderedScenario.InjectedLine}")).ToList();
            output.WriteLine($"{elapsed.TotalSeconds,6:F2}s done: {rows.Count} handled rows, {rows.Select(r => r.Key).Distinct().Count()} keys, {heldKeys.Count} keys held and released, {violations.Count} order violations; inbox {(await store.GetStatusAsync(CancellationToken.None)).InboxRecords}; injected failures {injected} (per worker: {string.Join(", ", injectedPerWorker)})");
            Assert.All(injectedPerWorker, n => Assert.True(n > 0, "Both worker processes must have handled messages."));
            Assert.Equal(Keys * PerKey, rows.Count);
            Assert.Empty(violations);
            Assert.Equal(0, (await store.GetStatusAsync(CancellationToken.None)).DeadLetters);

            // The checker reads the same table and sees a planted fault: two messages of a key swapped.
            Execute(db, $"UPDATE conformance_ordered SET handled = CASE handled WHEN 5 THEN 6 ELSE 5 END WHERE item_key = '{Key(7)}' AND handled IN (5, 6)");
            var planted = OrderedEffects.Violations(await OrderedEffects.ReadAsync(db), expected);
            Assert.Equal([$"{Key(7)}: sequence 5 was handled after sequence 6."], planted);
            await host.StopAsync();
        }
        finally
        {
            foreach (var worker in workers)
            {
                worker.Dispose();
            }

            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (IOException exception)
            {
                output.WriteLine($"Could not delete {folder}: {exception.Message}");
            }
        }
    }

    static async Task WaitAsync(Func<bool> condition, string what, List<WorkerProcess> workers, WorkerLog log)
    {
        var waited = Stopwatch.StartNew();
        while (!condition())
        {
            if (workers.FirstOrDefault(w => w.HasExited) is { } exited)
            {
                Assert.Fail($"Worker {exited.Number} exited on its own (exit code {exited.ExitCode}) while waiting for {what}.\n{log.Tail()}");
            }

            if (waited.Elapsed > ProgressTimeout)
            {
                Assert.Fail($"Waited {ProgressTimeout.TotalSeconds} s for {what}.\n{log.Tail()}");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(50));
        }
    }

    static long Count(SqliteConnection db, string sql)
    {
        using var command = db.CreateCommand();
        command.CommandText = sql;
        return Convert.ToInt64(command.ExecuteScalar(), CultureInfo.InvariantCulture);
    }

    static void Execute(SqliteConnection db, string sql)
    {
        using var command = db.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
