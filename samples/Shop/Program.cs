using System.Text.Json;
using Converge.Hosting;
using Converge.Samples.Shop;
using Converge.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

// dotnet run --project samples/Shop -- demo [orders] [fail-rate] [orchestrated|choreographed]
//   runs the demo in one process and prints its summary.
// dotnet run --project samples/Shop -- serve DB [all|orders|customers|payments|shipping] [fail-rate seed]
//   runs some of the services against a shared database until stopped (one process per service scales out);
//   with a fail rate, the demo's fault plan applies here too.
if (args is ["serve", var db, ..])
{
    var services = ShopSetup.Parse(args.Length > 2 ? args[2] : "all");
    var failRate = args.Length > 3 ? double.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture) : 0;
    var seed = args.Length > 4 ? int.Parse(args[4], System.Globalization.CultureInfo.InvariantCulture) : 42;
    var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
    ShopSetup.AddServices(builder.Services, db);
    builder.Services.AddConverge(o =>
    {
        o.UseSqlite(db);
        ShopDemo.ConfigureDemo(o, services, failRate, seed);
    });
    using var host = builder.Build();
    await host.StartAsync();
    await ShopSetup.CreateTablesAsync(host.Services.GetRequiredService<Converge.Storage.IMessageStore>(), CancellationToken.None);
    Console.WriteLine($"serving {services} on {db}; Ctrl+C stops");
    Console.Out.Flush();
    await host.WaitForShutdownAsync();
    return 0;
}

if (args is not [] and not ["demo", ..])
{
    Console.Error.WriteLine("usage: shop demo [orders] [fail-rate] [orchestrated|choreographed] | shop serve DB [all|orders|customers|payments|shipping]");
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
return report.Violations == 0 && report.InFlight == 0 ? 0 : 1;
