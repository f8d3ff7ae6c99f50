using System.Collections.Concurrent;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;

namespace Converge.Dashboard.Tests.Operator;

// A small application for the operator tests: a checkout saga, a handler that can be made to fail, jobs and a
// consumer group, each recording what it did in the singleton Probe.

public sealed record ReserveStock(string Order);
public sealed record StockReserved(string Order);
public sealed record ReleaseStock(string Order);
public sealed record StockReleased(string Order);
public sealed record ChargeCard(string Order, decimal Amount);
public sealed record CardCharged(string Order);
public sealed record CardDeclined(string Order, string Reason);
public sealed record PrintInvoice(string Number);
public sealed record Ping(int N);
public sealed record StockCounted(string Sku, int Count);
public sealed record BuildReport(string Name);
public sealed record Cleanup(string What);

public sealed class CheckoutData
{
    public string Order { get; set; } = "";
    public decimal Amount { get; set; }
}

/// <summary>Reserve stock (compensatable), then charge the card (the pivot): a declined card releases the stock.</summary>
public sealed class CheckoutSaga : SagaDefinition<CheckoutData>
{
    public const string SagaName = "checkout";

    public override string Name => SagaName;

    protected override void Define(SagaBuilder<CheckoutData> saga)
    {
        saga.Compensatable("reserve")
            .Send(d => new ReserveStock(d.Order))
            .OnReply<StockReserved>()
            .CompensateWith(d => new ReleaseStock(d.Order))
            .OnCompensated<StockReleased>();
        saga.Pivot("charge")
            .Send(d => new ChargeCard(d.Order, d.Amount))
            .OnReply<CardCharged>()
            .FailOn<CardDeclined>(r => r.Reason);
    }
}

/// <summary>What the application's handlers did, and the switch that makes the invoice printer fail.</summary>
public sealed class Probe
{
    volatile bool _printerBroken = true;

    public bool PrinterBroken
    {
        get => _printerBroken;
        set => _printerBroken = value;
    }

    public ConcurrentQueue<string> Printed { get; } = new();
    public ConcurrentQueue<string> Counted { get; } = new();
    public ConcurrentQueue<string> CleanupRuns { get; } = new();
    public TaskCompletionSource ReportStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public TaskCompletionSource ReportCancelled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

public sealed class Warehouse : IHandler<ReserveStock>, IHandler<ReleaseStock>
{
    public async Task HandleAsync(ReserveStock message, MessageContext context, CancellationToken cancellationToken) =>
        await context.ReplyAsync(new StockReserved(message.Order), cancellationToken);

    public async Task HandleAsync(ReleaseStock message, MessageContext context, CancellationToken cancellationToken) =>
        await context.ReplyAsync(new StockReleased(message.Order), cancellationToken);
}

/// <summary>Declines any charge above 100.</summary>
public sealed class Cards : IHandler<ChargeCard>
{
    public async Task HandleAsync(ChargeCard message, MessageContext context, CancellationToken cancellationToken)
    {
        if (message.Amount > 100)
        {
            await context.ReplyAsync(new CardDeclined(message.Order, "card declined: over its limit"), cancellationToken);
        }
        else
        {
            await context.ReplyAsync(new CardCharged(message.Order), cancellationToken);
        }
    }
}

public sealed class InvoicePrinter(Probe probe) : IHandler<PrintInvoice>
{
    public Task HandleAsync(PrintInvoice message, MessageContext context, CancellationToken cancellationToken)
    {
        if (probe.PrinterBroken)
        {
            throw new HandlerFailureException("the printer is out of paper", nonRetryable: true);
        }

        probe.Printed.Enqueue(message.Number);
        return Task.CompletedTask;
    }
}

public sealed class StockCounter(Probe probe) : IHandler<StockCounted>
{
    public Task HandleAsync(StockCounted message, MessageContext context, CancellationToken cancellationToken)
    {
        probe.Counted.Enqueue(message.Sku);
        return Task.CompletedTask;
    }
}

/// <summary>Runs until its job is cancelled.</summary>
public sealed class ReportBuilder(Probe probe) : IJobHandler<BuildReport>
{
    public async Task ExecuteAsync(BuildReport job, JobContext context, CancellationToken cancellationToken)
    {
        probe.ReportStarted.TrySetResult();
        try
        {
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }
        catch (OperationCanceledException)
        {
            probe.ReportCancelled.TrySetResult();
            throw;
        }
    }
}

public sealed class CleanupJob(Probe probe) : IJobHandler<Cleanup>
{
    public Task ExecuteAsync(Cleanup job, JobContext context, CancellationToken cancellationToken)
    {
        probe.CleanupRuns.Enqueue(job.What);
        return Task.CompletedTask;
    }
}

internal static class OperatorApp
{
    public const string Recurring = "nightly-cleanup";
    public const string Group = "inventory-view";

    /// <summary>Every message type, handler, saga, job and subscription of the application.</summary>
    public static void Configure(ConvergeOptions o)
    {
        o.Messages.Register<ReserveStock>("dash.reserve-stock").Register<StockReserved>("dash.stock-reserved")
            .Register<ReleaseStock>("dash.release-stock").Register<StockReleased>("dash.stock-released")
            .Register<ChargeCard>("dash.charge-card").Register<CardCharged>("dash.card-charged").Register<CardDeclined>("dash.card-declined")
            .Register<PrintInvoice>("dash.print-invoice").Register<Ping>("dash.ping").Register<StockCounted>("dash.stock-counted")
            .Register<BuildReport>("dash.build-report").Register<Cleanup>("dash.cleanup");
        o.PollInterval = TimeSpan.FromMilliseconds(100);
        o.Handle<ReserveStock, Warehouse>("warehouse").Handle<ReleaseStock, Warehouse>("warehouse")
            .Handle<ChargeCard, Cards>("cards")
            .Handle<PrintInvoice, InvoicePrinter>("invoices")
            .Route<Ping>("pings")
            .Subscribe<StockCounted, StockCounter>(Group)
            .AddSaga<CheckoutSaga>();
        o.Job<BuildReport, ReportBuilder>("reports").Job<Cleanup, CleanupJob>("maintenance");
        o.AddRecurringJob(Recurring, "0 3 * * *", new Cleanup("old exports"));
        o.Jobs.CancellationCheckInterval = TimeSpan.FromMilliseconds(100);
        o.Jobs.SchedulerInterval = TimeSpan.FromMilliseconds(200);
    }

    public static Task<DashboardServer> StartAsync(Probe probe, Action<ConvergeOptions>? converge = null, Action<ConvergeDashboardOptions>? dashboard = null) =>
        DashboardServer.StartAsync(
            o =>
            {
                Configure(o);
                converge?.Invoke(o);
            },
            dashboard,
            s => s.AddSingleton(probe));

    /// <summary>A browser context signed in as an operator, that accepts every confirmation the dashboard asks for.</summary>
    public static BrowserNewContextOptions AsOperator() => new()
    {
        ViewportSize = new ViewportSize { Width = 1280, Height = 800 },
        ExtraHTTPHeaders = new Dictionary<string, string> { [DashboardServer.UserHeader] = "operator" },
    };

    public static void AcceptConfirmations(IPage page) => page.Dialog += async (_, dialog) => await dialog.AcceptAsync();

    public static string Url(DashboardServer server, string path) => new Uri(server.Address, path).ToString();
}
