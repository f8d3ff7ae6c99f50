using System.Diagnostics;
using Microsoft.Extensions.Hosting;

namespace Converge.Samples;

/// <summary>
/// A sample's <c>serve</c> program running in a process of its own, started by a demo that shares the store with
/// it. It is started with <c>--watch-stdin</c>, so it also stops when the demo that started it goes away.
/// Compiled into each sample (this file is linked, not referenced).
/// </summary>
internal sealed class DemoWorker : IAsyncDisposable
{
    /// <summary>How long a worker may take from its start until it serves.</summary>
    static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    readonly Process _process;
    readonly Task _outputDone;

    DemoWorker(string name, Process process, Task outputDone)
    {
        Name = name;
        _process = process;
        _outputDone = outputDone;
    }

    public string Name { get; }

    public int Id => _process.Id;

    /// <summary>
    /// The command line that starts a worker, before its <c>serve</c> arguments: <paramref name="given"/> when there is
    /// one (an application that carries the sample, such as the <c>converge</c> tool, runs its workers as itself, so
    /// they load with its dependencies), else the dotnet host running <paramref name="sample"/>, the sample's own
    /// program, which finds its dependencies through the deps.json its build wrote beside it.
    /// </summary>
    public static IReadOnlyList<string> Command(IReadOnlyList<string>? given, System.Reflection.Assembly sample)
    {
        ArgumentNullException.ThrowIfNull(sample);
        if (given is { Count: > 0 })
        {
            return given;
        }

        return [DotnetHost(), sample.Location];
    }

    /// <summary>
    /// Starts <paramref name="command"/> (a program and the arguments before the worker's own; see
    /// <see cref="Command"/>) with <paramref name="arguments"/> and waits until it prints its <c>serving</c> line.
    /// Everything else it prints goes to <paramref name="log"/>, labelled with <paramref name="name"/>.
    /// </summary>
    public static async Task<DemoWorker> StartAsync(
        string name, IReadOnlyList<string> command, IEnumerable<string> arguments, DemoStore store, Action<string> log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(command);
        var start = new ProcessStartInfo(command[0])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in command.Skip(1).Concat(arguments))
        {
            start.ArgumentList.Add(argument);
        }

        start.ArgumentList.Add("--watch-stdin");
        store.AddWorkerEnvironment(start.Environment);
        var process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start the {name} process.");
        var serving = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var outputDone = Task.WhenAll(
            Copy(process.StandardOutput, line =>
            {
                if (!line.StartsWith("serving", StringComparison.Ordinal) || !serving.TrySetResult())
                {
                    log($"[{name}] {line}");
                }
            }),
            Copy(process.StandardError, line => log($"[{name}] {line}")));
        var worker = new DemoWorker(name, process, outputDone);
        try
        {
            await Task.WhenAny(serving.Task, outputDone).WaitAsync(StartTimeout, cancellationToken);
            if (!serving.Task.IsCompleted)
            {
                await process.WaitForExitAsync(cancellationToken);
                throw new InvalidOperationException($"The {name} process exited before serving (exit code {process.ExitCode}); its output is above.");
            }

            return worker;
        }
        catch (TimeoutException)
        {
            await worker.DisposeAsync();
            throw new InvalidOperationException($"The {name} process did not start serving within {StartTimeout.TotalSeconds:0} s; its output is above.");
        }
        catch
        {
            await worker.DisposeAsync();
            throw;
        }
    }

    /// <summary>Kills the worker with SIGKILL (what <see cref="Process.Kill()"/> sends on Unix) and returns its exit code.</summary>
    public async Task<int> KillAsync(CancellationToken cancellationToken)
    {
        _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync(cancellationToken);
        await _outputDone.WaitAsync(cancellationToken);
        return _process.ExitCode;
    }

    /// <summary>Closes the worker's standard input, which asks it to stop; kills it if it has not stopped within <paramref name="timeout"/>.</summary>
    public async Task StopAsync(TimeSpan timeout)
    {
        if (_process.HasExited)
        {
            return;
        }

        try
        {
            _process.StandardInput.Close();
            using var wait = new CancellationTokenSource(timeout);
            await _process.WaitForExitAsync(wait.Token);
        }
        catch (Exception exception) when (exception is OperationCanceledException or IOException)
        {
            // Not stopping, or its input already broke: it ends the hard way below.
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync(CancellationToken.None);
            }
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }

        _process.Dispose();
    }

    /// <summary>
    /// Stops <paramref name="host"/> when this process's standard input closes, so a worker started by a demo or a
    /// test never outlives it. A dedicated thread, not the thread pool: the read blocks for the life of the process.
    /// </summary>
    public static void StopWhenInputCloses(IHostApplicationLifetime lifetime)
    {
        ArgumentNullException.ThrowIfNull(lifetime);
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

    /// <summary>
    /// Hands each line of <paramref name="reader"/> to <paramref name="line"/> on a dedicated thread until the worker
    /// closes it. Not on the thread pool: a pipe read there blocks a pool thread, and with two per worker on a small
    /// machine the pool starves.
    /// </summary>
    static Task Copy(StreamReader reader, Action<string> line)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                while (reader.ReadLine() is { } text)
                {
                    line(text);
                }
            }
            catch (IOException)
            {
                // The pipe broke with the process.
            }
            finally
            {
                done.SetResult();
            }
        })
        {
            IsBackground = true,
            Name = "demo worker output",
        };
        thread.Start();
        return done.Task;
    }

    /// <summary>The dotnet host: the one running this process when it is dotnet, else the one on the PATH.</summary>
    public static string DotnetHost()
    {
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host))
        {
            return host;
        }

        var current = Environment.ProcessPath;
        return current is not null && System.IO.Path.GetFileNameWithoutExtension(current) == "dotnet" ? current : "dotnet";
    }
}
