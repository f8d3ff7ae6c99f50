using System.Reflection;
using Converge.Samples.Billing;
using Converge.Samples.Shop;

namespace Converge.Cli;

/// <summary>
/// The worker processes of <c>converge demo ... --processes</c> run as this same program, with a verb that the help
/// does not list: <c>converge __demo-worker shop|month-close serve ...</c>. So a worker loads with the tool's own
/// dependencies (its deps.json names the native SQLite library for each platform, its runtimeconfig.json the
/// runtime), wherever the tool is installed. Running the samples' programs instead would need their deps.json and
/// runtimeconfig.json beside them, which a tool package does not carry and which would describe the samples' builds,
/// not the tool's resolved dependencies.
/// </summary>
internal static class DemoWorkers
{
    /// <summary>The first argument of a worker's command line.</summary>
    public const string Verb = "__demo-worker";

    /// <summary>The Shop demo's workers.</summary>
    public const string Shop = "shop";

    /// <summary>The month close demo's workers.</summary>
    public const string MonthClose = "month-close";

    /// <summary>
    /// The command line that starts a worker of <paramref name="sample"/>, to which the demo appends <c>serve</c> and
    /// its arguments: this program as it was started (the installed command's executable, or the dotnet host with this
    /// assembly), then <see cref="Verb"/> and the sample.
    /// </summary>
    public static IReadOnlyList<string> Command(string sample) => [.. Self(), Verb, sample];

    /// <summary>
    /// Runs a worker when <paramref name="args"/> asks for one (<c>__demo-worker SAMPLE serve ...</c>).
    /// </summary>
    /// <returns>The worker's exit code, or <c>null</c> when <paramref name="args"/> is an ordinary command line.</returns>
    public static async Task<int?> TryServeAsync(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        return args switch
        {
            [Verb, Shop, "serve", .. var rest] => await ShopWorker.ServeAsync(rest),
            [Verb, MonthClose, "serve", .. var rest] => await BillingWorker.ServeAsync(rest),
            [Verb, ..] => await UnknownAsync(),
            _ => null,
        };
    }

    static async Task<int> UnknownAsync()
    {
        await Console.Error.WriteLineAsync($"usage: converge {Verb} {Shop}|{MonthClose} serve ARGS (a demo starts these itself)");
        return CliApp.Usage;
    }

    /// <summary>How to start this program again.</summary>
    static IReadOnlyList<string> Self()
    {
        var assembly = typeof(DemoWorkers).Assembly;
        var process = Environment.ProcessPath;

        // Started through its own executable (the installed tool's command, or the build's apphost): the same one,
        // which finds the runtime as it did for this process.
        if (process is not null && !IsDotnet(process) && Assembly.GetEntryAssembly() == assembly)
        {
            return [process];
        }

        // Started by the dotnet host, or loaded by another program (a test host): the dotnet host with this assembly,
        // whose runtimeconfig.json and deps.json lie beside it.
        return [DotnetHost(process), assembly.Location];
    }

    /// <summary>The dotnet host: the one running this process when it is dotnet, else the one the SDK names, else the one on the PATH.</summary>
    static string DotnetHost(string? process)
    {
        if (process is not null && IsDotnet(process))
        {
            return process;
        }

        return Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
    }

    static bool IsDotnet(string path) => string.Equals(Path.GetFileNameWithoutExtension(path), "dotnet", StringComparison.OrdinalIgnoreCase);
}
