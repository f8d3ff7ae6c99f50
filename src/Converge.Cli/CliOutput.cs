using System.Text.Encodings.Web;
using System.Text.Json;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Converge.Cli;

/// <summary>Where a command writes: results to stdout (a table, or one JSON object), errors and progress to stderr.</summary>
internal sealed class CliOutput
{
    static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public CliOutput(TextWriter stdout, TextWriter stderr)
    {
        Out = stdout;
        Error = stderr;
    }

    public TextWriter Out { get; }

    public TextWriter Error { get; }

    /// <summary>Writes <paramref name="value"/> as one snake_case JSON object on stdout.</summary>
    public async Task WriteJsonAsync<T>(T value)
    {
        await Out.WriteLineAsync(JsonSerializer.Serialize(value, Json));
        await Out.FlushAsync();
    }

    /// <summary>
    /// Writes a bench's or a demo's <paramref name="report"/> like <see cref="WriteJsonAsync"/>, with the peak memory
    /// of this process added as <c>peak_working_set_mb</c> (see <see cref="PeakWorkingSetMegabytes"/>).
    /// </summary>
    public async Task WriteMeasuredJsonAsync<T>(T report)
    {
        var json = JsonSerializer.SerializeToNode(report, Json)!.AsObject();
        json["peak_working_set_mb"] = PeakWorkingSetMegabytes();
        await Out.WriteLineAsync(json.ToJsonString(Json));
        await Out.FlushAsync();
    }

    /// <summary>
    /// The most physical memory this process has held so far, in MB (its peak working set: VmHWM on Linux), read when
    /// a bench or a demo reports, so it covers the whole command, warm-up runs included. Worker processes a demo
    /// starts are not included.
    /// </summary>
    public static double PeakWorkingSetMegabytes()
    {
        using var process = System.Diagnostics.Process.GetCurrentProcess();
        return Math.Round(process.PeakWorkingSet64 / (1024.0 * 1024.0), 1);
    }

    /// <summary>Prints <paramref name="report"/> as one JSON object when <paramref name="json"/> is set, otherwise with <paramref name="render"/>.</summary>
    public async Task<int> ReportAsync<T>(T report, bool json, Action<IAnsiConsole, T> render)
    {
        ArgumentNullException.ThrowIfNull(render);
        if (json)
        {
            await WriteJsonAsync(report);
        }
        else
        {
            render(Console(), report);
        }

        return CliApp.Success;
    }

    /// <summary>A console for tables on stdout: colors only on a real terminal; wide when redirected.</summary>
    public IAnsiConsole Console()
    {
        var terminal = ReferenceEquals(Out, System.Console.Out) && !System.Console.IsOutputRedirected;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(Out),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });
        if (!terminal)
        {
            console.Profile.Width = 200;
        }

        return console;
    }

    public async Task<int> FailAsync(int exitCode, string message)
    {
        await Error.WriteLineAsync($"error: {message}");
        return exitCode;
    }

    /// <summary>A table whose cells are plain text (never markup), so names with brackets print as they are.</summary>
    public static Table Table(params string[] headers)
    {
        var table = new Table().Border(TableBorder.Rounded);
        foreach (var header in headers)
        {
            table.AddColumn(new TableColumn(new Text(header)));
        }

        return table;
    }

    /// <summary>
    /// A compact table for long listings such as timelines and trees: no vertical lines, one space between columns,
    /// so more of each row fits an 80-column terminal. Cells are plain text, as in <see cref="Table"/>.
    /// </summary>
    public static Table Listing(params string[] headers)
    {
        var table = new Table().Border(TableBorder.Simple);
        foreach (var header in headers)
        {
            table.AddColumn(new TableColumn(new Text(header)).Padding(0, 0, 1, 0));
        }

        return table;
    }

    public static void AddRow(Table table, params object?[] cells) =>
        table.AddRow(cells.Select(cell => (IRenderable)new Text(Format(cell))).ToArray());

    public static string Format(object? value) => value switch
    {
        null => "-",
        DateTimeOffset at => at.ToString("yyyy-MM-dd HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture),
        long or int => string.Format(System.Globalization.CultureInfo.InvariantCulture, "{0:N0}", value),
        double d => d.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}

/// <summary>Thrown inside a command to stop with a message and an exit code.</summary>
internal sealed class CliException : Exception
{
    public CliException(int exitCode, string message) : base(message) => ExitCode = exitCode;

    public CliException() : this(CliApp.Failure, "The command failed.") { }

    public CliException(string message) : this(CliApp.Failure, message) { }

    public CliException(string message, Exception innerException) : base(message, innerException) => ExitCode = CliApp.Failure;

    public int ExitCode { get; }
}
