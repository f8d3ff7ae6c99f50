using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Converge.Contracts;
using Converge.Diagnostics;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests.Sagas;

public sealed record Check(string Order);
public sealed record Checked(string Order);
public sealed record Hold(string Order);
public sealed record Held(string Order);
public sealed record Unhold(string Order);
public sealed record Unheld(string Order);
public sealed record Settle(string Order);
public sealed record Settled(string Order);
public sealed record SettleRefused(string Order);

/// <summary>
/// check (compensatable, read-only: no compensation) -> hold (compensatable; its compensation has a 5 s timeout of
/// its own, the step 30 s) -> settle (pivot). Retries: 4 attempts, 1 s doubling up to 4 s.
/// </summary>
public sealed class HoldSaga : SagaDefinition<OrderData>
{
    public static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(30);
    public static readonly TimeSpan CompensationTimeout = TimeSpan.FromSeconds(5);

    public override string Name => "hold";

    protected override void Define(SagaBuilder<OrderData> saga)
    {
        saga.Retry(maxAttempts: 4, initialDelay: TimeSpan.FromSeconds(1), maxDelay: TimeSpan.FromSeconds(4));
        saga.Compensatable("check").Send(d => new Check(d.Order)).OnReply<Checked>().Timeout(StepTimeout);
        saga.Compensatable("hold")
            .Send(d => new Hold(d.Order))
            .OnReply<Held>()
            .CompensateWith(d => new Unhold(d.Order))
            .OnCompensated<Unheld>()
            .Timeout(StepTimeout)
            .CompensationTimeout(CompensationTimeout);
        saga.Pivot("settle").Send(d => new Settle(d.Order)).OnReply<Settled>().FailOn<SettleRefused>(_ => "settle refused").Timeout(StepTimeout);
    }
}

/// <summary>What the hold participants do: commands named in <see cref="Broken"/> throw, those in <see cref="Silent"/> are not answered (once).</summary>
public sealed class HoldDesk
{
    public ConcurrentDictionary<string, bool> Broken { get; } = new();

    public ConcurrentDictionary<string, int> Silent { get; } = new();

    public ConcurrentQueue<string> Calls { get; } = new();

    public int CallsOf(string command) => Calls.Count(c => c == command);
}

public sealed class HoldParticipant(HoldDesk desk) : IHandler<Check>, IHandler<Hold>, IHandler<Unhold>, IHandler<Settle>
{
    async Task Answer(MessageContext context, string command, object reply)
    {
        desk.Calls.Enqueue(command);
        if (desk.Broken.ContainsKey(command))
        {
            throw new InvalidOperationException($"{command} participant is broken");
        }

        if (desk.Silent.TryGetValue(command, out var left) && left > 0)
        {
            desk.Silent[command] = left - 1;
            return;
        }

        await context.ReplyAsync(reply);
    }

    public Task HandleAsync(Check message, MessageContext context, CancellationToken cancellationToken) => Answer(context, "check", new Checked(message.Order));
    public Task HandleAsync(Hold message, MessageContext context, CancellationToken cancellationToken) => Answer(context, "hold", new Held(message.Order));
    public Task HandleAsync(Unhold message, MessageContext context, CancellationToken cancellationToken) => Answer(context, "unhold", new Unheld(message.Order));

    public Task HandleAsync(Settle message, MessageContext context, CancellationToken cancellationToken) =>
        message.Order.StartsWith("refuse", StringComparison.Ordinal)
            ? RefuseAsync(context, message.Order)
            : Answer(context, "settle", new Settled(message.Order));

    async Task RefuseAsync(MessageContext context, string order)
    {
        desk.Calls.Enqueue("settle");
        await context.ReplyAsync(new SettleRefused(order));
    }
}

/// <summary>A random source that always says the same, so backoff delays are exact.</summary>
public sealed class FixedRandom(double value) : IRandomSource
{
    public double NextDouble() => value;
}

