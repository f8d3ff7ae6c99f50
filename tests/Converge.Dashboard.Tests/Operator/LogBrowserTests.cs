using Converge.Dashboard.Tests.Browser;
using Converge.Runtime;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using Xunit.Abstractions;
using static Microsoft.Playwright.Assertions;

namespace Converge.Dashboard.Tests.Operator;

/// <summary>An operator pauses a consumer group on the log page and resumes it.</summary>
[Collection(BrowserCollection.Name)]
public sealed class LogBrowserTests(BrowserFixture browser, ITestOutputHelper output)
{
    [Fact]
    public async Task An_operator_pauses_and_resumes_a_consumer_group()
    {
        var probe = new Probe();
        await using var server = await OperatorApp.StartAsync(probe);
        var bus = server.Services.GetRequiredService<IMessageBus>();
        await bus.PublishAsync("stock-apples", new StockCounted("apples", 12));
        await Eventually.UntilAsync(
            async () => (await server.Store.GetConsumerGroupAsync(OperatorApp.Group, CancellationToken.None))?.Position >= 1,
            "the consumer group to have a checkpoint");
        Assert.Equal(["apples"], probe.Counted);

        await using var session = await browser.OpenAsync(output, OperatorApp.AsOperator());
        var page = session.Page;
        OperatorApp.AcceptConfirmations(page);
        await page.GotoAsync(OperatorApp.Url(server, "converge"));
        await page.GetByRole(AriaRole.Link, new() { Name = "Log", Exact = true }).ClickAsync();
        var row = page.Locator($"#group-{OperatorApp.Group}");
        var state = row.Locator($"[data-live=\"group.{OperatorApp.Group}.state\"]");
        await Expect(state).ToHaveTextAsync("running");
        await Expect(page.Locator("#tail")).ToContainTextAsync("dash.stock-counted");
        await session.ScreenshotAsync("1-log-running");

        await row.GetByRole(AriaRole.Button, new() { Name = "Pause", Exact = true }).ClickAsync();
        await Expect(page.Locator("p.notice")).ToContainTextAsync($"Consumer group {OperatorApp.Group} is paused");
        await Expect(state).ToHaveTextAsync("paused");
        Assert.True((await server.Store.GetConsumerGroupAsync(OperatorApp.Group, CancellationToken.None))!.Paused);
        await session.ScreenshotAsync("2-log-paused");

        await row.GetByRole(AriaRole.Button, new() { Name = "Resume", Exact = true }).ClickAsync();
        await Expect(page.Locator("p.notice")).ToContainTextAsync($"Consumer group {OperatorApp.Group} is resumed");
        await Expect(state).ToHaveTextAsync("running");
        Assert.False((await server.Store.GetConsumerGroupAsync(OperatorApp.Group, CancellationToken.None))!.Paused);

        // Resumed for real: the group handles the next event.
        await bus.PublishAsync("stock-pears", new StockCounted("pears", 3));
        await Eventually.UntilAsync(() => probe.Counted.Contains("pears"), () => "the resumed group to handle the next event");
        await session.ScreenshotAsync("3-log-resumed");
    }
}
