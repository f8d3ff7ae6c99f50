using System.Globalization;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

namespace Converge.Samples.Billing;

/// <summary>
/// The Billing sample's <c>serve</c> program: works the billing queues on a shared store until stopped. The sample's
/// own program runs it for <c>billing serve ...</c>, and so does an application that carries the sample (the
/// <c>converge</c> tool runs its demo's worker processes as itself, so that they load with its dependencies).
/// </summary>
public static class BillingWorker
{
    /// <summary>
    /// Serves until stopped (Ctrl+C, or the end of standard input with <c>--watch-stdin</c>). Arguments, after
    /// <c>serve</c>: <c>(DB | --postgres CONN | --postgres-env VAR) [--schema NAME] [--rabbitmq-env VAR] [--sim-dir DIR]
    /// [latency-ms] [seed] [--log-level LEVEL] [--watch-stdin]</c>. It prints a line starting with <c>serving</c> once
    /// it serves.
    /// </summary>
    /// <returns>The exit code: 0 when stopped, 2 for arguments it cannot use.</returns>
    public static async Task<int> ServeAsync(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var arguments = args.ToList();
        var folder = DemoStore.TakeOption(arguments, "--sim-dir");
        var watchInput = arguments.Remove("--watch-stdin");
        var logLevel = Enum.Parse<LogLevel>(DemoStore.TakeOption(arguments, "--log-level") ?? nameof(LogLevel.Warning), ignoreCase: true);
        var store = DemoStore.FromArguments(arguments, "converge_billing", out var error);
        if (store is null || (folder is null && store.IsPostgreSql))
        {
            await Console.Error.WriteLineAsync(error ?? "With --postgres, name the folder of the simulated services' files: --sim-dir DIR.");
            return 2;
        }

        var billing = new BillingOptions
        {
            ProviderLatency = TimeSpan.FromMilliseconds(arguments.Count > 0 ? double.Parse(arguments[0], CultureInfo.InvariantCulture) : 20),
            Seed = arguments.Count > 1 ? int.Parse(arguments[1], CultureInfo.InvariantCulture) : 42,
        };
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.SetMinimumLevel(logLevel);
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
        builder.Services.Configure<ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        builder.Services.AddBilling(store.Use, folder is null ? BillingFiles.Beside(store.Path!) : BillingFiles.In(folder), billing, MonthCloseDemo.Tune);
        using var host = builder.Build();
        await host.StartAsync();
        await BillingTables.CreateAsync(host.Services.GetRequiredService<IMessageStore>(), CancellationToken.None);
        if (watchInput)
        {
            DemoWorker.StopWhenInputCloses(host.Services.GetRequiredService<IHostApplicationLifetime>());
        }

        Console.WriteLine($"serving the month close on {store.Describe()}; Ctrl+C stops");
        await Console.Out.FlushAsync();
        await host.WaitForShutdownAsync();
        return 0;
    }
}
