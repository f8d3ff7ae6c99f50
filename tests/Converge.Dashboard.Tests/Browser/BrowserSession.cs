using Microsoft.Playwright;
using Xunit.Abstractions;

namespace Converge.Dashboard.Tests.Browser;

/// <summary>
/// One test's browser context and its first page, from <see cref="BrowserFixture.OpenAsync"/>. Closing it (dispose)
/// closes the context with all its pages, and so their connections (Server-Sent Events streams included).
/// </summary>
public sealed class BrowserSession : IAsyncDisposable
{
    readonly ITestOutputHelper _output;
    IPage? _page;

    internal BrowserSession(IBrowserContext context, ITestOutputHelper output, string testName)
    {
        Context = context;
        _output = output;
        TestName = testName;
        Context.Page += OnPage;
    }

    /// <summary>The test's own context: cookies, storage and permissions are not shared with other tests.</summary>
    public IBrowserContext Context { get; }

    /// <summary>The page opened with the session.</summary>
    public IPage Page => _page ?? throw new InvalidOperationException("The session has no page.");

    /// <summary>The folder name of the test's screenshots.</summary>
    public string TestName { get; }

    /// <summary>
    /// Saves a PNG of <paramref name="page"/> (default <see cref="Page"/>, full page) as
    /// .artifacts/test-results/screenshots/&lt;test&gt;/&lt;name&gt;.png and writes its path to the test output.
    /// </summary>
    public Task<string> ScreenshotAsync(string name, IPage? page = null, bool fullPage = true) =>
        Screenshots.SaveAsync(page ?? Page, _output, TestName, name, fullPage);

    internal async Task OpenFirstPageAsync() => _page = await Context.NewPageAsync();

    void OnPage(object? sender, IPage page)
    {
        page.Console += (_, message) =>
        {
            if (message.Type is "error" or "warning")
            {
                BrowserFixture.Write(_output, $"browser console.{message.Type}: {message.Text} ({message.Location})");
            }
        };
        page.PageError += (_, error) => BrowserFixture.Write(_output, $"browser page error: {error}");
    }

    public async ValueTask DisposeAsync()
    {
        Context.Page -= OnPage;
        await Context.CloseAsync();
        await Context.DisposeAsync();
    }
}
