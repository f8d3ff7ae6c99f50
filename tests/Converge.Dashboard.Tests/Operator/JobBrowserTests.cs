using Converge.Dashboard.Tests.Browser;
using Converge.Jobs;
using Converge.Storage;
using Converge.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using Xunit.Abstractions;
using static Microsoft.Playwright.Assertions;

namespace Converge.Dashboard.Tests.Operator;

/// <summary>An operator cancels a running job and triggers a recurring job outside its schedule.</summary>
[Collection(BrowserCollection.Name)]
public sealed class JobBrowserTests(BrowserFixture browser, ITestOutputHelper output)
{
    [Fact]
    public async Task An_operator_cancels_a_running_job_from_its_page()
    {
        var probe = new Probe();
        await using var server = await OperatorApp.StartAsync(probe);
        var jobs = server.Services.GetRequiredService<IJobClient>();
        var job = await jobs.EnqueueAsync(new BuildReport("quarterly"));
        await probe.ReportStarted.Task.WaitAsync(Eventually.DefaultTimeout);
        var shortId = job.Id.ToString("N")[^8..];

        await using var session = await browser.OpenAsync(output, OperatorApp.AsOperator());
        var page = session.Page;
        OperatorApp.AcceptConfirmations(page);
        await page.GotoAsync(OperatorApp.Url(server, "converge/jobs"));
        var row = page.Locator("#jobs tr", new() { HasText = shortId });
        await Expect(row).ToContainTextAsync("processing");
        await session.ScreenshotAsync("1-jobs");

        await row.GetByRole(AriaRole.Link, new() { Name = shortId }).ClickAsync();
        await Expect(page.Locator("h1")).ToHaveTextAsync($"Job {shortId}");
        await Expect(page.Locator("main")).ToContainTextAsync("dash.build-report");
        await session.ScreenshotAsync("2-job-running");

        await page.GetByRole(AriaRole.Button, new() { Name = "Cancel", Exact = true }).ClickAsync();
        await Expect(page.Locator("p.notice")).ToContainTextAsync($"Cancellation of job {job.Id} requested");
        await probe.ReportCancelled.Task.WaitAsync(Eventually.DefaultTimeout);
        await Eventually.UntilAsync(async () => (await jobs.GetAsync(job.Id))?.State == JobState.Cancelled, "the job to be cancelled");

        await page.ReloadAsync();
        await Expect(page.Locator("main .badge", new() { HasText = "cancelled" })).ToBeVisibleAsync();
        await Expect(page.GetByRole(AriaRole.Button, new() { Name = "Cancel", Exact = true })).ToHaveCountAsync(0);
        await session.ScreenshotAsync("3-job-cancelled");
    }

    [Fact]
    public async Task An_operator_triggers_a_recurring_job_now_and_its_handler_runs()
    {
        var probe = new Probe();
        await using var server = await OperatorApp.StartAsync(probe);
        await Eventually.UntilAsync(
            async () => (await server.Store.JobQueries().ListRecurringJobsAsync(CancellationToken.None)).Any(r => r.Name == OperatorApp.Recurring),
            "the recurring job to be scheduled");
        Assert.Empty(probe.CleanupRuns);

        await using var session = await browser.OpenAsync(output, OperatorApp.AsOperator());
        var page = session.Page;
        OperatorApp.AcceptConfirmations(page);
        await page.GotoAsync(OperatorApp.Url(server, "converge/jobs"));
        await page.GetByRole(AriaRole.Link, new() { Name = "Recurring jobs" }).ClickAsync();
        var row = page.Locator("#recurring tr", new() { HasText = OperatorApp.Recurring });
        await Expect(row).ToContainTextAsync("0 3 * * *");
        await session.ScreenshotAsync("1-recurring");

        await row.GetByRole(AriaRole.Button, new() { Name = "Trigger now" }).ClickAsync();
        await Expect(page.Locator("p.notice")).ToContainTextAsync($"Recurring job {OperatorApp.Recurring} was triggered");
        await Eventually.UntilAsync(() => probe.CleanupRuns.Contains("old exports"), () => "the triggered cleanup to run");
        await session.ScreenshotAsync("2-recurring-triggered");

        await page.GotoAsync(OperatorApp.Url(server, "converge/jobs?queue=maintenance"));
        await Expect(page.Locator("#jobs tr", new() { HasText = "dash.cleanup" })).ToContainTextAsync("succeeded");
        await session.ScreenshotAsync("3-triggered-job-succeeded");
        Assert.Single(probe.CleanupRuns);
    }
}
