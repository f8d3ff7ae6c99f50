using System.Diagnostics;
using Converge.Dashboard.Tests.Browser;
using Microsoft.Playwright;
using Xunit.Abstractions;
using static Microsoft.Playwright.Assertions;

namespace Converge.Dashboard.Tests;

/// <summary>
/// The browser-testing chain end to end: Playwright drives Debian's Chromium against a site on Kestrel, sees text a
/// Server-Sent Events stream writes into the page, submits a form, and leaves screenshots with the test output.
/// </summary>
[Collection(BrowserCollection.Name)]
public sealed class BrowserSmokeTests(BrowserFixture browser, ITestOutputHelper output)
{
    [Fact]
    public async Task Chromium_sees_server_sent_events_update_the_page_and_submits_a_form()
    {
        var clock = Stopwatch.StartNew();
        await using var site = await SmokeSite.StartAsync();
        await using var session = await browser.OpenAsync(output);
        var page = session.Page;

        var response = await page.GotoAsync(site.Address.ToString());
        Assert.Equal(200, response?.Status);
        await Expect(page).ToHaveTitleAsync("Converge smoke");

        // "connected" arrives once the stream is subscribed, so nothing pushed after it can be missed.
        var counter = page.Locator("#counter");
        await Expect(counter).ToHaveTextAsync("connected");
        Assert.Equal(1, site.Subscribers);
        for (var i = 1; i <= 3; i++)
        {
            site.Push(i.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        await Expect(counter).ToHaveTextAsync("count 3");
        await session.ScreenshotAsync("live");

        await page.GetByLabel("Name").FillAsync("Ada <Lovelace>");
        await page.GetByRole(AriaRole.Button, new() { Name = "Send" }).ClickAsync();
        await Expect(page.Locator("#result")).ToHaveTextAsync("Received: Ada <Lovelace>");
        Assert.Equal(["Ada <Lovelace>"], site.Submitted);
        var shot = await session.ScreenshotAsync("submitted");

        Assert.True(new FileInfo(shot).Length > 0, shot);
        Assert.Equal(Screenshots.Root, Path.GetDirectoryName(Path.GetDirectoryName(shot)));
        output.WriteLine($"smoke test body: {clock.ElapsedMilliseconds} ms");
    }

    [Fact]
    public void The_browser_is_the_configured_chromium()
    {
        Assert.Equal(BrowserFixture.FindChromium(), browser.ExecutablePath);
        Assert.True(browser.Browser.IsConnected);
        output.WriteLine($"Chromium {browser.Browser.Version} at {browser.ExecutablePath}: driver {browser.DriverStartTime.TotalMilliseconds:F0} ms, launch {browser.LaunchTime.TotalMilliseconds:F0} ms");
    }
}
