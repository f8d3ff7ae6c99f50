using System.Text.Json;
using Converge.Hosting;
using Converge.Samples;
using Converge.Samples.Shop;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

// dotnet run --project samples/Shop -- demo [orders] [fail-rate] [orchestrated|choreographed]
//   runs the demo in one process and prints its summary.
// dotnet run --project samples/Shop -- serve (DB | --postgres CONN [--schema NAME]) [--rabbitmq-env VAR] [all|orders|customers|payments|shipping]
//                                      [fail-rate seed] [--ledger FILE] [--watch-stdin]
//   runs some of the services against a shared store until stopped (one process per service scales out): a SQLite
//   file, or a PostgreSQL schema (default converge_shop; --postgres-env VAR reads the connection string from an
//   environment variable). With a fail rate, the demo's fault plan applies here too. The payment provider's ledger
//   is FILE (default: beside DB). With --watch-stdin it also stops when its standard input closes.
if (args is ["serve", ..])
{
    var arguments = args.Skip(1).ToList();
    var ledgerOption = DemoStore.TakeOption(arguments, "--ledger");
    var watchInput = arguments.Remove("--watch-stdin");
    var store = DemoStore.FromArguments(arguments, "converge_shop", out var error);
    if (store is null || (ledgerOption is null && store.IsPostgreSql))
    {
        Console.Error.WriteLine(error ?? "With --postgres, name the payment provider's ledger: --ledger FILE.");
        return 2;
    }

    var ledger = ledgerOption ?? ShopSetup.LedgerPath(store.Path!);
    var services = ShopSetup.Parse(arguments.Count > 0 ? arguments[0] : "all");
    var failRate = arguments.Count > 1 ? double.Parse(arguments[1], System.Globalization.CultureInfo.InvariantCulture) : 0;
    var seed = arguments.Count > 2 ? int.Parse(arguments[2], System.Globalization.CultureInfo.InvariantCulture) : 42;
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
    Console.Out.Flush();
    await host.WaitForShutdownAsync();
    return 0;
}

if (args is not [] and not ["demo", ..])
{
    Console.Error.WriteLine("usage: shop demo [orders] [fail-rate] [orchestrated|choreographed] | shop serve (DB | --postgres CONN [--schema NAME]) [--rabbitmq-env VAR] [all|orders|customers|payments|shipping] [fail-rate seed] [--ledger FILE]");
    return 2;
}

var report = await ShopDemo.RunAsync(
    new ShopDemoSettings
    {
        Orders = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 500,
        FailRate = args.Length > 2 ? double.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 0.2,
        Style = args.Length > 3 && args[3] == "choreographed" ? ShopStyle.Choreographed : ShopStyle.Orchestrated,
        Processes = args.Contains("--processes"),
    },
    Console.Error,
    CancellationToken.None);
Console.WriteLine(JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
return report.Violations == 0 && report.InFlight == 0 && !report.DeadlineReached ? 0 : 1;
