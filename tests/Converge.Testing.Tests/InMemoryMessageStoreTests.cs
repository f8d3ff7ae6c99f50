using System.Text;
using Converge.Contracts;
using Converge.Storage;
using Converge.Testing.InMemory;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Testing.Tests;

/// <summary>The in-memory store's transactions, which the conformance suite exercises only through the runtime.</summary>
public sealed class InMemoryMessageStoreTests
{
    readonly FakeTimeProvider _time = new();

    static Envelope NewEnvelope(string key) => new()
    {
        MessageId = Guid.NewGuid(),
        MessageType = "test.item@1",
        SentAt = DateTimeOffset.UnixEpoch,
        Body = Encoding.UTF8.GetBytes(key),
    };

    static OutgoingMessage Message(string key) => new("items", NewEnvelope(key));

    static async Task<long> ReadyAsync(InMemoryMessageStore store) =>
        (await store.GetStatusAsync(CancellationToken.None)).Queues.SingleOrDefault(q => q.Queue == "items")?.Ready ?? 0;

    [Fact]
    public async Task Writes_are_seen_by_others_only_once_committed_and_readers_do_not_wait_for_the_writer()
    {
        var store = new InMemoryMessageStore(_time);
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        await transaction.EnqueueAsync(Message("a"), CancellationToken.None);
        await transaction.AppendAsync("s", 0, [NewEnvelope("e")], CancellationToken.None);

        // The writer holds its transaction open; a reader gets the committed state at once.
        Assert.Equal(0, await ReadyAsync(store));
        Assert.Empty(await store.ReadLogAsync(0, 10, CancellationToken.None));

        await transaction.CommitAsync(CancellationToken.None);

        Assert.Equal(1, await ReadyAsync(store));
        Assert.Single(await store.ReadLogAsync(0, 10, CancellationToken.None));
    }