/// <summary>Keeps every log event, for tests that check one was raised.</summary>
public sealed class RecordingLoggerProvider : ILoggerProvider
{
    public ConcurrentQueue<(EventId Id, LogLevel Level, string Message)> Events { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Recorder(this);

    public void Dispose() { }

    sealed class Recorder(RecordingLoggerProvider owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner.Events.Enqueue((eventId, logLevel, formatter(state, exception)));
    }
}

/// <summary>
/// A saga whose participant keeps failing gives up after its attempts and is stuck (visible, logged, counted), re-sending
/// with backoff until then; an operator resumes it. Dead-lettered commands fail their step at once.
/// </summary>
public sealed class StuckSagaTests
{
    const string Queue = "sagas.hold";

    static async Task<(ConvergeTestHost Host, FakeTimeProvider Time, HoldDesk Desk, RecordingLoggerProvider Logs)> StartAsync()
    {
        var time = new FakeTimeProvider();
        var desk = new HoldDesk();
        var logs = new RecordingLoggerProvider();
        var host = await ConvergeTestHost.StartAsync(
            o =>
            {
                o.TimeProvider = time;
                o.Random = new FixedRandom(0.5);

                // A failing handler is retried at once (the manual clock does not move by itself), 5 attempts, then dead-lettered.
                o.Retry.InitialDelay = TimeSpan.Zero;
                o.Messages.Register<Check>("test.check").Register<Checked>("test.checked").Register<Hold>("test.hold").Register<Held>("test.held")
                    .Register<Unhold>("test.unhold").Register<Unheld>("test.unheld").Register<Settle>("test.settle").Register<Settled>("test.settled")
                    .Register<SettleRefused>("test.settle-refused");
                o.Handle<Check, HoldParticipant>("desk").Handle<Hold, HoldParticipant>("desk").Handle<Unhold, HoldParticipant>("desk").Handle<Settle, HoldParticipant>("desk");
                o.AddSaga<HoldSaga>();
            },
            s =>
            {
                s.AddSingleton(desk);
                s.AddSingleton<HoldParticipant>();
                s.AddSingleton<ILoggerFactory>(new LoggerFactory([logs]));
            });
        return (host, time, desk, logs);
    }

    static void Advance(ConvergeTestHost host, FakeTimeProvider time, TimeSpan by)
    {
        time.Advance(by);
        foreach (var queue in host.Options.Queues.Keys)
        {
            host.Store.Signals.Queue(queue).Ring();
        }
    }

