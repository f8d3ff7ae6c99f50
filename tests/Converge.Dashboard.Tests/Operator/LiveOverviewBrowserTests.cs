using System.Globalization;
using Converge.Dashboard.Tests.Browser;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using Xunit.Abstractions;
using static Microsoft.Playwright.Assertions;

namespace Converge.Dashboard.Tests.Operator;

/// <summary>The overview's figures follow the store over Server-Sent Events, without a reload.</summary>
[Collection(BrowserCollection.Name)]
public sealed class LiveOverviewBrowserTests(BrowserFixture browser, ITestOutputHelper output)
{
    [Fact]
    public async Task The_overview_shows_a_growing_queue_without_being_reloaded()
    {
        var probe = new Probe();
        await using var server = await OperatorApp.StartAsync(probe, o => o.RunConsumers = false, d => d.LiveInterval = TimeSpan.FromMilliseconds(200));
        var bus = server.Services.GetRequiredService<IMessageBus>();
        await bus.SendAsync(new Ping(1));

        await using var session = await browser.OpenAsync(output, OperatorApp.AsOperator());
        var page = session.Page;
        await page.GotoAsync(OperatorApp.Url(server, "converge"));
        var ready = page.Locator("[data-live=\"queue.pings.ready\"]");
        await Expect(ready).ToHaveTextAsync("1");

        // The script counts the figures it applied: wait for a few, so the stream is known to be flowing.
        await page.WaitForFunctionAsync("() => Number(document.body.dataset.liveUpdates || 0) >= 2");
        var before = int.Parse(await page.Locator("body").GetAttributeAsync("data-live-updates") ?? "0", CultureInfo.InvariantCulture);
        await page.EvaluateAsync("() => { window.notReloaded = true; }");
        await session.ScreenshotAsync("1-overview-one-ping");

        for (var n = 2; n <= 5; n++)
        {
            await bus.SendAsync(new Ping(n));
        }

        await Expect(ready).ToHaveTextAsync("5");
        await page.WaitForFunctionAsync("before => Number(document.body.dataset.liveUpdates) > before", before);
        Assert.True(await page.EvaluateAsync<bool>("() => window.notReloaded === true"), "the page was reloaded");
        await Expect(page.Locator("svg[data-spark=\"queue.pings.ready\"] polyline")).ToHaveCountAsync(1);
        await session.ScreenshotAsync("2-overview-five-pings");
    }

    [Fact]
    public async Task The_overview_charts_dead_lettered_then_handled_messages_per_second()
    {
        var probe = new Probe();
        await using var server = await OperatorApp.StartAsync(probe, dashboard: d => d.LiveInterval = TimeSpan.FromMilliseconds(200));
        var bus = server.Services.GetRequiredService<IMessageBus>();
        await bus.SendAsync(new PrintInvoice("INV-1"));
        await Eventually.UntilAsync(
            async () => (await server.Store.Queries().ListDeadLettersAsync("invoices", 10, CancellationToken.None)).Count == 1,
            "the first invoice to be dead-lettered");

        await using var session = await browser.OpenAsync(output, OperatorApp.AsOperator());
        var page = session.Page;
        await page.GotoAsync(OperatorApp.Url(server, "converge"));

        // Rates last one tick: remember every positive value each cell shows.
        await page.EvaluateAsync("""
            () => {
              window.peaks = {};
              for (const key of ["queue.invoices.handled_per_s", "queue.invoices.dead_lettered_per_s"]) {
                const cell = document.querySelector(`[data-live="${key}"]`);
                new MutationObserver(() => { const v = Number(cell.textContent); if (v > 0) window.peaks[key] = v; })
                  .observe(cell, { childList: true, characterData: true, subtree: true });
              }
            }
            """);
        for (var n = 2; n <= 6; n++)
        {
            await bus.SendAsync(new PrintInvoice("INV-" + n.ToString(CultureInfo.InvariantCulture)));
        }

        await page.WaitForFunctionAsync("() => window.peaks['queue.invoices.dead_lettered_per_s'] > 0");
        Assert.Null(await page.EvaluateAsync<double?>("() => window.peaks['queue.invoices.handled_per_s'] ?? null"));
        probe.PrinterBroken = false;
        for (var n = 7; n <= 11; n++)
        {
            await bus.SendAsync(new PrintInvoice("INV-" + n.ToString(CultureInfo.InvariantCulture)));
        }

        await page.WaitForFunctionAsync("() => window.peaks['queue.invoices.handled_per_s'] > 0");
        await Expect(page.Locator("svg[data-spark=\"queue.invoices.handled_per_s\"] polyline")).ToHaveCountAsync(1);
        await session.ScreenshotAsync("overview-rates");
    }

    [Fact]
    public async Task The_overview_shows_a_queue_going_back_to_nothing_without_being_reloaded()
    {
        var probe = new Probe();
        await using var server = await OperatorApp.StartAsync(probe, dashboard: d => d.LiveInterval = TimeSpan.FromMilliseconds(200));
        await server.Services.GetRequiredService<IMessageBus>().SendAsync(new PrintInvoice("INV-9"));
        await Eventually.UntilAsync(
            async () => (await server.Store.Queries().ListDeadLettersAsync("invoices", 10, CancellationToken.None)).Count == 1,
            "the invoice to be dead-lettered");

        await using var session = await browser.OpenAsync(output, OperatorApp.AsOperator());
        var page = session.Page;
        await page.GotoAsync(OperatorApp.Url(server, "converge"));
        var queueLetters = page.Locator("[data-live=\"queue.invoices.dead_letters\"]");
        await Expect(queueLetters).ToHaveTextAsync("1");
        await Expect(page.Locator("[data-live=\"dead_letters\"]")).ToHaveTextAsync("1");
        await page.WaitForFunctionAsync("() => Number(document.body.dataset.liveUpdates || 0) >= 1");
        await session.ScreenshotAsync("1-overview-one-dead-letter");

        // Retried and handled: the queue holds nothing any more, so the store's status no longer lists it.
        probe.PrinterBroken = false;
        var letter = (await server.Store.Queries().ListDeadLettersAsync("invoices", 10, CancellationToken.None)).Single();
        Assert.True(await server.Store.RetryDeadLetterAsync(letter.Id, CancellationToken.None));
        await Eventually.UntilAsync(() => probe.Printed.Contains("INV-9"), () => "the retried invoice to be printed");

        await Expect(page.Locator("[data-live=\"dead_letters\"]")).ToHaveTextAsync("0");
        await Expect(queueLetters).ToHaveTextAsync("0");
        await Expect(page.Locator("[data-live=\"queue.invoices.ready\"]")).ToHaveTextAsync("0");
        await session.ScreenshotAsync("2-overview-nothing-left");
    }
}
