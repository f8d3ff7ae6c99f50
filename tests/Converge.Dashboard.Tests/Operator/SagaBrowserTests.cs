using Converge.Dashboard.Tests.Browser;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using Xunit.Abstractions;
using static Microsoft.Playwright.Assertions;

namespace Converge.Dashboard.Tests.Operator;

/// <summary>An operator follows a compensated order from the search box to its flow and its saga timeline.</summary>
[Collection(BrowserCollection.Name)]
public sealed class SagaBrowserTests(BrowserFixture browser, ITestOutputHelper output)
{
    [Fact]
    public async Task An_operator_finds_a_compensated_order_by_its_transaction_id_and_reads_its_flow_and_timeline()
    {
        var probe = new Probe();
        await using var server = await OperatorApp.StartAsync(probe);
        var sagas = server.Services.GetRequiredService<ISagaClient>();
        Assert.True(await sagas.StartAsync(CheckoutSaga.SagaName, "order-1001", new CheckoutData { Order = "1001", Amount = 40 }));
        Assert.True(await sagas.StartAsync(CheckoutSaga.SagaName, "order-1002", new CheckoutData { Order = "1002", Amount = 400 }));
        await Eventually.UntilAsync(async () => (await sagas.GetAsync("order-1001"))?.State == SagaState.Completed, "order-1001 to complete");
        await Eventually.UntilAsync(async () => (await sagas.GetAsync("order-1002"))?.State == SagaState.Compensated, "order-1002 to be compensated");

        await using var session = await browser.OpenAsync(output, OperatorApp.AsOperator());
        var page = session.Page;
        await page.GotoAsync(OperatorApp.Url(server, "converge"));
        await Expect(page.Locator("h1")).ToContainTextAsync("Overview");
        await session.ScreenshotAsync("1-overview");

        await page.GetByRole(AriaRole.Link, new() { Name = "Sagas", Exact = true }).First.ClickAsync();
        var list = page.Locator("#sagas");
        await Expect(list.Locator("tr", new() { HasText = "order-1001" })).ToContainTextAsync("completed");
        await Expect(list.Locator("tr", new() { HasText = "order-1002" })).ToContainTextAsync("compensated");
        await session.ScreenshotAsync("2-saga-list");

        await page.GetByLabel("Find a transaction by id").FillAsync("order-1002");
        await page.GetByLabel("Find a transaction by id").PressAsync("Enter");
        var flow = page.Locator("#flow");
        await Expect(flow).ToBeVisibleAsync();
        await Expect(flow).ToContainTextAsync("dash.charge-card");
        await Expect(flow).ToContainTextAsync("dash.release-stock");
        await session.ScreenshotAsync("3-flow");

        await page.GetByRole(AriaRole.Link, new() { Name = "Saga timeline of order-1002" }).ClickAsync();
        await Expect(page.Locator("h1")).ToContainTextAsync("Saga order-1002");
        var timeline = page.Locator("#timeline");
        await Expect(timeline.Locator("li.kind-" + SagaLogKinds.StepFailed)).ToContainTextAsync("charge");
        await Expect(timeline.Locator("li.kind-" + SagaLogKinds.CompensationSent)).ToContainTextAsync("reserve");
        await Expect(page.Locator("main")).ToContainTextAsync("card declined: over its limit");
        await session.ScreenshotAsync("4-saga-timeline");
    }
}
