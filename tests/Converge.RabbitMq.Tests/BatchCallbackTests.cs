using System.Collections.Concurrent;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Testing;
using Converge.Transports;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.RabbitMq.Tests;

/// <summary>
/// A batch's callback may be a message for a handler on a queue the broker carries. On PostgreSQL the worker whose
/// commit finishes the batch writes the callback into the outbox in the same statement as the count (not through the
/// transport), so the relay must find it there and move it to the broker.
/// </summary>
public sealed class BatchCallbackTests : IAsyncDisposable
{
    readonly PostgreSqlRabbitMqConformanceStore _store = new();

    public ValueTask DisposeAsync() => _store.DisposeAsync();

    public sealed record Tally(int Number);

    public sealed record TallyDone(string BatchId);

    /// <summary>Holds every job until the test opens the gate, so the batch is sealed before any job finishes.</summary>
    public sealed class Gate
    {
        public TaskCompletionSource Open { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ConcurrentQueue<string> Done { get; } = new();
    }

    public sealed class TallyHandler(Gate gate) : IJobHandler<Tally>
    {
        public Task ExecuteAsync(Tally job, JobContext context, CancellationToken cancellationToken) => gate.Open.Task.WaitAsync(cancellationToken);
    }

    public sealed class TallyDoneHandler(Gate gate) : IHandler<TallyDone>
    {
        public Task HandleAsync(TallyDone message, MessageContext context, CancellationToken cancellationToken)
        {
            gate.Done.Enqueue(message.BatchId);
            return Task.CompletedTask;
        }
    }

    [Fact]
    public async Task A_callback_message_for_a_queue_the_broker_carries_reaches_its_handler_once()
    {
        var gate = new Gate();
        await using var host = await ConvergeTestHost.StartAsync(
            o =>
            {
                _store.Use(o, "callbacks");
                o.Messages.Register<Tally>("tests.tally");
                o.Messages.Register<TallyDone>("tests.tally-done");
                o.Job<Tally, TallyHandler>("tallies");
                o.Handle<TallyDone, TallyDoneHandler>("tally-done");
            },
            services => services.AddSingleton(gate));
        Assert.True(((TransportedStore)host.Store).Transport.Carries("tally-done"));

        Assert.True(await host.Jobs.StartBatchAsync(new JobBatchOptions { Id = "tallies-1", OnSuccess = new TallyDone("tallies-1") }));
        for (var i = 0; i < 40; i++)
        {
            await host.Jobs.EnqueueAsync(new Tally(i), new JobOptions { BatchId = "tallies-1" });
        }

        await host.Jobs.SealBatchAsync("tallies-1");
        Assert.Null((await host.Jobs.GetBatchAsync("tallies-1"))!.FinishedAt);

        // The workers now finish the jobs and count them into the batch; the last count finishes it.
        gate.Open.SetResult();
        await Eventually.UntilAsync(() => !gate.Done.IsEmpty, () => "the callback to reach its handler");
        var batch = await host.Jobs.GetBatchAsync("tallies-1");
        Assert.NotNull(batch!.FinishedAt);
        Assert.Equal((40L, 0L), (batch.Succeeded, batch.Failed));
        await host.WaitForQuiescenceAsync();
        Assert.Equal(["tallies-1"], gate.Done);
    }
}
