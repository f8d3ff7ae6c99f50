using System.Text.Json;
using Converge.Sagas;
using Converge.Storage;
using Microsoft.AspNetCore.Http;

namespace Converge.Dashboard;

/// <summary>
/// Server-Sent Events for open pages: every <see cref="ConvergeDashboardOptions.LiveInterval"/>, the figures pages mark
/// with <c>data-live</c> (queue depths, dead letters, the log's head, consumer-group lag and state, stuck sagas), as one
/// JSON object of key and value. The page's script writes each into its element and draws the sparklines.
/// </summary>
internal static class LiveFeed
{
    public static async Task ServeAsync(DashboardRequest request)
    {
        var response = request.Http.Response;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no";
        var aborted = request.Aborted;
        using var timer = new PeriodicTimer(request.Options.LiveInterval, request.Time);
        var since = request.Time.GetUtcNow() - request.Options.LiveInterval;
        try
        {
            do
            {
                var now = request.Time.GetUtcNow();
                var figures = await FiguresAsync(request);
                await AddRatesAsync(request, figures, since, now);
                since = now;
                await response.WriteAsync("event: figures\ndata: " + JsonSerializer.Serialize(figures) + "\n\n", aborted);
                await response.Body.FlushAsync(aborted);
            }
            while (await timer.WaitForNextTickAsync(aborted));
        }
        catch (OperationCanceledException) when (aborted.IsCancellationRequested)
        {
            // The page was closed.
        }
    }

    /// <summary>
    /// Handled and dead-lettered messages per second of each queue between two ticks (<see cref="IActivityQueries"/>),
    /// for the overview's charts; nothing when the store cannot tell.
    /// </summary>
    static async Task AddRatesAsync(DashboardRequest request, Dictionary<string, string> figures, DateTimeOffset since, DateTimeOffset now)
    {
        if (StoreContracts.Find<IActivityQueries>(request.Store) is not { } activity)
        {
            return;
        }

        var seconds = Math.Max((now - since).TotalSeconds, 0.001);
        foreach (var queue in await activity.CountActivitySinceAsync(since, request.Aborted))
        {
            figures[$"queue.{queue.Queue}.handled_per_s"] = Rate(queue.Handled / seconds);
            figures[$"queue.{queue.Queue}.dead_lettered_per_s"] = Rate(queue.DeadLettered / seconds);
        }
    }

    static string Rate(double perSecond) => perSecond.ToString(perSecond < 10 ? "0.#" : "N0", System.Globalization.CultureInfo.InvariantCulture);

    internal static async Task<Dictionary<string, string>> FiguresAsync(DashboardRequest request)
    {
        var status = await request.Store.Queries().GetStatusAsync(request.Aborted);
        var figures = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["dead_letters"] = DashboardRequest.Count(status.DeadLetters),
            ["log_head"] = DashboardRequest.Count(status.LogPosition),
        };
        foreach (var queue in status.Queues)
        {
            figures[$"queue.{queue.Queue}.ready"] = DashboardRequest.Count(queue.Ready);
            figures[$"queue.{queue.Queue}.scheduled"] = DashboardRequest.Count(queue.Scheduled);
            figures[$"queue.{queue.Queue}.in_flight"] = DashboardRequest.Count(queue.InFlight);
            figures[$"queue.{queue.Queue}.dead_letters"] = DashboardRequest.Count(queue.DeadLetters);
        }

        foreach (var group in status.ConsumerGroups)
        {
            figures[$"group.{group.Group}.lag"] = DashboardRequest.Count(group.Lag);
            figures[$"group.{group.Group}.state"] = group.Paused ? "paused" : group.FailedAttempts > 0 ? "failing" : "running";
        }

        if (StoreContracts.Find<ISagaQueries>(request.Store) is { } sagas)
        {
            figures["stuck_sagas"] = DashboardRequest.Count((await sagas.CountSagasAsync(request.Aborted)).Where(c => c.State == SagaState.Stuck).Sum(c => c.Count));
        }

        return figures;
    }
}

/// <summary>The stylesheet and the script, embedded in the assembly: nothing to build or copy.</summary>
internal static class Assets
{
    public static IResult Serve(string name)
    {
        var type = Path.GetExtension(name) switch
        {
            ".css" => "text/css; charset=utf-8",
            ".js" => "text/javascript; charset=utf-8",
            _ => null,
        };
        var stream = type is null ? null : typeof(Assets).Assembly.GetManifestResourceStream("Converge.Dashboard.Assets." + name);
        return stream is null ? Results.NotFound() : Results.Stream(stream, type);
    }
}