    [Fact]
    public async Task Disposing_without_commit_rolls_back_and_never_runs_the_commit_callbacks()
    {
        var store = new InMemoryMessageStore(_time);
        var ran = false;
        await using (var transaction = await store.BeginAsync(CancellationToken.None))
        {
            await transaction.EnqueueAsync(Message("a"), CancellationToken.None);
            transaction.OnCommitted(() => ran = true);
        }

        Assert.Equal(0, await ReadyAsync(store));
        Assert.False(ran);

        // The write gate was released: the next transaction begins.
        await using var next = await store.BeginAsync(CancellationToken.None).AsTask().WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task Commit_callbacks_run_after_the_commit_is_visible()
    {
        var store = new InMemoryMessageStore(_time);
        long seenByCallback = -1;
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        await transaction.EnqueueAsync(Message("a"), CancellationToken.None);
        transaction.OnCommitted(() => seenByCallback = ReadyAsync(store).GetAwaiter().GetResult());

        await transaction.CommitAsync(CancellationToken.None);

        Assert.Equal(1, seenByCallback);
    }

    [Fact]
    public async Task Rolling_back_to_the_savepoint_undoes_what_came_after_it_and_its_callbacks_and_keeps_the_rest()
    {
        var store = new InMemoryMessageStore(_time);
        var callbacks = new List<string>();
        await using (var transaction = await store.BeginAsync(CancellationToken.None))
        {
            await transaction.EnqueueAsync(Message("before"), CancellationToken.None);
            transaction.OnCommitted(() => callbacks.Add("before"));

            await transaction.SavepointAsync(CancellationToken.None);
            await transaction.EnqueueAsync(Message("undone"), CancellationToken.None);
            transaction.OnCommitted(() => callbacks.Add("undone"));
            await transaction.RollbackToSavepointAsync(CancellationToken.None);

            await transaction.SavepointAsync(CancellationToken.None);
            await transaction.EnqueueAsync(Message("kept"), CancellationToken.None);
            transaction.OnCommitted(() => callbacks.Add("kept"));
            await transaction.ReleaseSavepointAsync(CancellationToken.None);

            await transaction.CommitAsync(CancellationToken.None);
        }

        var claimed = await store.ClaimAsync("items", 10, TimeSpan.FromMinutes(1), CancellationToken.None);
        Assert.Equal(["before", "kept"], claimed.Select(m => Encoding.UTF8.GetString(m.Envelope.Body.Span)));
        Assert.Equal(["before", "kept"], callbacks);
    }

    [Fact]
    public async Task An_abandoned_transaction_rolls_back_frees_the_writer_and_refuses_later_calls()
    {
        var store = new InMemoryMessageStore(_time);
        var transaction = await store.BeginAsync(CancellationToken.None);
        await transaction.EnqueueAsync(Message("a"), CancellationToken.None);

        await transaction.AbandonAsync();

        await using (var next = await store.BeginAsync(CancellationToken.None).AsTask().WaitAsync(TimeSpan.FromSeconds(5)))
        {
            await next.EnqueueAsync(Message("b"), CancellationToken.None);

            // The handler that ignored cancellation wakes up and writes: it must not reach the next writer's state.
            await Assert.ThrowsAsync<ObjectDisposedException>(() => transaction.EnqueueAsync(Message("late"), CancellationToken.None).AsTask());
            await Assert.ThrowsAsync<ObjectDisposedException>(() => transaction.CommitAsync(CancellationToken.None).AsTask());
            await next.CommitAsync(CancellationToken.None);
        }

        var claimed = await store.ClaimAsync("items", 10, TimeSpan.FromMinutes(1), CancellationToken.None);
        Assert.Equal(["b"], claimed.Select(m => Encoding.UTF8.GetString(m.Envelope.Body.Span)));
        await transaction.DisposeAsync();
    }

    [Fact]
    public async Task One_writer_at_a_time_so_concurrent_appenders_with_expected_versions_lose_nothing()
    {
        var store = new InMemoryMessageStore(_time);
        var conflicts = 0;
        await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
        {
            for (var appended = 0; appended < 25;)
            {
                var version = (await store.ReadStreamAsync("counter", 1, int.MaxValue, CancellationToken.None)).Count;
                await using var transaction = await store.BeginAsync(CancellationToken.None);
                try
                {
                    await transaction.AppendAsync("counter", version, [NewEnvelope("x")], CancellationToken.None);
                    await transaction.CommitAsync(CancellationToken.None);
                    appended++;
                }
                catch (StreamVersionConflictException)
                {
                    Interlocked.Increment(ref conflicts);
                }
            }
        })));

        var events = await store.ReadStreamAsync("counter", 1, int.MaxValue, CancellationToken.None);
        Assert.Equal(Enumerable.Range(1, 200).Select(v => (long)v), events.Select(e => e.StreamVersion));
        Assert.Equal(events.Select(e => e.Position).Order(), events.Select(e => e.Position));
    }

    [Fact]
    public async Task The_members_that_need_a_database_say_so()
    {
        var store = new InMemoryMessageStore(_time);
        await using var transaction = await store.BeginAsync(CancellationToken.None);

        var errors = new[]
        {
            Assert.Throws<NotSupportedException>(() => store.Database().Enlist(null!)),
            Assert.Throws<NotSupportedException>(() => transaction.Transaction),
            Assert.Throws<NotSupportedException>(() => transaction.Database()),
        };

        Assert.Contains("the in-memory store does not", errors[0].Message, StringComparison.Ordinal);
        Assert.All(errors, e => Assert.Contains("need a store that implements", e.Message, StringComparison.Ordinal));
        Assert.Contains(nameof(IDatabaseStore), errors[0].Message, StringComparison.Ordinal);
        Assert.Contains(nameof(IDatabaseTransaction), errors[2].Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_store_shared_by_two_hosts_keeps_its_contents_when_one_stops()
    {
        var store = new InMemoryMessageStore(_time);
        await using (var transaction = await store.BeginAsync(CancellationToken.None))
        {
            await transaction.EnqueueAsync(Message("a"), CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        await store.DisposeAsync();

        Assert.Equal(1, await ReadyAsync(store));
    }
}
