using System.Collections.Concurrent;
using System.Diagnostics;
using Converge.Hosting;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Converge.PostgreSql.Tests;

public sealed record Debit(string Key, string Fail);

public sealed class DebitCalls
{
    public ConcurrentDictionary<string, int> Calls { get; } = new(StringComparer.Ordinal);

    public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

public sealed class DebitHandler(DebitCalls calls) : IHandler<Debit>
{
    static readonly TaskCompletionSource Never = new();

    public async Task HandleAsync(Debit message, MessageContext context, CancellationToken cancellationToken)
    {
        calls.Calls.AddOrUpdate(message.Key, 1, static (_, n) => n + 1);
        calls.Started.TrySetResult();
        await context.ExecuteAsync(
            "INSERT INTO debits (key, amount) VALUES (@key, @amount)",
            [("@key", message.Fail == "unique" ? "taken" : message.Key), ("@amount", message.Fail == "check" ? -1 : 1)],
            cancellationToken);
        switch (message.Fail)
        {
            case "throw":
                throw new InvalidOperationException("the provider is down");
            case "hang" when context.Attempt == 1:
                await Never.Task;
                break;
        }
    }
}

/// <summary>Writes its debit through the message's own <c>DbTransaction</c>, as an ORM would, then fails when told to.</summary>
public sealed class RawDebitHandler(DebitCalls calls) : IHandler<RawDebit>
{
    public async Task HandleAsync(RawDebit message, MessageContext context, CancellationToken cancellationToken)
    {
        calls.Calls.AddOrUpdate(message.Key, 1, static (_, n) => n + 1);
        var transaction = (NpgsqlTransaction)await context.GetTransactionAsync(cancellationToken);
        await using var insert = new NpgsqlCommand("INSERT INTO debits (key, amount) VALUES (@key, 1)", transaction.Connection, transaction);
        insert.Parameters.AddWithValue("key", message.Key);
        await insert.ExecuteNonQueryAsync(cancellationToken);
        if (message.Fail)
        {
            throw new InvalidOperationException("the provider is down");
        }
    }
}

public sealed record RawDebit(string Key, bool Fail);

public sealed class PostgreSqlHandlerFailureTests : IAsyncDisposable
{
    readonly TestDatabase _database = new();

    public ValueTask DisposeAsync() => _database.DisposeAsync();

    async Task<ConvergeTestHost> StartAsync(string schema, DebitCalls calls, Action<ConvergeOptions>? configure = null)
    {
        var name = _database.Schema(schema);
        var host = await ConvergeTestHost.StartAsync(
            o =>
            {
                o.UsePostgreSql(TestDatabase.ConnectionStringFor(name), s => s.Schema = name);
                o.Messages.Register<Debit>("test.debit");
                o.Handle<Debit, DebitHandler>("debits");
                o.Retry.MaxAttempts = 4;
                o.Retry.InitialDelay = TimeSpan.Zero;
                o.Retry.MaxDelay = TimeSpan.Zero;
                o.PollInterval = TimeSpan.FromMilliseconds(50);
                configure?.Invoke(o);
            },
            services => services.AddSingleton(calls));
        await using var connection = await ((PostgreSqlMessageStore)host.Store).OpenConnectionAsync();
        await using var create = new NpgsqlCommand("CREATE TABLE IF NOT EXISTS debits (key text PRIMARY KEY, amount integer CHECK (amount > 0)); INSERT INTO debits VALUES ('taken', 1) ON CONFLICT DO NOTHING", connection);
        await create.ExecuteNonQueryAsync();
        return host;
    }

