using System.Collections.Concurrent;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing.InMemory;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Testing.Tests;

public sealed record Book(string Trip);
public sealed record Booked(string Trip);
public sealed record Cancel(string Trip);
public sealed record Cancelled(string Trip);
public sealed record Pay(string Trip);
public sealed record Paid(string Trip);
public sealed record Declined(string Trip, string Reason);

public sealed class TripData
{
    public string Trip { get; set; } = "";
}

/// <summary>Book a seat (undone by cancelling it), then pay: a payment that is declined cancels the booking.</summary>
public sealed class TripSaga : SagaDefinition<TripData>
{
    public override string Name => "trip";

    protected override void Define(SagaBuilder<TripData> saga)
    {
        saga.Compensatable("book")
            .Send(d => new Book(d.Trip))
            .OnReply<Booked>()
            .CompensateWith(d => new Cancel(d.Trip))
            .OnCompensated<Cancelled>();
        saga.Pivot("pay")
            .Send(d => new Pay(d.Trip))
            .OnReply<Paid>()
            .FailOn<Declined>(r => r.Reason);
    }
}

/// <summary>What the trip's participants did; payments of trips named "broke-*" are declined.</summary>
public sealed class TripDesk :
    IHandler<Book>, IHandler<Cancel>, IHandler<Pay>
{
    public static ConcurrentQueue<string> Done { get; } = new();

    public async Task HandleAsync(Book message, MessageContext context, CancellationToken cancellationToken)
    {
        Done.Enqueue("book:" + message.Trip);
        await context.ReplyAsync(new Booked(message.Trip), cancellationToken);
    }

    public async Task HandleAsync(Cancel message, MessageContext context, CancellationToken cancellationToken)
    {
        Done.Enqueue("cancel:" + message.Trip);
        await context.ReplyAsync(new Cancelled(message.Trip), cancellationToken);
    }

    public async Task HandleAsync(Pay message, MessageContext context, CancellationToken cancellationToken)
    {
        if (message.Trip.StartsWith("broke-", StringComparison.Ordinal))
        {
            await context.ReplyAsync(new Declined(message.Trip, "card declined"), cancellationToken);
            return;
        }

        Done.Enqueue("pay:" + message.Trip);
        await context.ReplyAsync(new Paid(message.Trip), cancellationToken);
    }
}

public sealed record Invoice(int N, bool Fail = false);

public sealed record InvoicesDone(string Batch);

public sealed class InvoiceHandler : IJobHandler<Invoice>, IJobHandler<InvoicesDone>
{
    public static ConcurrentQueue<string> Ran { get; } = new();

    public Task ExecuteAsync(Invoice job, JobContext context, CancellationToken cancellationToken)
    {
        if (job.Fail)
        {
            throw new HandlerFailureException("the customer has no address", nonRetryable: true);
        }

        Ran.Enqueue("invoice-" + job.N);
        return Task.CompletedTask;
    }

    public Task ExecuteAsync(InvoicesDone job, JobContext context, CancellationToken cancellationToken)
    {
        Ran.Enqueue("done-" + job.Batch);
        return Task.CompletedTask;
    }
}

/// <summary>The runtime on the in-memory store, as a user's unit tests run it: sagas and jobs, no database.</summary>
public sealed class InMemoryRuntimeTests
{
    static Task<ConvergeTestHost> StartSagaHostAsync() => ConvergeTestHost.StartAsync(
        o =>
        {
            o.UseInMemory();
            o.Messages.Register<Book>("trip.book").Register<Booked>("trip.booked").Register<Cancel>("trip.cancel")
                .Register<Cancelled>("trip.cancelled").Register<Pay>("trip.pay").Register<Paid>("trip.paid").Register<Declined>("trip.declined");
            o.Handle<Book, TripDesk>("desk").Handle<Cancel, TripDesk>("desk").Handle<Pay, TripDesk>("desk");
            o.AddSaga<TripSaga>();
        },
        s => s.AddSingleton<TripDesk>());

