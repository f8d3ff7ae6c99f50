using System.Collections.Concurrent;
using Castle.DynamicProxy;
using Converge.Runtime;
using Converge.Contracts;
using Converge.Storage;
using Converge.Transports;
using Converge.Testing;
using Converge.Testing.InMemory;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests;

/// <summary>
/// A worker whose batch of a transport's deliveries fails as a whole (its transaction cannot begin: the database is
/// down, the broker is not) waits the retry backoff before it receives again, rather than spin through the queue; on a
/// broker that counts every return, spinning used up a message's deliveries in moments.
/// </summary>
public sealed class FailedBatchTests
{
    public sealed record Ping(int Number);

    public sealed class PingHandler : IHandler<Ping>
    {
        public Task HandleAsync(Ping message, MessageContext context, CancellationToken cancellationToken) => Task.CompletedTask;
    }

    [Fact]
    public async Task A_worker_whose_batch_of_deliveries_failed_waits_the_retry_backoff_before_it_receives_again()
    {
        var clock = new WatchedClock(new FakeTimeProvider(new DateTimeOffset(2026, 12, 1, 0, 0, 0, TimeSpan.Zero)));
        var database = new DownDatabase();
        var transport = new EndlessTransport();
        await using var worker = await ConvergeTestHost.StartAsync(o =>
        {
            o.TimeProvider = clock;
            var store = new InMemoryMessageStore(clock);
            o.StoreFactory = _ => (IMessageStore)new ProxyGenerator().CreateInterfaceProxyWithTargetInterface(typeof(IMessageStore), [typeof(IStoreQueries)], store, database);
            o.TransportFactory = _ => transport;
            o.LeaseDuration = TimeSpan.FromMinutes(1);
            o.StatusInterval = TimeSpan.FromMinutes(10);
            o.Retry.InitialDelay = TimeSpan.FromSeconds(7);
            o.Retry.MaxDelay = TimeSpan.FromSeconds(7);
            o.Messages.Register<Ping>("test.ping");
            o.Handle<Ping, PingHandler>("work");
        });

        // The batch failed; the worker set the backoff's timer (3.5 to 7 s) and received nothing more meanwhile.
        await Eventually.UntilAsync(() => Task.FromResult(database.FailedBegins > 0), () => "a batch to fail");
        await Eventually.UntilAsync(() => Task.FromResult(clock.Set.Any(d => d >= TimeSpan.FromSeconds(3.5) && d <= TimeSpan.FromSeconds(7))), () => $"the backoff's timer; set: {string.Join(", ", clock.Set)}");
        Assert.Equal(1, transport.Receives);

        clock.Inner.Advance(TimeSpan.FromSeconds(7));
        await Eventually.UntilAsync(() => Task.FromResult(transport.Receives >= 2), () => "the claim after the backoff");
    }

    /// <summary>A transport that always has a delivery of queue <c>work</c> to give, and counts how often it is asked.</summary>
    sealed class EndlessTransport : IMessageTransport
    {
        int _receives;

        public int Receives => Volatile.Read(ref _receives);

        public string Name => "endless";

        public CommitSignals Signals { get; } = new();

        public ValueTask StartAsync(IMessageStore store, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public bool Carries(string queue) => queue == "work";

        public void KeepInStore(string queue)
        {
        }

        public ValueTask<IReadOnlyList<QueuedMessage>> ReceiveAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken)
        {
            var number = Interlocked.Increment(ref _receives);
            var delivery = new QueuedMessage
            {
                Id = -number,
                Queue = queue,
                Attempt = 1,
                LeaseToken = Guid.NewGuid(),
                Envelope = new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "test.ping@1", SentAt = DateTimeOffset.UnixEpoch, Body = System.Text.Encoding.UTF8.GetBytes($"{{\"number\":{number}}}") },
            };
            return ValueTask.FromResult<IReadOnlyList<QueuedMessage>>([delivery]);
        }

        public bool Holds(QueuedMessage delivery) => delivery.Id < 0;

        public ValueTask<int> RenewAsync(IReadOnlyList<QueuedMessage> deliveries, TimeSpan lease, CancellationToken cancellationToken) => ValueTask.FromResult(deliveries.Count);

        public ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> deliveries, bool countAttempt, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public void Acknowledge(QueuedMessage delivery)
        {
        }

        public void Sent(string queue)
        {
        }

        public ValueTask<T> ReadSettledAsync<T>(Func<ValueTask<T>> read, CancellationToken cancellationToken) => read();

        public ValueTask<StoreStatus> AddStatusAsync(StoreStatus stored, CancellationToken cancellationToken) => ValueTask.FromResult(stored);

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    /// <summary>Every transaction fails to begin, as when the database is down.</summary>
    sealed class DownDatabase : IInterceptor
    {
        int _failedBegins;

        public int FailedBegins => Volatile.Read(ref _failedBegins);

        public void Intercept(IInvocation invocation)
        {
            switch (invocation.Method.Name)
            {
                case nameof(IStore.BeginAsync):
                    Interlocked.Increment(ref _failedBegins);
                    throw new InvalidOperationException("The database is down.");
            }

            invocation.Proceed();
        }
    }

    /// <summary>A fake clock that notes every timer's due time.</summary>
    sealed class WatchedClock(FakeTimeProvider inner) : TimeProvider
    {
        readonly ConcurrentQueue<TimeSpan> _set = new();

        public FakeTimeProvider Inner => inner;

        public IReadOnlyList<TimeSpan> Set => [.. _set];

        public override DateTimeOffset GetUtcNow() => inner.GetUtcNow();

        public override long GetTimestamp() => inner.GetTimestamp();

        public override long TimestampFrequency => inner.TimestampFrequency;

        public override TimeZoneInfo LocalTimeZone => inner.LocalTimeZone;

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            _set.Enqueue(dueTime);
            return inner.CreateTimer(callback, state, dueTime, period);
        }
    }
}
