using System.Text.Json;
using Converge.Samples.Identity;

// dotnet run --project samples/Identity -- [requests] [seed]
//   runs the identity demo on a temporary SQLite file and prints its summary as JSON.
var report = await IdentityDemo.RunAsync(
    new IdentityDemoSettings
    {
        Requests = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 200,
        Seed = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 42,
#pragma warning disable RS0030 // The sample's composition root: simulated latencies run on the wall clock.
        Clock = TimeProvider.System,
#pragma warning restore RS0030
    },
    Console.Error,
    CancellationToken.None);
Console.WriteLine(JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
return report.Passed ? 0 : 1;
