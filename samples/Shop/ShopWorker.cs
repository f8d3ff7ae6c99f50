using System.Globalization;
using Converge.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.Samples.Shop;

/// <summary>
/// The Shop's <c>serve</c> program: some of its services against a shared store until stopped. The sample's own
/// program runs it for <c>shop serve ...</c>, and so does an application that carries the sample (the
/// <c>converge</c> tool runs its demo's worker processes as itself, so that they load with its dependencies).
/// </summary>
public static class ShopWorker
{
    /// <summary>
    /// Serves until stopped (Ctrl+C, or the end of standard input with <c>--watch-stdin</c>). Arguments, after
    /// <c>serve</c>: <c>(DB | --postgres CONN | --postgres-env VAR) [--schema NAME] [--rabbitmq-env VAR]
    /// [all|orders|customers|payments|shipping] [fail-rate seed] [--ledger FILE] [--watch-stdin]</c>. It prints a line
    /// starting with <c>serving</c> once it serves.
    /// </summary>
    /// <returns>The exit code: 0 when stopped, 2 for arguments it cannot use.</returns>
    public static async Task<int> ServeAsync(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var arguments = args.ToList();
        var ledgerOption = DemoStore.TakeOption(arguments, "--ledger");
        var watchInput = arguments.Remove("--watch-stdin");
        var store = DemoStore.FromArguments(arguments, "converge_shop", out var error);
        if (store is null || (ledgerOption is null && store.IsPostgreSql))
        {
            await Console.Error.WriteLineAsync(error ?? "With --postgres, name the payment provider's ledger: --ledger FILE.");
            return 2;
        }

        var ledger = ledgerOption ?? ShopSetup.LedgerPath(store.Path!);
        var services = ShopSetup.Parse(arguments.Count > 0 ? arguments[0] : "all");
        var failRate = arguments.Count > 1 ? double.Parse(arguments[1], CultureInfo.InvariantCulture) : 0;
        var seed = arguments.Count > 2 ? int.Parse(arguments[2], CultureInfo.InvariantCulture) : 42;
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        ShopSetup.AddServices(builder.Services, ledger);
        builder.Services.AddConverge(o =>
        {
            store.Use(o);
            ShopDemo.ConfigureDemo(o, services, failRate, seed);
        });
        using var host = builder.Build();
        await host.StartAsync();
        await ShopSetup.CreateTablesAsync(host.Services.GetRequiredService<Converge.Storage.IMessageStore>(), CancellationToken.None);
        if (watchInput)
        {
            DemoWorker.StopWhenInputCloses(host.Services.GetRequiredService<IHostApplicationLifetime>());
        }

        Console.WriteLine($"serving {services} on {store.Describe()}; Ctrl+C stops");
        await Console.Out.FlushAsync();
        await host.WaitForShutdownAsync();
        return 0;
    }
}
