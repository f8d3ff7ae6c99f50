using System.Globalization;
using System.Text.Json;
using Converge.Samples.Billing;

// dotnet run --project samples/Billing -- demo [accounts] [latency-ms] [seed] [--db FILE]
//   closes a month for that many accounts in one process and prints the checked outcome; on an existing FILE
//   it resumes the close that was running there.
// dotnet run --project samples/Billing -- serve (DB | --postgres CONN [--schema NAME]) [--rabbitmq-env VAR] [--sim-dir DIR] [latency-ms] [seed]
//                                          [--log-level warning|error|...] [--watch-stdin]
//   works the billing queues on the store until stopped (several processes may share it): a SQLite file, or a
//   PostgreSQL schema (default converge_billing; --postgres-env VAR reads the connection string from an environment
//   variable, which keeps a password out of process listings). The provider's ledger and the sent mail are in DIR,
//   or beside DB. The close is triggered elsewhere (the demo, a test, or the monthly schedule). With --watch-stdin
//   it also stops when its standard input closes, so a worker started by a test or a demo never outlives it.
if (args is ["serve", ..])
{
    return await BillingWorker.ServeAsync(args[1..]);
}

if (args is not [] and not ["demo", ..])
{
    Console.Error.WriteLine("usage: billing demo [accounts] [latency-ms] [seed] [--db FILE] | billing serve (DB | --postgres CONN [--schema NAME]) [--rabbitmq-env VAR] [--sim-dir DIR] [latency-ms] [seed] [--log-level LEVEL] [--watch-stdin]");
    return 2;
}

string? path = null;
var numbers = new List<string>();
for (var i = 1; i < args.Length; i++)
{
    if (args[i] == "--db" && i + 1 < args.Length)
    {
        path = args[++i];
    }
    else
    {
        numbers.Add(args[i]);
    }
}

var lastShown = DateTimeOffset.MinValue;
var report = await MonthCloseDemo.RunAsync(
    new MonthCloseSettings
    {
        Accounts = numbers.Count > 0 ? long.Parse(numbers[0], CultureInfo.InvariantCulture) : 10_000,
        DbPath = path,
        Billing = new BillingOptions
        {
            ProviderLatency = TimeSpan.FromMilliseconds(numbers.Count > 1 ? double.Parse(numbers[1], CultureInfo.InvariantCulture) : 20),
            Seed = numbers.Count > 2 ? int.Parse(numbers[2], CultureInfo.InvariantCulture) : 42,
        },
    },
    p =>
    {
#pragma warning disable RS0030 // The program's entry: progress lines are paced by the wall clock.
        var now = TimeProvider.System.GetUtcNow();
#pragma warning restore RS0030
        if (p.Note is not null || now - lastShown > TimeSpan.FromSeconds(1) || p.Done == p.Total)
        {
            lastShown = now;
            var batch = p.Batch is { } b ? $" (batch: {b.Succeeded + b.Failed}/{b.Total} jobs done, {b.Pending} pending)" : "";
            Console.Error.WriteLine($"{p.Stage}: {p.Done}/{p.Total}{batch}{(p.Note is null ? "" : " - " + p.Note)}");
        }
    },
    CancellationToken.None);
Console.WriteLine(JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
return report.Violations == 0 && report.Finished ? 0 : 1;
