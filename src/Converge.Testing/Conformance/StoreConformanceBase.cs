using System.Text;
using Converge.Contracts;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Converge.Testing.Conformance;

/// <summary>
/// What every conformance suite shares: the <see cref="ConformanceStore"/> under test, hosts started on it with the
/// conformance handler and consumer group, the handlers' effects, and the helpers the facts use. Derive from a suite
/// (<see cref="QueueConformanceTests"/> and the others), not from this class.
/// </summary>
public abstract class StoreConformanceBase : IAsyncLifetime
{
    /// <summary>The queue the conformance handler listens on.</summary>
    protected const string Queue = "conformance";

    /// <summary>The consumer group of the log tests.</summary>
    protected const string Group = "conformance-projection";

    /// <summary>Starts every suite on <paramref name="store"/>, which the suite disposes with itself.</summary>
    /// <param name="store">The store under test.</param>
    protected StoreConformanceBase(ConformanceStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        Target = store;
    }

    /// <summary>The store under test.</summary>
    protected ConformanceStore Target { get; }

    /// <summary>Starts a host on <paramref name="storeName"/> with the conformance handler and consumer group.</summary>
    protected async Task<ConvergeTestHost> StartAsync(string storeName = "main", Action<ConvergeOptions>? configure = null)
    {
        var host = await ConvergeTestHost.StartAsync(o =>
        {
            Target.Use(o, storeName);
            o.Messages.Register<ConformanceCommand>("conformance.command");
            o.Messages.Register<ConformanceEvent>("conformance.event");
            o.Handle<ConformanceCommand, ConformanceCommandHandler>(Queue);
            o.Subscribe<ConformanceEvent, ConformanceEventHandler>(Group);
            o.Retry.InitialDelay = TimeSpan.Zero;
            o.Retry.MaxDelay = TimeSpan.Zero;
            configure?.Invoke(o);
        });

        // On a database the conformance handlers write their effects as rows of a table; elsewhere they keep them in memory.
        if (Target is DatabaseConformanceStore database)
        {
            await using var connection = await database.OpenConnectionAsync(host.Store);
            await using var create = connection.CreateCommand();
            create.CommandText = Effects.CreateTable;
            await create.ExecuteNonQueryAsync();
        }

        return host;
    }

    /// <summary>Counts the effects the conformance handlers committed in the host's store, optionally of one key.</summary>
    protected async Task<long> CountEffectsAsync(ConvergeTestHost host, string? key = null)
    {
        ArgumentNullException.ThrowIfNull(host);
        if (Target is not DatabaseConformanceStore database)
        {
            return Effects.CommittedKeys(host.Store).Count(k => key is null || k == key);
        }

        await using var connection = await database.OpenConnectionAsync(host.Store);
        return await Effects.CountAsync(connection, key);
    }

    /// <summary>The host's store status, read through <see cref="IStoreQueries"/>.</summary>
    protected static Task<StoreStatus> StatusAsync(ConvergeTestHost host) => host.Store.Queries().GetStatusAsync(CancellationToken.None).AsTask();

    /// <summary>An envelope of <paramref name="type"/> with <paramref name="body"/> as is, sent at the Unix epoch.</summary>
    protected static Envelope RawEnvelope(string type, byte[] body) => new()
    {
        MessageId = Guid.NewGuid(),
        MessageType = type,
        SentAt = DateTimeOffset.UnixEpoch,
        Body = body,
    };

    /// <summary>Records <paramref name="messageId"/> in the inbox of <see cref="Queue"/> in a transaction of its own; whether it was new.</summary>
    protected static async Task<bool> RecordInboxAsync(IMessageStore store, Guid messageId)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        var envelope = new Envelope { MessageId = messageId, MessageType = "conformance.probe@1", SentAt = DateTimeOffset.UnixEpoch, Body = Array.Empty<byte>() };
        var recorded = await transaction.TryRecordInboxAsync(Queue, envelope, CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
        return recorded;
    }

    /// <summary>Starts a host on <paramref name="storeName"/> with no consumers, on <paramref name="time"/>.</summary>
    protected Task<ConvergeTestHost> StartIdleAsync(FakeTimeProvider time, string storeName = "main") =>
        StartAsync(storeName, o => { o.RunConsumers = false; o.TimeProvider = time; });

    /// <summary>
    /// Records <see cref="Queue"/> as a job queue, as a job worker does when it starts (and a job client with a queue's
    /// first job).
    /// </summary>
    protected static Task StartJobQueueAsync(IMessageStore store) => InTransactionAsync(store, t => t.Jobs().RegisterJobQueueAsync(Queue, CancellationToken.None));

    /// <summary>
    /// Claims up to <paramref name="max"/> jobs of <see cref="Queue"/> as a job worker does: with a claim policy, which
    /// keeps the queue in the store when a transport carries the others.
    /// </summary>
    protected static ValueTask<IReadOnlyList<QueuedMessage>> ClaimJobsAsync(IMessageStore store, int max, TimeSpan lease) =>
        store.ClaimAsync(Queue, max, lease, ClaimPolicy.Default, CancellationToken.None);

