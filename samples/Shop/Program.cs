using System.Text.Json;
using Converge.Samples.Shop;

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
    return await ShopWorker.ServeAsync(args[1..]);
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
