using System.Diagnostics;
using Converge.Contracts;
using Converge.Diagnostics;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Sqlite.Tests;

public sealed record Probe(string Key);

/// <summary>Lets a test see inside a running handler.</summary>
public sealed class ProbeSignals
{
    public TaskCompletionSource<string?> Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public bool BlockUntilCancelled { get; set; }
}

public sealed class ProbeHandler(ProbeSignals signals) : IHandler<Probe>
{
    public async Task HandleAsync(Probe message, MessageContext context, CancellationToken cancellationToken)
    {
        signals.Started.TrySetResult(Activity.Current?.TraceId.ToString());
        if (signals.BlockUntilCancelled)
        {
            await Task.Delay(Timeout.InfiniteTimeSpan, cancellationToken);
        }
    }
}

public sealed class SqliteStoreTests : IDisposable
{
    readonly string _folder = Directory.CreateTempSubdirectory("converge-sqlite-").FullName;

    string DbPath(string name = "store") => Path.Combine(_folder, name + ".db");

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    Task<ConvergeTestHost> StartAsync(ProbeSignals signals, Action<ConvergeOptions>? configure = null, string name = "store") =>
        ConvergeTestHost.StartAsync(
            o =>
            {
                o.UseSqlite(DbPath(name));
                o.Messages.Register<Probe>("test.probe");
                o.Handle<Probe, ProbeHandler>("probes");
                configure?.Invoke(o);
            },
            services => services.AddSingleton(signals));

    [Fact]
    public async Task The_file_is_in_WAL_mode_and_commits_with_synchronous_FULL_by_default()
    {
        await using var store = new SqliteMessageStore(new SqliteStoreOptions { Path = DbPath() }, TimeProvider.System);
        await store.MigrateAsync(CancellationToken.None);
        await using var connection = store.OpenConnection();
        await using var command = connection.CreateCommand();

        command.CommandText = "PRAGMA journal_mode";
        Assert.Equal("wal", command.ExecuteScalar());
        command.CommandText = "PRAGMA synchronous";
        Assert.Equal(2L, command.ExecuteScalar());
    }

    [Fact]
    public async Task Application_statements_are_prepared_once_per_text_and_no_more_than_the_bound_stay_prepared()
    {
        await using var store = new SqliteMessageStore(new SqliteStoreOptions { Path = DbPath() }, TimeProvider.System);
        await store.MigrateAsync(CancellationToken.None);
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        var database = (IDatabaseTransaction)transaction;
        var connection = (SqliteConnection)database.Transaction.Connection!;
        await database.ExecuteAsync("CREATE TABLE totals (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)", [], CancellationToken.None);
        var before = PreparedStatementBytes(connection);

        // The same text built anew for every call, as an interpolated string is.
        for (var i = 0; i < 500; i++)
        {
            await database.ExecuteAsync(string.Concat("INSERT INTO totals (k, v) VALUES (@k, ", "@v)"), [new("@k", i), new("@v", i)], CancellationToken.None);
        }

        var afterOneText = PreparedStatementBytes(connection);

        // A text for every call, values written into it.
        for (var i = 0; i < 2_000; i++)
        {
            await database.ExecuteAsync($"UPDATE totals SET v = v + 1 WHERE k = {i % 500}", [], CancellationToken.None);
        }

        var afterManyTexts = PreparedStatementBytes(connection);
        await transaction.CommitAsync(CancellationToken.None);

        // One statement's memory for 500 calls; for 2,000 texts, at most the bound's worth (without it, 2,000 statements'),
        // with room for the UPDATE being larger than the INSERT.
        var oneStatement = afterOneText - before;
        Assert.InRange(oneStatement, 1, 64 * 1024);
        Assert.InRange(afterManyTexts - afterOneText, 0, 3 * CommandCache.ApplicationStatements * oneStatement);
    }

