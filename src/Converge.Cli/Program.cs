using Converge.Cli;

// A demo's worker process runs as this same program (see DemoWorkers), outside the command line's parser.
if (await DemoWorkers.TryServeAsync(args) is { } workerExit)
{
    return workerExit;
}

return await CliApp.RunAsync(args, Console.Out, Console.Error);