    [Fact]
    public async Task A_saga_completes_on_the_in_memory_store()
    {
        await using var host = await StartSagaHostAsync();

        Assert.True(await host.Sagas.StartAsync("trip", "trip-ok", new TripData { Trip = "ok-1" }));
        var instance = await host.WaitForSagaAsync("trip-ok");

        Assert.Equal("in-memory", host.Store.Name);
        Assert.Equal(SagaState.Completed, instance.State);
        Assert.Contains("pay:ok-1", TripDesk.Done);
        var log = await host.Store.SagaQueries().ReadSagaLogAsync("trip-ok", CancellationToken.None);
        Assert.Equal(
            [SagaLogKinds.Started, SagaLogKinds.CommandSent, SagaLogKinds.ReplyReceived, SagaLogKinds.CommandSent, SagaLogKinds.ReplyReceived, SagaLogKinds.StateChanged],
            log.Select(e => e.Kind));
    }

    [Fact]
    public async Task A_declined_payment_compensates_the_booking_on_the_in_memory_store()
    {
        await using var host = await StartSagaHostAsync();

        Assert.True(await host.Sagas.StartAsync("trip", "trip-broke", new TripData { Trip = "broke-1" }));
        var instance = await host.WaitForSagaAsync("trip-broke");

        Assert.Equal(SagaState.Compensated, instance.State);
        Assert.Equal("pay", instance.FailedStep);
        Assert.Contains("cancel:broke-1", TripDesk.Done);
        Assert.DoesNotContain("pay:broke-1", TripDesk.Done);
    }

    [Fact]
    public async Task A_batch_of_jobs_runs_its_callback_and_a_dead_job_can_be_retried_on_the_in_memory_store()
    {
        var store = new InMemoryMessageStore(TimeProvider.System);
        await using var host = await ConvergeTestHost.StartAsync(
            o =>
            {
                o.UseInMemory(store);
                o.Messages.Register<Invoice>("test.invoice").Register<InvoicesDone>("test.invoices-done");
                o.Job<Invoice, InvoiceHandler>("invoices");
                o.Job<InvoicesDone, InvoiceHandler>("invoices");
            },
            s => s.AddSingleton<InvoiceHandler>());
        var batch = "invoices-" + Guid.NewGuid().ToString("N");

        Assert.True(await host.Jobs.StartBatchAsync(new JobBatchOptions { Id = batch, OnComplete = new InvoicesDone(batch) }));
        var jobs = new List<EnqueuedJob>();
        for (var i = 0; i < 3; i++)
        {
            jobs.Add(await host.Jobs.EnqueueAsync(new Invoice(i, Fail: i == 2), new JobOptions { BatchId = batch }));
        }

        await host.Jobs.SealBatchAsync(batch);
        await Eventually.UntilAsync(() => InvoiceHandler.Ran.Contains("done-" + batch), () => "the batch's callback to run");

        var finished = await host.Jobs.GetBatchAsync(batch);
        Assert.Equal((3L, 2L, 1L, 0L), (finished!.Total, finished.Succeeded, finished.Failed, finished.Pending));
        Assert.Equal(JobState.Succeeded, (await host.Jobs.GetAsync(jobs[0].Id))!.State);
        var dead = (await host.Jobs.GetAsync(jobs[2].Id))!;
        Assert.Equal(JobState.Dead, dead.State);

        // The dead job goes back on its queue, and fails again: it is dead once more, with a fresh attempt count.
        Assert.True(await store.RetryDeadLetterAsync(dead.DeadLetterId!.Value, CancellationToken.None));
        await Eventually.UntilAsync(async () => (await host.Jobs.GetAsync(jobs[2].Id))?.DeadLetterId is { } id && id != dead.DeadLetterId, "the retried job to die again");
        Assert.Equal(1, (await host.Jobs.GetAsync(jobs[2].Id))!.Attempts);
    }
}