    /// <summary>The memory SQLite holds for the statements prepared on <paramref name="connection"/>.</summary>
    static int PreparedStatementBytes(SqliteConnection connection)
    {
        Assert.Equal(0, SQLitePCL.raw.sqlite3_db_status(connection.Handle, SQLitePCL.raw.SQLITE_DBSTATUS_STMT_USED, out var current, out _, 0));
        return current;
    }

    [Fact]
    public async Task Expired_unique_keys_are_purged_by_the_job_store_not_by_the_inbox_clean_up()
    {
        var time = new FakeTimeProvider();
        await using var store = new SqliteMessageStore(new SqliteStoreOptions { Path = DbPath() }, time);
        await store.MigrateAsync(CancellationToken.None);
        await using (var transaction = await store.BeginAsync(CancellationToken.None))
        {
            await transaction.Jobs().TryReserveUniqueKeyAsync("short", Guid.NewGuid(), time.GetUtcNow() + TimeSpan.FromMinutes(1), CancellationToken.None);
            await transaction.Jobs().TryReserveUniqueKeyAsync("long", Guid.NewGuid(), time.GetUtcNow() + TimeSpan.FromHours(1), CancellationToken.None);
            await transaction.CommitAsync();
        }

        time.Advance(TimeSpan.FromMinutes(2));
        await using var connection = store.OpenConnection();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT group_concat(key) FROM (SELECT key FROM converge_unique_keys ORDER BY key)";
        await store.PurgeInboxAsync(time.GetUtcNow() - TimeSpan.FromDays(7), CancellationToken.None);
        var afterInbox = command.ExecuteScalar();
        var purged = await store.PurgeExpiredUniqueKeysAsync(CancellationToken.None);

        Assert.Equal(("long,short", 1, "long"), (afterInbox, purged, command.ExecuteScalar()));
    }

    [Fact]
    public async Task Normal_durability_sets_synchronous_NORMAL()
    {
        await using var store = new SqliteMessageStore(new SqliteStoreOptions { Path = DbPath(), Durability = SqliteDurability.Normal }, TimeProvider.System);
        await using var connection = store.OpenConnection();
        await using var command = connection.CreateCommand();

        command.CommandText = "PRAGMA synchronous";
        Assert.Equal(1L, command.ExecuteScalar());
    }

    /// <summary>A write to a file that was never migrated says to start the host, rather than SQLite's "no such table".</summary>
    [Fact]
    public async Task A_write_before_the_store_is_migrated_says_to_start_the_host()
    {
        var path = DbPath();
        await using var store = new SqliteMessageStore(new SqliteStoreOptions { Path = path }, TimeProvider.System);

        var refused = await Assert.ThrowsAsync<InvalidOperationException>(async () => await store.BeginAsync(CancellationToken.None));

        Assert.Contains("has no Converge tables yet. Start the host first", refused.Message, StringComparison.Ordinal);
        await store.MigrateAsync(CancellationToken.None);
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
    }

