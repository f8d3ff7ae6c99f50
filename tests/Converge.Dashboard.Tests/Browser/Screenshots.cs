using System.Reflection;
using System.Text;
using Microsoft.Playwright;
using Xunit.Abstractions;

namespace Converge.Dashboard.Tests.Browser;

/// <summary>
/// Screenshots that come with the test output: each is saved under
/// &lt;repository&gt;/.artifacts/test-results/screenshots/&lt;test&gt;/&lt;name&gt;.png (the folder ./test.sh empties at its
/// start and keeps after the run), and its full path is written to the test's output, so it shows in the results.
/// </summary>
public static class Screenshots
{
    static readonly Lazy<string> s_root = new(FindRoot);

    /// <summary>
    /// The folder screenshots go to: .artifacts/test-results/screenshots under the repository root (the first folder
    /// above the test assembly holding Converge.slnx), or screenshots beside the test assembly when there is none.
    /// </summary>
    public static string Root => s_root.Value;

    /// <summary>Saves a PNG of <paramref name="page"/> to Root/<paramref name="test"/>/<paramref name="name"/>.png, writes the path to <paramref name="output"/>, and returns it.</summary>
    public static async Task<string> SaveAsync(IPage page, ITestOutputHelper output, string test, string name, bool fullPage = true)
    {
        ArgumentNullException.ThrowIfNull(page);
        ArgumentNullException.ThrowIfNull(output);
        var path = Path.Combine(Root, FileName(test), FileName(name) + ".png");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = path, FullPage = fullPage, Type = ScreenshotType.Png });
        BrowserFixture.Write(output, $"screenshot: {path}");
        return path;
    }

    /// <summary>
    /// The running test's name, as Class.Method (with a theory's arguments), read from the xunit output helper; when
    /// it does not tell, <paramref name="fallback"/>.
    /// </summary>
    public static string TestName(ITestOutputHelper output, string fallback)
    {
        // xunit 2's TestOutputHelper keeps the running test in a private field; its display name is Namespace.Class.Method(args).
        var test = output?.GetType().GetField("test", BindingFlags.Instance | BindingFlags.NonPublic)?.GetValue(output) as ITest;
        if (test is null)
        {
            return FileName(fallback);
        }

        var type = test.TestCase.TestMethod.TestClass.Class.Name;
        var display = test.DisplayName;
        var prefix = type[..(type.LastIndexOf('.') + 1)];
        return FileName(display.StartsWith(prefix, StringComparison.Ordinal) ? display[prefix.Length..] : display);
    }

    static string FileName(string text)
    {
        var name = new StringBuilder(text.Length);
        foreach (var c in text)
        {
            name.Append(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' ? c : '_');
        }

        var result = name.ToString().Trim('.');
        return result.Length == 0 ? "_" : result.Length > 120 ? result[..120] : result;
    }

    static string FindRoot()
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, "Converge.slnx")))
            {
                return Path.Combine(folder.FullName, ".artifacts", "test-results", "screenshots");
            }
        }

        return Path.Combine(AppContext.BaseDirectory, "screenshots");
    }
}
