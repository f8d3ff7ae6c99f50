using System.Data.Common;
using System.Text;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Storage;
using Converge.Transports;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// A store on the application's ADO.NET database (<see cref="IDatabaseStore"/>, <see cref="IDatabaseTransaction"/>), an
/// optional contract: the outbox in the caller's own <see cref="DbTransaction"/> and read connections; and the facts
/// that only make sense on a database, because they spoil rows with the test's own SQL: rows Converge never wrote are
/// dead-lettered as invalid-row (jobs among them, so these facts also need job storage) and rows no consumer reaches
/// are reported as stranded. A store on a database derives one class with its <see cref="DatabaseConformanceStore"/>;
/// a store without a database (the in-memory store) does not.
/// </summary>
public abstract class DatabaseConformanceTests : StoreConformanceBase
{
    readonly DatabaseConformanceStore _database;

    /// <summary>Runs the suite on <paramref name="store"/>.</summary>
    /// <param name="store">The store under test, on a database the suite reaches with its own SQL; the suite disposes it.</param>
    protected DatabaseConformanceTests(DatabaseConformanceStore store)
        : base(store)
    {
        _database = store;
    }

    /// <summary>The store's queue table, as <see cref="DatabaseConformanceStore.QueueTable"/> names it.</summary>
    protected string QueueTable => _database.QueueTable;

    /// <summary>The damage the fuzz fact inflicts on queue rows (<see cref="DatabaseConformanceStore.RowDamages"/>).</summary>
    protected IReadOnlyList<DatabaseConformanceStore.RowDamage> RowDamages => _database.RowDamages;

    /// <summary>Visible-at values no consumer will reach (<see cref="DatabaseConformanceStore.StrandedVisibleAts"/>).</summary>
    protected IReadOnlyList<object> StrandedVisibleAts => _database.StrandedVisibleAts;

    /// <summary>Opens a connection to the database of <paramref name="store"/> for the test's own SQL.</summary>
    protected Task<DbConnection> OpenConnectionAsync(IMessageStore store) => _database.OpenConnectionAsync(store);

    /// <summary>A message sent in the caller's transaction exists only if that transaction commits.</summary>
    [Fact]
    public async Task Outbox_send_commits_and_rolls_back_with_the_callers_transaction()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        await using var connection = await OpenConnectionAsync(host.Store);

        await using (var rolledBack = await connection.BeginTransactionAsync())
        {
            await host.Bus.SendAsync(new ConformanceCommand("rolled-back"), rolledBack);
            await rolledBack.RollbackAsync();
        }

        await using (var committed = await connection.BeginTransactionAsync())
        {
            await host.Bus.SendAsync(new ConformanceCommand("committed"), committed);
            await committed.CommitAsync();
        }

