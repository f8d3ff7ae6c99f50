using System.Text.Encodings.Web;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Converge.Dashboard.Tests;

/// <summary>
/// A tiny site on Kestrel, on a free loopback port, shaped like the dashboard: a server-rendered page whose counter a
/// small inline script updates from a Server-Sent Events stream, and a form that posts back and renders the result.
/// The stream first says <c>connected</c> (it is subscribed by then), then sends each value given to <see cref="Push"/>.
/// </summary>
internal sealed class SmokeSite : IAsyncDisposable
{
    const string Page = """
        <!DOCTYPE html>
        <html lang="en">
        <head><meta charset="utf-8"><title>Converge smoke</title><link rel="icon" href="data:,">
        <style>body { font-family: sans-serif; margin: 2rem; } #counter { font-size: 2rem; color: #0a6; }</style>
        </head>
        <body>
          <h1>Smoke</h1>
          <p>Live: <span id="counter">waiting</span></p>
          <form method="post" action="/submit">
            <label>Name <input name="name" id="name"></label>
            <button type="submit">Send</button>
          </form>
          <script>
            const counter = document.getElementById('counter');
            const events = new EventSource('/events');
            events.onmessage = e => { counter.textContent = e.data === 'connected' ? 'connected' : 'count ' + e.data; };
          </script>
        </body>
        </html>
        """;

    readonly WebApplication _app;
    readonly Lock _lock = new();
    readonly List<Channel<string>> _subscribers = [];

    SmokeSite(WebApplication app) => _app = app;

    public Uri Address { get; private set; } = null!;

    /// <summary>The names the form posted, in order.</summary>
    public List<string> Submitted { get; } = [];

    public static async Task<SmokeSite> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        var site = new SmokeSite(app);
        var stopping = app.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;

        app.MapGet("/", () => Results.Content(Page, "text/html; charset=utf-8"));
        app.MapGet("/events", async (HttpContext context) =>
        {
            using var ended = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, stopping);
            var channel = Channel.CreateUnbounded<string>();
            lock (site._lock)
            {
                site._subscribers.Add(channel);
            }

            try
            {
                context.Response.ContentType = "text/event-stream";
                context.Response.Headers.CacheControl = "no-cache";
                await context.Response.WriteAsync("data: connected\n\n", ended.Token);
                await context.Response.Body.FlushAsync(ended.Token);
                await foreach (var value in channel.Reader.ReadAllAsync(ended.Token))
                {
                    await context.Response.WriteAsync($"data: {value}\n\n", ended.Token);
                    await context.Response.Body.FlushAsync(ended.Token);
                }
            }
            catch (OperationCanceledException)
            {
                // The page went away, or the site stops.
            }
            finally
            {
                lock (site._lock)
                {
                    site._subscribers.Remove(channel);
                }
            }
        });
        app.MapPost("/submit", async (HttpContext context) =>
        {
            var form = await context.Request.ReadFormAsync(context.RequestAborted);
            var name = form["name"].ToString();
            lock (site._lock)
            {
                site.Submitted.Add(name);
            }

            return Results.Content($"""
                <!DOCTYPE html>
                <html lang="en"><head><meta charset="utf-8"><title>Received</title><link rel="icon" href="data:,"></head>
                <body><h1 id="result">Received: {HtmlEncoder.Default.Encode(name)}</h1><a href="/">back</a></body></html>
                """, "text/html; charset=utf-8");
        });

        await app.StartAsync();
        site.Address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single() + "/");
        return site;
    }

    /// <summary>The number of open event streams.</summary>
    public int Subscribers
    {
        get
        {
            lock (_lock)
            {
                return _subscribers.Count;
            }
        }
    }

    /// <summary>Sends <paramref name="value"/> to every open event stream.</summary>
    public void Push(string value)
    {
        lock (_lock)
        {
            foreach (var subscriber in _subscribers)
            {
                subscriber.Writer.TryWrite(value);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
