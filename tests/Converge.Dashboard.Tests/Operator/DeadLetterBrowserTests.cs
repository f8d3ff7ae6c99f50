using Converge.Dashboard.Tests.Browser;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using Xunit.Abstractions;
using static Microsoft.Playwright.Assertions;

namespace Converge.Dashboard.Tests.Operator;

/// <summary>An operator retries a dead letter once its handler is fixed, and the handler then runs.</summary>
[Collection(BrowserCollection.Name)]
public sealed class DeadLetterBrowserTests(BrowserFixture browser, ITestOutputHelper output)
{
    [Fact]
    public async Task An_operator_retries_a_dead_letter_and_the_fixed_handler_handles_it()
    {
        var probe = new Probe();
        await using var server = await OperatorApp.StartAsync(probe);
        var bus = server.Services.GetRequiredService<IMessageBus>();
        await bus.SendAsync(new PrintInvoice("INV-7"), new SendOptions { CorrelationId = "invoice-7" });
        await Eventually.UntilAsync(
            async () => (await server.Store.Queries().ListDeadLettersAsync("invoices", 10, CancellationToken.None)).Count == 1,
            "the invoice to be dead-lettered");
        var letter = (await server.Store.Queries().ListDeadLettersAsync("invoices", 10, CancellationToken.None)).Single();
        Assert.Empty(probe.Printed);

        await using var session = await browser.OpenAsync(output, OperatorApp.AsOperator());
        var page = session.Page;
        OperatorApp.AcceptConfirmations(page);
        await page.GotoAsync(OperatorApp.Url(server, "converge"));
        await page.GetByRole(AriaRole.Link, new() { Name = "dead letters", Exact = true }).ClickAsync();
        var row = page.Locator("#dead-letters tr", new() { HasText = "dash.print-invoice" });
        await Expect(row).ToContainTextAsync("invoices");
        await Expect(row).ToContainTextAsync(letter.Reason);
        await session.ScreenshotAsync("1-dead-letters-before");

        probe.PrinterBroken = false;
        await row.GetByRole(AriaRole.Button, new() { Name = "Retry", Exact = true }).ClickAsync();
        await Expect(page.Locator("p.notice")).ToHaveTextAsync($"Dead letter {letter.Id} is back on its queue.");
        await Eventually.UntilAsync(() => probe.Printed.Contains("INV-7"), () => "the retried invoice to be printed");
        await Eventually.UntilAsync(
            async () => (await server.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None)).Count == 0,
            "no dead letter to be left");

        await page.ReloadAsync();
        await Expect(page.Locator("p.notice")).ToBeVisibleAsync();
        await Expect(page.Locator("main")).ToContainTextAsync("No dead letters here.");
        await session.ScreenshotAsync("2-dead-letters-after");
        Assert.Equal(["INV-7"], probe.Printed);
    }
}