    [Theory]
    [InlineData("unique")]
    [InlineData("check")]
    public async Task A_constraint_violation_is_dead_lettered_as_a_permanent_failure_after_one_call(string violation)
    {
        var calls = new DebitCalls();
        await using var host = await StartAsync("perm_" + violation, calls);

        await host.SendAndWaitAsync(new Debit("d-1", violation));

        var letter = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None));
        Assert.Equal(DeadLetterReasons.PermanentFailure, letter.Reason);
        Assert.Equal(1, letter.Attempts);
        Assert.Equal(1, calls.Calls["d-1"]);
    }

    [Fact]
    public async Task A_failing_handler_runs_once_per_counted_attempt()
    {
        var calls = new DebitCalls();
        await using var host = await StartAsync("once", calls, o => o.Queue("debits", q => q.BatchSize = 1));

        await host.SendAndWaitAsync(new Debit("d-1", "throw"));

        var letter = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None));
        Assert.Equal((DeadLetterReasons.MaxAttemptsExceeded, 4), (letter.Reason, letter.Attempts));
        Assert.Equal(4, calls.Calls["d-1"]);
    }

    /// <summary>
    /// A handler's own statements on the message's transaction are undone with its failure: the message's savepoint,
    /// which the store may hold back until the next statement, reaches the server before the handler's first one.
    /// </summary>
    [Fact]
    public async Task Writes_a_failing_handler_made_through_its_own_transaction_are_undone_with_it()
    {
        var calls = new DebitCalls();
        await using var host = await StartAsync("raw", calls, o =>
        {
            o.Messages.Register<RawDebit>("test.raw-debit");
            o.Handle<RawDebit, RawDebitHandler>("raw-debits");
        });

        await host.SendAndWaitAsync(new RawDebit("r-failed", Fail: true));
        await host.SendAndWaitAsync(new RawDebit("r-kept", Fail: false));

        var letter = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None));
        Assert.Equal((DeadLetterReasons.MaxAttemptsExceeded, 4), (letter.Reason, letter.Attempts));
        Assert.Equal(4, calls.Calls["r-failed"]);
        await using var connection = await ((PostgreSqlMessageStore)host.Store).OpenConnectionAsync();
        await using var count = new NpgsqlCommand("SELECT key FROM debits WHERE key LIKE 'r-%' ORDER BY key", connection);
        await using var reader = await count.ExecuteReaderAsync();
        var keys = new List<string>();
        while (await reader.ReadAsync())
        {
            keys.Add(reader.GetString(0));
        }

        Assert.Equal(["r-kept"], keys);
    }

    [Fact]
    public void Integrity_violations_are_permanent_and_serialization_deadlock_connection_and_resource_errors_transient()
    {
        static PostgresException Error(string state) => new("message", "ERROR", "ERROR", state);

        Assert.All(["23505", "23514", "23503", "23502", "42P01"], s => Assert.False(PostgreSqlErrors.IsTransient(Error(s)), s));
        Assert.All(["40001", "40P01", "08006", "08003", "53300", "53200", "57P01", "57P03", "55P03"], s => Assert.True(PostgreSqlErrors.IsTransient(Error(s)), s));
        Assert.True(PostgreSqlErrors.IsTransient(new NpgsqlException("broken", new IOException("reset"))));
    }

    [Fact]
    public async Task A_hung_handler_is_abandoned_its_transaction_rolled_back_and_its_message_retried()
    {
        var calls = new DebitCalls();
        // Two workers: the one whose handler hangs keeps its slot until the call returns; the other retries the message.
        var host = await StartAsync("hung", calls, o =>
        {
            o.HandlerTimeout = TimeSpan.FromSeconds(1);
            o.Queue("debits", q => q.Concurrency = 2);
        });
        try
        {
            var history = await host.SendAndWaitAsync(new Debit("d-1", "hang"));

            Assert.Contains(history, h => h.What == "completed");
            Assert.Equal(2, calls.Calls["d-1"]);

            // The first attempt's insert (made before it hung) was rolled back with its transaction.
            await using var connection = await ((PostgreSqlMessageStore)host.Store).OpenConnectionAsync();
            await using var count = new NpgsqlCommand("SELECT count(*) FROM debits WHERE key = 'd-1'", connection);
            Assert.Equal(1L, (long)(await count.ExecuteScalarAsync())!);
        }
        finally
        {
            var watch = Stopwatch.StartNew();
            await host.DisposeAsync();
            Assert.InRange(watch.Elapsed, TimeSpan.Zero, TimeSpan.FromSeconds(10));
        }
    }
}