    /// <summary>
    /// A store made before saga instances had their failed step, stuck reason, last error, timeout and queue columns
    /// upgrades in place: the columns are added and old instances read back with them empty.
    /// </summary>
    [Fact]
    public async Task A_store_from_before_the_saga_columns_upgrades_and_keeps_its_instances()
    {
        var path = DbPath();
        await using (var old = new SqliteMessageStore(new SqliteStoreOptions { Path = path }, TimeProvider.System))
        {
            await old.MigrateAsync(CancellationToken.None);
            await using var connection = old.OpenConnection();
            await using var command = connection.CreateCommand();
            command.CommandText = """
                DELETE FROM converge_schema_migrations WHERE version >= 4;
                DROP TABLE converge_operator_log;
                DROP INDEX converge_sagas_newest;
                DROP INDEX converge_sagas_state_newest;
                DROP INDEX converge_sagas_definition_newest;
                DROP INDEX converge_sagas_definition_state_newest;
                DROP INDEX converge_sagas_definition_version_newest;
                DROP INDEX converge_sagas_definition_version_state_newest;
                DROP INDEX converge_dead_letters_newest;
                DROP INDEX converge_dead_letters_source_newest;
                DROP INDEX converge_dead_letters_reason_newest;
                DROP INDEX converge_dead_letters_reason_source_newest;
                DROP INDEX converge_dead_letters_key_newest;
                DROP INDEX converge_inbox_consumer_newest;
                DROP INDEX converge_inbox_batch_newest;
                CREATE INDEX converge_sagas_state ON converge_sagas (state, started_at);
                CREATE INDEX converge_sagas_definition ON converge_sagas (definition, version, started_at);
                CREATE INDEX converge_dead_letters_source ON converge_dead_letters (source);
                DROP TABLE converge_projections;
                ALTER TABLE converge_consumer_groups DROP COLUMN paused;
                DROP INDEX converge_queue_ordering;
                DROP INDEX converge_dead_letters_ordering;
                ALTER TABLE converge_queue DROP COLUMN ordering_key;
                ALTER TABLE converge_queue DROP COLUMN ordering_seq;
                ALTER TABLE converge_dead_letters DROP COLUMN ordering_key;
                ALTER TABLE converge_dead_letters DROP COLUMN ordering_seq;
                ALTER TABLE converge_sagas DROP COLUMN failed_step;
                ALTER TABLE converge_sagas DROP COLUMN last_error;
                ALTER TABLE converge_sagas DROP COLUMN stuck_reason;
                ALTER TABLE converge_sagas DROP COLUMN timeout_id;
                ALTER TABLE converge_sagas DROP COLUMN timeout_at;
                ALTER TABLE converge_sagas DROP COLUMN queue;
                INSERT INTO converge_sagas (transaction_id, definition, version, state, step_index, awaiting, step_attempt, steps, data, failure, concurrency_version, started_at, updated_at)
                VALUES ('tx-old', 'order', 1, 'compensated', -1, NULL, 0, '["reserve","ship"]', X'7B7D', 'ship: refused', 3, 0, 0);
                """;
            command.ExecuteNonQuery();
            Assert.Equal(3, old.GetSchemaVersion());
        }

        SqliteConnection.ClearAllPools();
        await using var upgraded = new SqliteMessageStore(new SqliteStoreOptions { Path = path }, TimeProvider.System);
        await upgraded.MigrateAsync(CancellationToken.None);
        var instance = await upgraded.GetSagaAsync("tx-old", CancellationToken.None);

        Assert.Equal(upgraded.Schema.Versions.Count, upgraded.GetSchemaVersion());
        Assert.NotNull(instance);
        Assert.Equal((SagaState.Compensated, "ship: refused", null as string, null as string, null as Guid?, null as string),
            (instance.State, instance.Failure, instance.FailedStep, instance.StuckReason, instance.TimeoutId, instance.Queue));
    }