    /// <summary>Runs <paramref name="work"/> in a transaction of <paramref name="store"/>, commits it and returns the result.</summary>
    protected static async Task<T> InTransactionAsync<T>(IMessageStore store, Func<IStoreTransaction, ValueTask<T>> work)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        var result = await work(transaction);
        await transaction.CommitAsync(CancellationToken.None);
        return result;
    }

    /// <summary>Runs <paramref name="work"/> in a transaction of <paramref name="store"/> and commits it.</summary>
    protected static async Task InTransactionAsync(IMessageStore store, Func<IStoreTransaction, ValueTask> work)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        await work(transaction);
        await transaction.CommitAsync(CancellationToken.None);
    }

    /// <summary>The key of a conformance command's body.</summary>
    protected static string KeyOf(QueuedMessage message) => System.Text.Json.JsonDocument.Parse(message.Envelope.Body).RootElement.GetProperty("key").GetString()!;

    /// <summary>Headers that put a job in the batch <paramref name="batchId"/>.</summary>
    protected static Dictionary<string, string> InBatch(string batchId) => new() { [JobHeaders.Batch] = batchId };

    /// <summary>A batch callback on the <c>callbacks</c> queue carrying <paramref name="key"/>.</summary>
    protected static OutgoingMessage Callback(string key, Guid id) => new("callbacks", new Envelope
    {
        MessageId = id,
        MessageType = "conformance.command@1",
        CorrelationId = "batch-callback",
        SentAt = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero),
        Headers = new Dictionary<string, string> { ["origin"] = "batch" },
        Body = Encoding.UTF8.GetBytes("{\"key\":\"" + key + "\"}"),
    }, Priority: 4);

    /// <summary>A batch <paramref name="id"/> created at <paramref name="at"/> with both callbacks.</summary>
    protected static JobBatchRecord NewBatch(string id, DateTimeOffset at) => new()
    {
        Id = id,
        Description = "conformance batch " + id,
        CreatedAt = at,
        OnSuccess = Callback("on-success", Guid.NewGuid()),
        OnComplete = Callback("on-complete", Guid.NewGuid()),
    };

    /// <summary>Creates <paramref name="batch"/> with one job to come and seals it.</summary>
    protected static async Task CreateSealedBatchOfOneAsync(IMessageStore store, JobBatchRecord batch)
    {
        await InTransactionAsync(store, t => t.Jobs().CreateBatchAsync(batch, CancellationToken.None));
        await InTransactionAsync(store, t => t.Jobs().AddToBatchAsync(batch.Id, 1, CancellationToken.None));
        await InTransactionAsync(store, t => t.Jobs().SealBatchAsync(batch.Id, CancellationToken.None));
    }

    /// <summary>Asserts that <paramref name="batch"/> finished with its one job failed and enqueued its callback.</summary>
    protected static async Task AssertFinishedWithOneFailureAndCalledBackAsync(IMessageStore store, JobBatchRecord batch)
    {
        var finished = (await store.JobQueries().GetBatchAsync(batch.Id, CancellationToken.None))!;
        Assert.Equal((0L, 0L, 1L), (finished.Pending, finished.Succeeded, finished.Failed));
        Assert.NotNull(finished.FinishedAt);
        var callback = Assert.Single(await store.ClaimAsync("callbacks", 10, TimeSpan.FromMinutes(5), CancellationToken.None));
        Assert.Equal(batch.OnComplete!.Envelope.MessageId, callback.Envelope.MessageId);
    }

    /// <summary>Awaits <paramref name="condition"/>, checking again after short pauses, failing after 30 seconds.</summary>
    protected static async Task WaitForAsync(Func<Task<bool>> condition, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var deadline = WallClock.Instance.GetTimestamp() + (long)((timeout ?? TimeSpan.FromSeconds(30)).TotalSeconds * WallClock.Instance.TimestampFrequency);
        while (!await condition())
        {
            if (WallClock.Instance.GetTimestamp() > deadline)
            {
                throw new TimeoutException("The awaited condition did not become true in time.");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(10));
        }
    }

    /// <summary>Sends a command and publishes an event from inside a handler.</summary>
    /// <param name="Key">Passed on.</param>
    public sealed record Relay(string Key);

    /// <summary>Relays to the conformance queue and the log.</summary>
    public sealed class RelayHandler : IHandler<Relay>
    {
        /// <inheritdoc />
        public async Task HandleAsync(Relay message, MessageContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(message);
            ArgumentNullException.ThrowIfNull(context);
            await context.SendAsync(new ConformanceCommand(message.Key), cancellationToken: cancellationToken);
            await context.PublishAsync("relay-" + message.Key, new ConformanceEvent(message.Key), cancellationToken: cancellationToken);
        }
    }

    /// <inheritdoc />
    public Task InitializeAsync() => Task.CompletedTask;

    /// <summary>Disposes the store under test, which removes what the test's stores left behind.</summary>
    public async Task DisposeAsync() => await Target.DisposeAsync();

    /// <summary>Asserts that no queue of the host has a message ready, scheduled or in flight.</summary>
    protected static async Task AssertQueuesEmptyAsync(ConvergeTestHost host)
    {
        var status = await StatusAsync(host);
        Assert.All(status.Queues, q => Assert.Equal((0L, 0L, 0L), (q.Ready, q.Scheduled, q.InFlight)));
    }

    /// <summary>Puts <paramref name="envelope"/> on the conformance queue as is, in a transaction of its own.</summary>
    protected static async Task EnqueueRawAsync(IMessageStore store, Envelope envelope)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        await transaction.EnqueueAsync(new OutgoingMessage(Queue, envelope), CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
    }

    /// <summary>Waits for the conformance queue's first dead letter and returns the newest.</summary>
    protected static async Task<DeadLetter> WaitForDeadLetterAsync(ConvergeTestHost host)
    {
        await WaitForAsync(async () => (await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None)).Count > 0);
        return (await host.Store.Queries().ListDeadLettersAsync(Queue, 10, CancellationToken.None))[0];
    }
}