    static async Task<QueueStatus?> QueueAsync(ConvergeTestHost host, string queue) =>
        (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.SingleOrDefault(q => q.Queue == queue);

    static Task WaitForDeadLettersAsync(ConvergeTestHost host, long count) =>
        Eventually.UntilAsync(async () => (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).DeadLetters == count, $"{count} dead letter(s)");

    [Fact]
    public async Task A_compensation_that_always_fails_backs_off_then_gets_stuck_and_resume_finishes_it()
    {
        var (host, time, desk, logs) = await StartAsync();
        await using var _ = host;
        var stuckCount = 0L;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == ConvergeDiagnostics.Name && instrument.Name == "converge.sagas.stuck")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag is { Key: "saga", Value: "hold" })
                {
                    Interlocked.Add(ref stuckCount, value);
                }
            }
        });
        listener.Start();

        desk.Broken["unhold"] = true;
        await host.Sagas.StartAsync("hold", "tx-stuck", new OrderData { Order = "refuse-1" });

        // The first compensation is dead-lettered at once; each re-send waits for its backoff: with the random source
        // at 0.5 that is 3/4 of 1 s, 2 s and 4 s (the cap).
        await WaitForDeadLettersAsync(host, 1);
        foreach (var (attempt, delay) in new[] { (2, TimeSpan.FromMilliseconds(750)), (3, TimeSpan.FromMilliseconds(1500)), (4, TimeSpan.FromMilliseconds(3000)) })
        {
            await ShopSagaLog(host, "tx-stuck", e => e.Kind == SagaLogKinds.CompensationSent && e.Detail == $"attempt {attempt}", $"compensation attempt {attempt}");
            Advance(host, time, delay - TimeSpan.FromMilliseconds(1));
            Assert.Equal(1, (await QueueAsync(host, "desk"))!.Scheduled);
            Advance(host, time, TimeSpan.FromMilliseconds(1));
            await WaitForDeadLettersAsync(host, attempt);
        }

        var stuck = await host.WaitForSagaAsync("tx-stuck", s => s.State == SagaState.Stuck);
        Assert.Equal(("hold", 4, "settle", "settle refused"), (stuck.Steps[stuck.StepIndex], stuck.StepAttempt, stuck.FailedStep, stuck.Failure));
        Assert.Equal("the compensation of step 'hold' failed 4 time(s) in a row; re-sending stopped until the saga is resumed", stuck.StuckReason);
        Assert.StartsWith("dead-lettered (max-attempts-exceeded: InvalidOperationException: unhold participant is broken", stuck.LastError, StringComparison.Ordinal);
        Assert.Equal("compensate hold", stuck.RemainingSteps()[0]);
        Assert.Equal(["tx-stuck"], (await host.Sagas.QueryAsync(new SagaQuery { State = SagaState.Stuck })).Select(s => s.TransactionId));

        // The reply deleted the last compensation's timeout: nothing waits on the saga's queue.
        Assert.Equal(0, (await QueueAsync(host, Queue))?.Scheduled ?? 0);

        // A copy of the refusal that made it stuck is a duplicate, not a new failure.
        var lastUnhold = (await host.Sagas.ReadLogAsync("tx-stuck")).Last(e => e.Kind == SagaLogKinds.CompensationSent).MessageId!.Value;
        await DeliverAsync(host, "tx-stuck", "hold", lastUnhold, new SagaStepFailed("dead-lettered (again)"));
        var ignored = (await ShopSagaLog(host, "tx-stuck", e => e.Kind == SagaLogKinds.ReplyIgnored, "the copied refusal")).Single(e => e.Kind == SagaLogKinds.ReplyIgnored);
        Assert.Equal($"duplicate: command {lastUnhold:N} was already answered", ignored.Detail);
        Assert.Equal(stuck.ConcurrencyVersion, (await host.Sagas.GetAsync("tx-stuck"))!.ConcurrencyVersion);

        // Stuck means quiet: nothing more is sent however long one waits, and no timeouts are left pending.
        Advance(host, time, TimeSpan.FromHours(1));
        await host.WaitForQuiescenceAsync();
        var status = await host.Store.Queries().GetStatusAsync(CancellationToken.None);
        Assert.Equal(4, status.DeadLetters);
        Assert.All(status.Queues, q => Assert.Equal(0, q.Ready + q.Scheduled + q.InFlight));
        Assert.Equal(1, Interlocked.Read(ref stuckCount));
        var logged = Assert.Single(logs.Events, e => e.Id.Id == 1600);
        Assert.Equal(LogLevel.Error, logged.Level);
        Assert.Contains("tx-stuck", logged.Message, StringComparison.Ordinal);

        // The participant is fixed; the operator resumes: the compensation is sent again from attempt 1.
        desk.Broken.TryRemove("unhold", out var _);
        Assert.Equal(SagaResumeResult.Resumed, await host.Sagas.ResumeAsync("tx-stuck"));
        var done = await host.WaitForSagaAsync("tx-stuck");

        Assert.Equal(SagaState.Compensated, done.State);
        Assert.Null(done.StuckReason);
        var log = await host.Sagas.ReadLogAsync("tx-stuck");
        Assert.Contains(log, e => e.Kind == SagaLogKinds.StateChanged && e.Detail == "stuck -> compensating: resumed by the saga client");
        Assert.Equal([null, "attempt 2", "attempt 3", "attempt 4", null], log.Where(e => e.Kind == SagaLogKinds.CompensationSent).Select(e => e.Detail));

        // "check" has no compensation: it is passed over.
        Assert.DoesNotContain(log, e => e.Kind == SagaLogKinds.CompensationSent && e.Step == "check");
        Assert.Equal(SagaResumeResult.NotStuck, await host.Sagas.ResumeAsync("tx-stuck"));
        Assert.Equal(SagaResumeResult.NotFound, await host.Sagas.ResumeAsync("tx-none"));
    }

    [Fact]
    public async Task A_dead_lettered_command_fails_its_step_at_once_instead_of_waiting_for_the_timeout()
    {
        var (host, _, desk, _) = await StartAsync();
        await using var __ = host;
        desk.Broken["hold"] = true;

        await host.Sagas.StartAsync("hold", "tx-dead", new OrderData { Order = "o-2" });

        // The clock never moves, so the 30 s step timeout never fires: only the failure reply can end the saga.
        var instance = await host.WaitForSagaAsync("tx-dead");
        Assert.Equal(SagaState.Compensated, instance.State);
        Assert.Equal("hold", instance.FailedStep);
        Assert.StartsWith("dead-lettered (max-attempts-exceeded: InvalidOperationException: hold participant is broken", instance.Failure, StringComparison.Ordinal);
        var letter = Assert.Single(await host.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None));
        var log = await host.Sagas.ReadLogAsync("tx-dead");
        var reply = Assert.Single(log, e => e.Kind == SagaLogKinds.ReplyReceived && e.Step == "hold");
        Assert.Equal(letter.Envelope.MessageId, reply.Answers);
        Assert.Equal(SagaStepFailed.TypeName + "@1", reply.MessageType);

        // A refused hold did nothing; check is read-only: nothing to compensate, nothing pending.
        Assert.DoesNotContain(log, e => e.Kind == SagaLogKinds.CompensationSent);
        await host.WaitForQuiescenceAsync();
        Assert.All((await host.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues, q => Assert.Equal(0, q.Ready + q.Scheduled + q.InFlight));
    }

    [Fact]
    public async Task A_compensation_times_out_after_its_own_timeout()
    {
        var (host, time, desk, _) = await StartAsync();
        await using var _ = host;
        desk.Silent["unhold"] = 1;

        await host.Sagas.StartAsync("hold", "tx-ct", new OrderData { Order = "refuse-3" });
        await ShopSagaLog(host, "tx-ct", e => e.Kind == SagaLogKinds.CompensationSent, "the compensation");
        await Eventually.UntilAsync(() => Task.FromResult(desk.CallsOf("unhold") == 1), "the silent unhold");

        // The compensation's 5 s, not the step's 30 s.
        Advance(host, time, HoldSaga.CompensationTimeout + TimeSpan.FromMilliseconds(1));
        await ShopSagaLog(host, "tx-ct", e => e.Kind == SagaLogKinds.TimeoutFired && e.Step == "hold", "the compensation timeout");
        Advance(host, time, TimeSpan.FromSeconds(1));
        var instance = await host.WaitForSagaAsync("tx-ct");

        Assert.Equal(SagaState.Compensated, instance.State);
        Assert.Equal(2, desk.CallsOf("unhold"));
        Assert.Equal(("settle", "settle refused"), (instance.FailedStep, instance.Failure));
    }

    [Fact]
    public async Task Completed_sagas_leave_no_pending_timeouts()
    {
        var (host, _, _, _) = await StartAsync();
        await using var _ = host;

        for (var i = 0; i < 20; i++)
        {
            await host.Sagas.StartAsync("hold", $"tx-ok-{i}", new OrderData { Order = $"ok-{i}" });
        }

        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(SagaState.Completed, (await host.WaitForSagaAsync($"tx-ok-{i}")).State);
        }

        await host.WaitForQuiescenceAsync();
        var saga = await QueueAsync(host, Queue);
        Assert.Equal(0, (saga?.Ready ?? 0) + (saga?.Scheduled ?? 0) + (saga?.InFlight ?? 0));
        Assert.Equal(0, (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).DeadLetters);
    }

    static Task<Guid> DeliverAsync<T>(ConvergeTestHost host, string tx, string step, Guid command, T reply) where T : notnull =>
        ShopSaga.DeliverReplyAsync(host, tx, step, command, reply, queue: Queue);

    static Task<IReadOnlyList<SagaLogEntry>> ShopSagaLog(ConvergeTestHost host, string tx, Func<SagaLogEntry, bool> match, string what) =>
        ShopSaga.WaitForLogAsync(host, tx, match, what);
}