        var status = await StatusAsync(host);
        Assert.Equal(1, Assert.Single(status.Queues).Ready);
    }

    /// <summary>
    /// Rows written into the queue table by something other than Converge, each spoiled in one to three ways its
    /// columns allow, between valid ones: every spoiled row is dead-lettered as invalid-row with its decode errors and
    /// raw values, every valid one is handled, nothing stays on the queue, and a message sent afterwards is handled
    /// within a second.
    /// </summary>
    [Fact]
    public async Task Rows_that_cannot_be_decoded_are_dead_lettered_as_invalid_and_the_queue_goes_on()
    {
        const int spoiled = 10_000;
        const int validEvery = 10;
        var random = new Random(20261204);
        var damages = RowDamages;
        var damagedColumns = new Dictionary<long, HashSet<string>>();
        var valid = 0;
        await using (var seeding = await StartAsync("fuzz", o => o.RunConsumers = false))
        {
            var total = spoiled + (spoiled / (validEvery - 1)) + 1;
            await using (var transaction = await seeding.Store.BeginAsync(CancellationToken.None))
            {
                for (var i = 0; i < total; i++)
                {
                    await transaction.EnqueueAsync(new OutgoingMessage(Queue, RawEnvelope("conformance.command@1", Encoding.UTF8.GetBytes($"{{\"key\":\"fuzz-{i}\"}}"))), CancellationToken.None);
                }

                await transaction.CommitAsync(CancellationToken.None);
            }

            await using var connection = await OpenConnectionAsync(seeding.Store);
            var ids = new List<long>();
            await using (var select = connection.CreateCommand())
            {
                select.CommandText = $"SELECT id FROM {QueueTable} ORDER BY id";
                await using var reader = await select.ExecuteReaderAsync();
                while (await reader.ReadAsync())
                {
                    ids.Add(reader.GetInt64(0));
                }
            }

            await using var spoil = await connection.BeginTransactionAsync();
            foreach (var id in ids)
            {
                if (damagedColumns.Count == spoiled || (id % validEvery == 0 && valid * (validEvery - 1) < spoiled))
                {
                    valid++;
                    continue;
                }

                var columns = damagedColumns[id] = new HashSet<string>(StringComparer.Ordinal);
                for (var n = random.Next(1, 4); n > 0; n--)
                {
                    var damage = damages[random.Next(damages.Count)];
                    columns.Add(damage.Column);
                    await using var update = connection.CreateCommand();
                    update.Transaction = spoil;
                    update.CommandText = $"UPDATE {QueueTable} SET {damage.Column} = @value WHERE id = @id";
                    AddParameter(update, "@value", damage.Value(random));
                    AddParameter(update, "@id", id);
                    await update.ExecuteNonQueryAsync();
                }
            }

            await spoil.CommitAsync();
        }

        Assert.Equal(spoiled, damagedColumns.Count);
        await using var host = await StartAsync("fuzz");
        // Done when every valid row's effect is committed and the status shows the queue empty with every spoiled row
        // dead-lettered. Both are awaited: through RabbitMQ the status counts the broker's ready messages and this
        // process's deliveries, and a delivery on its way between the two can leave it empty for a moment while the last
        // valid messages are still being handled.
        await WaitForAsync(
            async () => await CountEffectsAsync(host) == valid
                && (await StatusAsync(host)).Queues.Single(q => q.Queue == Queue) is { Ready: 0, Scheduled: 0, InFlight: 0 } queue && queue.DeadLetters == spoiled,
            TimeSpan.FromMinutes(2));

        var letters = await host.Store.Queries().ListDeadLettersAsync(Queue, spoiled + 100, CancellationToken.None);
        Assert.Equal(spoiled, letters.Count);
        Assert.All(letters, letter => Assert.Equal(DeadLetterReasons.InvalidRow, letter.Reason));
        Assert.All(letters, letter => Assert.Contains("cannot be decoded", letter.Exception, StringComparison.Ordinal));
        Assert.Equal(valid, await CountEffectsAsync(host));

        // Each dead letter names, and keeps raw, a column the test spoiled (a spoiled column whose value still decodes
        // beside a broken one is not named, so the check is one-way).
        var rawColumns = letters.Select(letter => letter.Envelope.Headers.Keys
            .Where(key => key.StartsWith("converge-raw-", StringComparison.Ordinal))
            .Select(key => key["converge-raw-".Length..])
            .ToHashSet(StringComparer.Ordinal)).ToList();
        Assert.All(rawColumns, columns => Assert.NotEmpty(columns));
        Assert.All(rawColumns, columns => Assert.Subset(damages.Select(d => d.Column).ToHashSet(StringComparer.Ordinal), columns));
        Assert.Equal(damages.Select(d => d.Column).Distinct().Order(), rawColumns.SelectMany(c => c).Distinct().Order());

        // The queue is not stuck behind them: a message sent now is handled within a second.
        var history = await host.SendAndWaitAsync(new ConformanceCommand("after-the-fuzz"), timeout: TimeSpan.FromSeconds(1));
        Assert.Contains(history, h => h.What == "completed");
        Assert.Equal(1, await CountEffectsAsync(host, "after-the-fuzz"));
    }

    /// <summary>
    /// A row whose visible-at time no consumer will reach (written by something other than Converge) is counted as
    /// stranded in the status, not as scheduled, and does not hold up the queue.
    /// </summary>
    [Fact]
    public async Task Rows_no_consumer_will_reach_are_reported_as_stranded()
    {
        var absurd = StrandedVisibleAts;
        await using (var seeding = await StartAsync("stranded", o => o.RunConsumers = false))
        {
            await using (var transaction = await seeding.Store.BeginAsync(CancellationToken.None))
            {
                for (var i = 0; i < absurd.Count + 1; i++)
                {
                    await transaction.EnqueueAsync(new OutgoingMessage(Queue, RawEnvelope("conformance.command@1", Encoding.UTF8.GetBytes($"{{\"key\":\"stranded-{i}\"}}")), DueAt: seeding.Options.TimeProvider.GetUtcNow().AddDays(1)), CancellationToken.None);
                }

                await transaction.CommitAsync(CancellationToken.None);
            }

            await using var connection = await OpenConnectionAsync(seeding.Store);
            for (var i = 0; i < absurd.Count; i++)
            {
                await using var update = connection.CreateCommand();
                update.CommandText = $"UPDATE {QueueTable} SET visible_at = @value WHERE id = (SELECT min(id) + {i} FROM {QueueTable})";
                AddParameter(update, "@value", absurd[i]);
                await update.ExecuteNonQueryAsync();
            }
        }

        await using var host = await StartAsync("stranded");
        var queue = (await StatusAsync(host)).Queues.Single(q => q.Queue == Queue);
        Assert.Equal((0L, 1L, 0L, (long)absurd.Count), (queue.Ready, queue.Scheduled, queue.InFlight, queue.Stranded));

        var history = await host.SendAndWaitAsync(new ConformanceCommand("beside-the-stranded"), timeout: TimeSpan.FromSeconds(5));
        Assert.Contains(history, h => h.What == "completed");
        Assert.Equal(absurd.Count, (await StatusAsync(host)).Queues.Single(q => q.Queue == Queue).Stranded);

        // A queue that holds nothing but a time beyond .NET's last tick waits until the end of time; it does not fail.
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            await transaction.EnqueueAsync(new OutgoingMessage("far", RawEnvelope("conformance.command@1", "{}"u8.ToArray()), DueAt: host.Options.TimeProvider.GetUtcNow().AddDays(1)), CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        await using (var connection = await OpenConnectionAsync(host.Store))
        {
            await using var update = connection.CreateCommand();
            update.CommandText = $"UPDATE {QueueTable} SET visible_at = @value WHERE queue = 'far'";
            AddParameter(update, "@value", long.MaxValue);
            Assert.Equal(1, await update.ExecuteNonQueryAsync());
        }

        // Asked of the store itself: a queue a transport carries has no next-visible time (the transport moves its delayed messages).
        var store = host.Store is TransportedStore transported ? transported.Store : host.Store;
        Assert.Equal(DateTimeOffset.MaxValue, await store.NextVisibleAtAsync("far", CancellationToken.None));
    }

    /// <summary>
    /// A job whose row cannot be decoded leaves the queue at its claim, dead-lettered as invalid-row beside the claim's
    /// good rows, and counts as failed in its batch (read from its headers), which finishes and enqueues its callback.
    /// </summary>
    [Fact]
    public async Task Job_row_that_cannot_be_decoded_is_dead_lettered_at_its_claim_and_counted_failed_in_its_batch()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        var batch = NewBatch("spoiled", time.GetUtcNow());
        await CreateSealedBatchOfOneAsync(store, batch);
        var before = await host.Bus.SendAsync(new ConformanceCommand("before"));
        var job = await host.Bus.SendAsync(new ConformanceCommand("spoiled"), new SendOptions { Headers = InBatch(batch.Id) });
        var after = await host.Bus.SendAsync(new ConformanceCommand("after"));
        await using (var connection = await OpenConnectionAsync(store))
        {
            await using var spoil = connection.CreateCommand();
            spoil.CommandText = $"UPDATE {QueueTable} SET sent_at = -5, history = '[null]' WHERE id = (SELECT min(id) + 1 FROM {QueueTable})";
            Assert.Equal(1, await spoil.ExecuteNonQueryAsync());
        }

        var claimed = await ClaimJobsAsync(store, 10, TimeSpan.FromMinutes(5));

        Assert.Equal([before, after], claimed.Select(m => m.Envelope.MessageId));
        var letter = Assert.Single(await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Equal((job, DeadLetterReasons.InvalidRow, 1), (letter.Envelope.MessageId, letter.Reason, letter.Attempts));
        Assert.Equal(("-5", "[null]", batch.Id), (letter.Envelope.Headers["converge-raw-sent_at"], letter.Envelope.Headers["converge-raw-history"], letter.Envelope.Headers[JobHeaders.Batch]));
        Assert.Contains("sent_at: ArgumentOutOfRangeException", letter.Exception, StringComparison.Ordinal);
        Assert.Contains("history: JsonException", letter.Exception, StringComparison.Ordinal);
        await AssertFinishedWithOneFailureAndCalledBackAsync(store, batch);
    }

    /// <summary>
    /// A waiting job whose row cannot be decoded is still listed and looked up (with what could be read), and
    /// cancelling it leaves a dead letter that reads back, rather than fail every job listing.
    /// </summary>
    [Fact]
    public async Task Job_row_that_cannot_be_decoded_is_listed_looked_up_and_cancelled()
    {
        var time = new FakeTimeProvider();
        await using var host = await StartIdleAsync(time);
        var store = host.Store;
        await StartJobQueueAsync(store);
        var job = await host.Bus.SendAsync(new ConformanceCommand("waiting"), new SendOptions { Delay = TimeSpan.FromMinutes(10) });
        await using (var connection = await OpenConnectionAsync(store))
        {
            await using var spoil = connection.CreateCommand();
            spoil.CommandText = $"UPDATE {QueueTable} SET as_of = -7, history = '[null]', headers = '{{\"a\":1}}'";
            Assert.Equal(1, await spoil.ExecuteNonQueryAsync());
        }

        var listed = Assert.Single(await store.JobQueries().ListJobsAsync(new JobQuery { Queue = Queue }, CancellationToken.None));
        var found = await store.JobQueries().GetJobAsync(job, CancellationToken.None);
        var outcome = await store.Jobs().CancelJobAsync(job, CancellationToken.None);

        Assert.Equal((job, JobState.Scheduled), (listed.Id, listed.State));
        Assert.Equal(("-7", "[null]", "{\"a\":1}"), (listed.Headers["converge-raw-as_of"], listed.Headers["converge-raw-history"], listed.Headers["converge-raw-headers"]));
        Assert.Equal(job, found!.Id);
        Assert.Equal(JobCancelOutcome.Cancelled, outcome);
        var letter = Assert.Single(await store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None));
        Assert.Equal((job, DeadLetterReasons.Cancelled), (letter.Envelope.MessageId, letter.Reason));
        Assert.Equal("-7", letter.Envelope.Headers["converge-raw-as_of"]);
    }

    /// <summary>A read connection sees what handlers committed and refuses writes.</summary>
    [Fact]
    public async Task Read_connection_sees_committed_effects_and_refuses_writes()
    {
        await using var host = await StartAsync();
        await host.SendAndWaitAsync(new ConformanceCommand("read-back"));

        await using var connection = await host.Store.Database().OpenReadConnectionAsync(CancellationToken.None);
        var count = await Effects.CountAsync(connection, "read-back");

        Assert.Equal(1, count);
        await Assert.ThrowsAnyAsync<DbException>(async () =>
        {
            await using var transaction = await connection.BeginTransactionAsync();
            await Effects.WriteAsync(transaction, Guid.NewGuid(), Queue, "sneaked-in", CancellationToken.None);
            await transaction.CommitAsync();
        });
        Assert.Equal(1, await CountEffectsAsync(host));
    }

    /// <summary>
    /// Statements written for their effect alone (<see cref="IDatabaseTransaction.WriteAsync"/>) run in the order made,
    /// before the transaction's next statement sees the table; a rollback to a savepoint undoes those written since it;
    /// one that fails raises its error by the release of the savepoint it was written under, or by
    /// <see cref="IDatabaseTransaction.FlushWritesAsync"/>, at the latest.
    /// </summary>
    [Fact]
    public async Task Writes_run_in_order_go_with_their_savepoint_and_fail_by_the_flush_at_the_latest()
    {
        await using var host = await StartAsync(configure: o => o.RunConsumers = false);
        const string insert = "INSERT INTO conformance_effects (message_id, consumer, item_key) VALUES (@id, @consumer, @key)";
        const string breaks = "INSERT INTO conformance_effects (message_id) VALUES (@id)";
        var id = Guid.NewGuid().ToString("N");
        KeyValuePair<string, object?>[] Row(string key) => [new("@id", id), new("@consumer", "writes"), new("@key", key)];

        int seen;
        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            var database = transaction.Database();
            await database.WriteAsync(insert, Row("first"), CancellationToken.None);
            seen = await database.ExecuteAsync("UPDATE conformance_effects SET item_key = 'first-seen' WHERE consumer = 'writes' AND item_key = 'first'", [], CancellationToken.None);
            await transaction.SavepointBeforeNextAsync(CancellationToken.None);
            await database.WriteAsync(insert, Row("undone"), CancellationToken.None);
            await transaction.RollbackToSavepointAsync(CancellationToken.None);
            await transaction.SavepointBeforeNextAsync(CancellationToken.None);
            await database.WriteAsync(insert, Row("kept"), CancellationToken.None);
            await transaction.ReleaseSavepointAsync(CancellationToken.None);

            // A write that fails under a savepoint fails by the savepoint's release; rolled back to it, the transaction goes on.
            await transaction.SavepointBeforeNextAsync(CancellationToken.None);
            await database.WriteAsync(insert, Row("before-the-failed"), CancellationToken.None);
            await Assert.ThrowsAnyAsync<DbException>(async () =>
            {
                await database.WriteAsync(breaks, [new("@id", id)], CancellationToken.None);
                await transaction.ReleaseSavepointAsync(CancellationToken.None);
            });
            await transaction.RollbackToSavepointAsync(CancellationToken.None);
            await database.WriteAsync(insert, Row("last"), CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        await using (var transaction = await host.Store.BeginAsync(CancellationToken.None))
        {
            var database = transaction.Database();
            await database.WriteAsync(insert, Row("with-the-failed"), CancellationToken.None);
            await Assert.ThrowsAnyAsync<DbException>(async () =>
            {
                await database.WriteAsync(breaks, [new("@id", id)], CancellationToken.None);
                await database.FlushWritesAsync(CancellationToken.None);
            });
        }

        await using var connection = await OpenConnectionAsync(host.Store);
        await using var read = connection.CreateCommand();
        read.CommandText = "SELECT item_key FROM conformance_effects WHERE consumer = 'writes' ORDER BY item_key";
        var keys = new List<string>();
        await using (var reader = await read.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                keys.Add(reader.GetString(0));
            }
        }

        Assert.Equal(1, seen);
        Assert.Equal(["first-seen", "kept", "last"], keys);
    }

    /// <summary>
    /// A statement a handler records (<see cref="MessageContext.Execute"/>) commits with its message and only then; one
    /// that fails (a constraint) fails its own message, as the handler throwing would, and the other messages of its
    /// batch commit their statements once, whatever the queue's isolation.
    /// </summary>
    [Theory]
    [InlineData(BatchIsolation.PerMessage)]
    [InlineData(BatchIsolation.OnFailure)]
    public async Task A_recorded_statement_that_fails_fails_only_its_message(BatchIsolation isolation)
    {
        await using var host = await StartAsync(configure: o =>
        {
            o.Messages.Register<RecordedCommand>("conformance.recorded-command");
            o.Handle<RecordedCommand, RecordedCommandHandler>("recorded");
            o.Queue("recorded", q => q.Isolation = isolation);
        });
        var keys = Enumerable.Range(0, 6).Select(i => $"recorded-{isolation}-{i}").ToList();
        await using (var connection = await OpenConnectionAsync(host.Store))
        await using (var transaction = await connection.BeginTransactionAsync())
        {
            // One transaction, so the consumer finds them together: one batch as a rule.
            foreach (var key in keys)
            {
                await host.Bus.SendAsync(new RecordedCommand(key, Breaks: key.EndsWith("-3", StringComparison.Ordinal)), transaction);
            }

            await transaction.CommitAsync();
        }

        IReadOnlyList<DeadLetter> letters = [];
        long effects = 0;
        await Eventually.UntilAsync(
            async () =>
            {
                letters = await host.Store.Queries().ListDeadLettersAsync("recorded", 10, CancellationToken.None);
                effects = 0;
                foreach (var key in keys)
                {
                    effects += await CountEffectsAsync(host, key);
                }

                return letters.Count > 0 && effects >= keys.Count - 1 && (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.All(q => q.Queue != "recorded" || q.Ready + q.InFlight + q.Scheduled == 0);
            },
            () => $"the batch to be handled: {letters.Count} dead letters, {effects} effects");

        var letter = Assert.Single(letters);
        Assert.Equal((DeadLetterReasons.PermanentFailure, 1), (letter.Reason, letter.Attempts));
        foreach (var key in keys)
        {
            Assert.Equal(key.EndsWith("-3", StringComparison.Ordinal) ? 0 : 1, await CountEffectsAsync(host, key));
        }
    }

    static void AddParameter(DbCommand command, string name, object value)
    {
        var parameter = command.CreateParameter();
        parameter.ParameterName = name;
        parameter.Value = value;
        command.Parameters.Add(parameter);
    }
}
