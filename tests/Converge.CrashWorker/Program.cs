// Converge.CrashWorker <db-path> [hang|ordered|consistency]
//
// Works the crash test's queue on the given SQLite file (with "hang", every handler call hangs, ignoring its token;
// with "ordered", the ordering test's keyed queue instead, failing on purpose; with "consistency", the read-your-writes
// test's projection, writing an event for each "write ID" line of its standard input) until it is killed, receives SIGINT/SIGTERM, or its
// standard input closes (so a worker never outlives the test process that started it). Warnings and errors
// go to standard error.
using Converge.CrashWorker;
using Converge.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

if (args.Length is not (1 or 2) || (args.Length == 2 && args[1] is not ("hang" or "ordered" or "consistency")))
{
    await Console.Error.WriteLineAsync("usage: Converge.CrashWorker <db-path> [hang|ordered|consistency]");
    return 2;
}

CrashScenario.Hang = args is [_, "hang"];
var ordered = args is [_, "ordered"];
var consistency = args is [_, "consistency"];

var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
builder.Services.Configure<ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
builder.Services.AddConverge(o =>
{
    if (consistency)
    {
        ConsistencyScenario.Configure(o, args[0], runConsumers: true);
    }
    else if (ordered)
    {
        OrderedScenario.Configure(o, args[0], runConsumers: true);
    }
    else
    {
        CrashScenario.Configure(o, args[0], runConsumers: true);
    }
});
if (CrashScenario.Hang)
{
    builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = CrashScenario.HangingShutdownTimeout);
}

using var host = builder.Build();
if (consistency)
{
    // Standard input carries its commands; its end stops the worker.
    return await ConsistencyScenario.RunAsync(host);
}

await host.StartAsync();

// A dedicated thread, not the thread pool: the read blocks for the whole life of the process.
var lifetime = host.Services.GetRequiredService<IHostApplicationLifetime>();
var inputWatcher = new Thread(() =>
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
inputWatcher.Start();

await host.WaitForShutdownAsync();
return 0;
