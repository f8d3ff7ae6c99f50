using System.Globalization;
using System.Text.Json;
using Converge.Samples.Billing;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

// dotnet run --project samples/Billing -- demo [accounts] [latency-ms] [seed] [--db FILE]
//   closes a month for that many accounts in one process and prints the checked outcome; on an existing FILE
//   it resumes the close that was running there.
// dotnet run --project samples/Billing -- serve DB [latency-ms] [seed] [--watch-stdin]
//   works the billing queues on DB until stopped (several processes may share the file). The close is triggered
//   elsewhere (the demo, a test, or the monthly schedule). With --watch-stdin it also stops when its standard
//   input closes, so a worker started by a test never outlives it.
if (args is ["serve", var db, ..])
{
    var rest = args.Skip(2).Where(a => !a.StartsWith("--", StringComparison.Ordinal)).ToArray();
    var billing = new BillingOptions
    {
        ProviderLatency = TimeSpan.FromMilliseconds(rest.Length > 0 ? double.Parse(rest[0], CultureInfo.InvariantCulture) : 20),
        Seed = rest.Length > 1 ? int.Parse(rest[1], CultureInfo.InvariantCulture) : 42,
    };
    var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
    builder.Logging.SetMinimumLevel(LogLevel.Warning);
    builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
    builder.Services.Configure<ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
    builder.Services.AddBilling(db, billing, MonthCloseDemo.Tune);
    using var host = builder.Build();
    await host.StartAsync();
    await BillingTables.CreateAsync(host.Services.GetRequiredService<IMessageStore>(), CancellationToken.None);
    if (args.Contains("--watch-stdin"))
    {
        var lifetime = host.Services.GetRequiredService<IHostApplicationLifetime>();
        var watcher = new Thread(() =>
        {
            using var input = Console.OpenStandardInput();
            var buffer = new byte[64];
            while (input.Read(buffer) > 0)
            {
                // Input is ignored; only its end matters.
            }

            lifetime.StopApplication();
        })
        {
            IsBackground = true,
            Name = "stdin watcher",
        };
        watcher.Start();
    }

    Console.WriteLine($"serving the month close on {db}; Ctrl+C stops");
    Console.Out.Flush();
    await host.WaitForShutdownAsync();
    return 0;
}

if (args is not [] and not ["demo", ..])
{
    Console.Error.WriteLine("usage: billing demo [accounts] [latency-ms] [seed] [--db FILE] | billing serve DB [latency-ms] [seed] [--watch-stdin]");
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
        var now = TimeProvider.System.GetUtcNow();
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
