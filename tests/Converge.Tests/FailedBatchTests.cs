using System.Collections.Concurrent;
using Castle.DynamicProxy;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;
using Converge.Testing.InMemory;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests;

/// <summary>
/// A worker whose batch fails as a whole (its transaction cannot begin: the database is down) waits the retry backoff
/// before it claims again, rather than spin through the queue; on a broker that counts every return, spinning used up
/// a message's deliveries in moments.
/// </summary>
public sealed class FailedBatchTests
{
    public sealed record Ping(int Number);

    public sealed class PingHandler : IHandler<Ping>
    {
        public Task HandleAsync(Ping message, MessageContext context, CancellationToken cancellationToken) => Task.CompletedTask;
    }

    [Fact]
    public async Task A_worker_whose_batch_failed_waits_the_retry_backoff_before_it_claims_again()
    {
        var clock = new WatchedClock(new FakeTimeProvider(new DateTimeOffset(2026, 12, 1, 0, 0, 0, TimeSpan.Zero)));
        var store = new InMemoryMessageStore(clock);
        await using (var sender = await StartAsync(clock, store, consumers: false))
        {
            for (var i = 0; i < 3; i++)
            {
                await sender.Bus.SendAsync(new Ping(i));
            }
        }

        var database = new DownDatabase();
        await using var worker = await StartAsync(clock, (IMessageStore)new ProxyGenerator().CreateInterfaceProxyWithTargetInterface(typeof(IMessageStore), [typeof(IStoreQueries)], store, database), consumers: true);

        // The batch failed; the worker set the backoff's timer (3.5 to 7 s) and claimed nothing more meanwhile.
        await Eventually.UntilAsync(() => Task.FromResult(database.FailedBegins > 0), () => "a batch to fail");
        await Eventually.UntilAsync(() => Task.FromResult(clock.Set.Any(d => d >= TimeSpan.FromSeconds(3.5) && d <= TimeSpan.FromSeconds(7))), () => $"the backoff's timer; set: {string.Join(", ", clock.Set)}");
        Assert.Equal(1, database.Claims);

        clock.Inner.Advance(TimeSpan.FromSeconds(7));
        await Eventually.UntilAsync(() => Task.FromResult(database.Claims >= 2), () => "the claim after the backoff");
    }

    static Task<ConvergeTestHost> StartAsync(TimeProvider clock, IMessageStore store, bool consumers) => ConvergeTestHost.StartAsync(o =>
    {
        o.TimeProvider = clock;
        o.StoreFactory = _ => store;
        o.RunConsumers = consumers;
        o.LeaseDuration = TimeSpan.FromMinutes(1);
        o.StatusInterval = TimeSpan.FromMinutes(10);
        o.Retry.InitialDelay = TimeSpan.FromSeconds(7);
        o.Retry.MaxDelay = TimeSpan.FromSeconds(7);
        o.Messages.Register<Ping>("test.ping");
        o.Handle<Ping, PingHandler>("work");
    });

    /// <summary>Claims pass; every transaction fails to begin, as when the database is down but the queue is not.</summary>
    sealed class DownDatabase : IInterceptor
    {
        int _claims;
        int _failedBegins;

        public int Claims => Volatile.Read(ref _claims);

        public int FailedBegins => Volatile.Read(ref _failedBegins);

        public void Intercept(IInvocation invocation)
        {
            switch (invocation.Method.Name)
            {
                case nameof(IStore.BeginAsync):
                    Interlocked.Increment(ref _failedBegins);
                    throw new InvalidOperationException("The database is down.");
                case nameof(IQueueStore.ClaimAsync):
                    Interlocked.Increment(ref _claims);
                    break;
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
