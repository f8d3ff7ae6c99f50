using System.Diagnostics;
using Microsoft.Playwright;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Converge.Dashboard.Tests.Browser;

/// <summary>
/// One Playwright driver and one headless Chromium, shared by every test of the collection <see cref="BrowserCollection"/>
/// and closed after its last test. The browser is the machine's own Chromium (Debian's package): Playwright never
/// downloads one. Its path comes from <c>CONVERGE_TEST_CHROMIUM</c> (exported by scripts/services.sh under ./test.sh),
/// else <see cref="DefaultPath"/>; when neither names a file, every test of the collection fails with the fix.
/// Each test opens its own <see cref="BrowserSession"/> (a fresh context: cookies and storage are never shared).
/// </summary>
public sealed class BrowserFixture : IAsyncLifetime
{
    /// <summary>The variable that names the Chromium executable.</summary>
    public const string Variable = "CONVERGE_TEST_CHROMIUM";

    /// <summary>Where Debian's chromium package puts its launcher; used when <see cref="Variable"/> is not set.</summary>
    public const string DefaultPath = "/usr/bin/chromium";

    readonly IMessageSink _diagnostics;
    IPlaywright? _playwright;
    IBrowser? _browser;

    public BrowserFixture(IMessageSink diagnostics) => _diagnostics = diagnostics;

    /// <summary>The Playwright instance (its driver is the node binary shipped in the Microsoft.Playwright package).</summary>
    public IPlaywright Playwright => _playwright ?? throw new InvalidOperationException("The browser fixture has not started.");

    /// <summary>The shared Chromium; prefer <see cref="OpenAsync"/>, which gives a test a context of its own.</summary>
    public IBrowser Browser => _browser ?? throw new InvalidOperationException("The browser fixture has not started.");

    /// <summary>The Chromium executable that was launched.</summary>
    public string ExecutablePath { get; private set; } = "";

    /// <summary>How long starting the Playwright driver took.</summary>
    public TimeSpan DriverStartTime { get; private set; }

    /// <summary>How long launching Chromium took, once the driver ran.</summary>
    public TimeSpan LaunchTime { get; private set; }

    /// <summary>The path of the Chromium to launch: <see cref="Variable"/> when set, else <see cref="DefaultPath"/>; throws with the fix when that file does not exist.</summary>
    public static string FindChromium()
    {
        var configured = Environment.GetEnvironmentVariable(Variable);
        if (!string.IsNullOrWhiteSpace(configured))
        {
            return File.Exists(configured)
                ? configured
                : throw new InvalidOperationException($"{Variable}={configured} names no file. The browser tests need Debian's Chromium: run ./test.sh (scripts/services.sh installs the chromium package and exports {Variable}), or apt-get install chromium and set {Variable} to its executable.");
        }

        return File.Exists(DefaultPath)
            ? DefaultPath
            : throw new InvalidOperationException($"{Variable} is not set and {DefaultPath} does not exist. The browser tests need Debian's Chromium: run ./test.sh (scripts/services.sh installs the chromium package and exports {Variable}), or apt-get install chromium, or set {Variable} to a Chromium executable.");
    }

    public async Task InitializeAsync()
    {
        ExecutablePath = FindChromium();

        // The expect assertions wait 5 s by default; the dashboard tests share 2 cores with the other test assemblies.
        Assertions.SetDefaultExpectTimeout(15_000);

        var clock = Stopwatch.StartNew();
        _playwright = await Microsoft.Playwright.Playwright.CreateAsync();
        DriverStartTime = clock.Elapsed;

        clock.Restart();
        try
        {
            _browser = await _playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
            {
                ExecutablePath = ExecutablePath,
                Headless = true,
                // Playwright's default, said out loud: without the sandbox Playwright passes --no-sandbox, which Chromium
                // needs when it runs as root (as ./test.sh and CI do: it refuses to start sandboxed as root). The pages
                // it opens are the tests' own, served on 127.0.0.1. No other flag is needed: Playwright also passes
                // --headless and --disable-dev-shm-usage (a small /dev/shm in a container does not crash it).
                ChromiumSandbox = false,
                Timeout = 60_000,
            });
        }
        catch (PlaywrightException exception)
        {
            _playwright.Dispose();
            _playwright = null;
            throw new InvalidOperationException($"Chromium at {ExecutablePath} (from {(Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } ? Variable : "the default path")}) did not start: {exception.Message}", exception);
        }

        LaunchTime = clock.Elapsed;
        _diagnostics.OnMessage(new DiagnosticMessage($"Chromium {_browser.Version} from {ExecutablePath}: driver started in {DriverStartTime.TotalMilliseconds:F0} ms, browser launched in {LaunchTime.TotalMilliseconds:F0} ms"));
    }

    /// <summary>
    /// A new browser context and page for one test, writing the page's console errors and uncaught exceptions to
    /// <paramref name="output"/>; dispose it at the end of the test. <paramref name="test"/> names the test's screenshot
    /// folder when the name cannot be read from <paramref name="output"/> (it is the calling method by default).
    /// </summary>
    public async Task<BrowserSession> OpenAsync(ITestOutputHelper output, BrowserNewContextOptions? options = null, [System.Runtime.CompilerServices.CallerMemberName] string test = "")
    {
        ArgumentNullException.ThrowIfNull(output);
        var context = await Browser.NewContextAsync(options ?? new BrowserNewContextOptions { ViewportSize = new ViewportSize { Width = 1280, Height = 800 } });
        try
        {
            var session = new BrowserSession(context, output, Screenshots.TestName(output, test));
            await session.OpenFirstPageAsync();
            Write(output, $"browser: Chromium {Browser.Version} ({ExecutablePath}); driver started in {DriverStartTime.TotalMilliseconds:F0} ms, launched in {LaunchTime.TotalMilliseconds:F0} ms");
            return session;
        }
        catch
        {
            await context.CloseAsync();
            throw;
        }
    }

    public async Task DisposeAsync()
    {
        if (_browser is not null)
        {
            // Waits for the browser process to exit, so no Chromium outlives the tests.
            await _browser.CloseAsync();
            await _browser.DisposeAsync();
            _browser = null;
        }

        _playwright?.Dispose();
        _playwright = null;
    }

    internal static void Write(ITestOutputHelper output, string line)
    {
        try
        {
            output.WriteLine(line);
        }
        catch (InvalidOperationException)
        {
            // The test has ended already (a late console message of a page still closing).
        }
    }
}

/// <summary>The tests that share one <see cref="BrowserFixture"/>: mark a test class with <c>[Collection(BrowserCollection.Name)]</c>.</summary>
[CollectionDefinition(Name)]
public sealed class BrowserCollection : ICollectionFixture<BrowserFixture>
{
    public const string Name = "Browser";
}
