using System.Text.Json;
using Converge.Samples.Reprocess;

// dotnet run --project samples/Reprocess -- [orders] [seed]
//   runs the reprocess demo on a temporary SQLite file and prints its summary as JSON.
var report = await ReprocessDemo.RunAsync(
    new ReprocessDemoSettings
    {
        Orders = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 20_000,
        Seed = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 42,
#pragma warning disable RS0030 // The sample's composition root: the writer's and readers' pauses run on the wall clock.
        Clock = TimeProvider.System,
#pragma warning restore RS0030
    },
    Console.Error,
    CancellationToken.None);
Console.WriteLine(JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
return report.Passed ? 0 : 1;