    [Fact]
    public async Task Processes_starting_at_once_migrate_the_schema_once()
    {
        // Separate store instances share nothing in memory, like separate processes: only SQLite's lock orders them.
        var stores = Enumerable.Range(0, 6).Select(_ => new SqliteMessageStore(new SqliteStoreOptions { Path = DbPath() }, TimeProvider.System)).ToList();

        await Task.WhenAll(stores.Select(s => Task.Run(async () => await s.MigrateAsync(CancellationToken.None))));

        var latest = stores[0].Schema.Versions.Count;
        Assert.All(stores, s => Assert.Equal(latest, s.GetSchemaVersion()));
        await using var connection = stores[0].OpenConnection();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT count(*) FROM converge_schema_migrations";
        Assert.Equal((long)latest, command.ExecuteScalar());
        foreach (var store in stores)
        {
            await store.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_table_prefix_keeps_two_stores_apart_in_one_file()
    {
        await using var first = new SqliteMessageStore(new SqliteStoreOptions { Path = DbPath(), TablePrefix = "app_one_" }, TimeProvider.System);
        await using var second = new SqliteMessageStore(new SqliteStoreOptions { Path = DbPath(), TablePrefix = "app_two_" }, TimeProvider.System);
        await first.MigrateAsync(CancellationToken.None);
        await second.MigrateAsync(CancellationToken.None);
        await using (var transaction = await first.BeginAsync(CancellationToken.None))
        {
            await transaction.AppendAsync("s", null, [new Contracts.Envelope { MessageId = Guid.NewGuid(), MessageType = "x@1", SentAt = DateTimeOffset.UnixEpoch, Body = "{}"u8.ToArray() }], CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        Assert.Equal(1, (await first.GetStatusAsync(CancellationToken.None)).LogPosition);
        Assert.Equal(0, (await second.GetStatusAsync(CancellationToken.None)).LogPosition);
    }

    [Theory]
    [InlineData("Converge_")]
    [InlineData("x; DROP TABLE y; --")]
    [InlineData("1abc")]
    [InlineData("abc\n")]
    [InlineData("abc\r\n")]
    [InlineData("")]
    public void Invalid_table_prefixes_are_refused_with_the_rule(string prefix)
    {
        var error = Assert.Throws<ArgumentException>(() => new SqliteMessageStore(new SqliteStoreOptions { Path = DbPath(), TablePrefix = prefix }, TimeProvider.System));

        Assert.Contains("lower-case letters", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("sqlite_")]
    [InlineData("sqlite_app_")]
    public void Table_prefixes_sqlite_reserves_are_refused_with_the_fix(string prefix)
    {
        var error = Assert.Throws<ArgumentException>(() => new SqliteMessageStore(new SqliteStoreOptions { Path = DbPath(), TablePrefix = prefix }, TimeProvider.System));

        Assert.Contains($"TablePrefix '{prefix}' is reserved: SQLite keeps table names starting with 'sqlite_'", error.Message, StringComparison.Ordinal);
        Assert.Contains("Choose another prefix (for example 'converge_')", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_prefix_that_only_starts_like_sqlite_is_a_prefix_like_any_other()
    {
        await using var store = new SqliteMessageStore(new SqliteStoreOptions { Path = DbPath(), TablePrefix = "sqlitex_" }, TimeProvider.System);
        await store.MigrateAsync(CancellationToken.None);

        Assert.Equal(store.Schema.Versions.Count, store.GetSchemaVersion());
    }

    [Fact]
    public async Task Enlisting_a_transaction_on_another_file_is_refused_with_both_paths()
    {
        var signals = new ProbeSignals();
        await using var host = await StartAsync(signals, o => o.RunConsumers = false);
        await using var other = new SqliteConnection($"Data Source={DbPath("other")}");
        other.Open();
        await using var transaction = other.BeginTransaction();

        var error = await Assert.ThrowsAsync<ArgumentException>(async () => await host.Bus.SendAsync(new Probe("x"), transaction));

        Assert.Contains("other.db", error.Message, StringComparison.Ordinal);
        Assert.Contains("store.db", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_message_sent_in_the_callers_transaction_wakes_the_consumer_without_polling()
    {
        var signals = new ProbeSignals();
        await using var host = await StartAsync(signals, o => o.PollInterval = TimeSpan.FromMinutes(10));
        var store = (SqliteMessageStore)host.Store;
        await using var connection = store.OpenConnection();

        await using (var transaction = connection.BeginTransaction())
        {
            await host.Bus.SendAsync(new Probe("woken"), transaction);
            await transaction.CommitAsync();
        }

        // With a ten-minute poll interval, only the commit hook can make this finish in time.
        await signals.Started.Task.WaitAsync(TimeSpan.FromSeconds(20));
    }

    [Fact]
    public async Task Several_consumers_of_one_queue_in_one_process_handle_each_message_once()
    {
        var signals = new ProbeSignals();
        await using var host = await StartAsync(signals, o => o.Queue("probes", q => { q.Concurrency = 3; q.BatchSize = 4; }));
        await using (var transaction = await host.Bus.BeginTransactionAsync())
        {
            for (var i = 0; i < 200; i++)
            {
                await host.Bus.SendAsync(new Probe("p" + i), transaction.Transaction);
            }

            await transaction.CommitAsync();
        }

        await WaitForAsync(async () => (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).InboxRecords == 200);
        var status = await host.Store.Queries().GetStatusAsync(CancellationToken.None);
        Assert.Equal((0L, 0L), (status.Queues.Sum(q => q.Ready + q.InFlight), status.DeadLetters));
    }

    [Fact]
    public async Task A_message_sent_by_another_process_is_noticed_within_the_poll_interval()
    {
        var signals = new ProbeSignals();
        await using var consumer = await StartAsync(signals, o => o.PollInterval = TimeSpan.FromMilliseconds(100));
        await using var otherProcess = new SqliteMessageStore(new SqliteStoreOptions { Path = DbPath() }, TimeProvider.System);

        // A separate store instance shares no signals with the consumer, as another process would not.
        await using (var transaction = await otherProcess.BeginAsync(CancellationToken.None))
        {
            await transaction.EnqueueAsync(
                new OutgoingMessage("probes", new Contracts.Envelope { MessageId = Guid.NewGuid(), MessageType = "test.probe@1", SentAt = DateTimeOffset.UnixEpoch, Body = "{\"key\":\"x\"}"u8.ToArray() }),
                CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        await signals.Started.Task.WaitAsync(TimeSpan.FromSeconds(20));
    }

    static async Task WaitForAsync(Func<Task<bool>> condition)
    {
        var deadline = TimeProvider.System.GetTimestamp() + (20 * TimeProvider.System.TimestampFrequency);
        while (!await condition())
        {
            Assert.True(TimeProvider.System.GetTimestamp() < deadline, "The awaited condition did not become true in time.");
            await Task.Delay(TimeSpan.FromMilliseconds(10));
        }
    }

    [Fact]
    public async Task Shutdown_hands_in_flight_messages_back_without_counting_the_attempt()
    {
        var signals = new ProbeSignals { BlockUntilCancelled = true };
        var host = await StartAsync(signals, o => o.LeaseDuration = TimeSpan.FromMinutes(10));
        await host.Bus.SendAsync(new Probe("in-flight"));
        await signals.Started.Task.WaitAsync(TimeSpan.FromSeconds(20));

        using (var expired = new CancellationTokenSource())
        {
            await expired.CancelAsync();
            await host.Services.GetRequiredService<Hosting.ConvergeHost>().StopAsync(expired.Token);
        }

        var status = await host.Store.Queries().GetStatusAsync(CancellationToken.None);
        var queue = Assert.Single(status.Queues);
        Assert.Equal((1L, 0L), (queue.Ready, queue.InFlight));
        var again = Assert.Single(await host.Store.ClaimAsync("probes", 1, TimeSpan.FromSeconds(30), CancellationToken.None));
        Assert.Equal(1, again.Attempt);
        await host.DisposeAsync();
    }

    [Fact]
    public async Task Trace_context_travels_from_the_sender_to_the_handler()
    {
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name is ConvergeDiagnostics.Name or "test",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);
        using var testSource = new ActivitySource("test");
        var signals = new ProbeSignals();
        await using var host = await StartAsync(signals);

        string sentTrace;
        using (var parent = testSource.StartActivity("place order"))
        {
            sentTrace = parent!.TraceId.ToString();
            await host.Bus.SendAsync(new Probe("traced"));
        }

        Assert.Equal(sentTrace, await signals.Started.Task.WaitAsync(TimeSpan.FromSeconds(20)));
    }
}
