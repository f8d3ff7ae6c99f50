using System.Diagnostics;
using System.Reflection;
using System.Text;

namespace Converge.EndToEnd.Tests;

/// <summary>One run of Converge.CrashWorker as a separate OS process, with its output collected.</summary>
internal sealed class WorkerProcess : IDisposable
{
    readonly Process _process;
    readonly Task _outputDone;

    WorkerProcess(Process process, int number, Task outputDone)
    {
        _process = process;
        Number = number;
        _outputDone = outputDone;
    }

    public int Number { get; }

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    /// <summary>The worker's program, from the metadata the build writes into this assembly.</summary>
    public static string WorkerPath { get; } = FindWorker();

    /// <summary>Starts worker <paramref name="number"/> on <paramref name="databasePath"/>; its output lines go to <paramref name="log"/>.</summary>
    public static WorkerProcess Start(string databasePath, int number, WorkerLog log) => Start(WorkerPath, [databasePath], number, log);

    /// <summary>
    /// Starts <paramref name="program"/> (an assembly the dotnet host runs) with <paramref name="arguments"/> as
    /// worker <paramref name="number"/>; its output lines go to <paramref name="log"/>. Closing its standard input
    /// must ask it to stop (see <see cref="StopAsync"/>).
    /// </summary>
    public static WorkerProcess Start(string program, IEnumerable<string> arguments, int number, WorkerLog log)
    {
        var start = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(program);
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        var process = new Process { StartInfo = start };
        if (!process.Start())
        {
            throw new InvalidOperationException($"Could not start the worker {program}.");
        }

        var outputDone = Task.WhenAll(Copy(process.StandardOutput, number, log), Copy(process.StandardError, number, log));
        return new WorkerProcess(process, number, outputDone);
    }

    /// <summary>
    /// Copies <paramref name="reader"/> to the log on a dedicated thread until the worker closes it. Not on the
    /// thread pool: a pipe read there blocks a pool thread, and with two per worker on a small machine the pool
    /// starves, which delays this test's polling and makes it miss its kill points.
    /// </summary>
    static Task Copy(StreamReader reader, int number, WorkerLog log)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                while (reader.ReadLine() is { } line)
                {
                    log.Add(number, line);
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
            Name = $"crash worker {number} output",
        };
        thread.Start();
        return done.Task;
    }

    /// <summary>Kills the worker with SIGKILL (what <see cref="Process.Kill()"/> sends on Unix) and waits until it is gone.</summary>
    public async Task KillAsync(TimeSpan timeout)
    {
        _process.Kill();
        await WaitForExitAsync(timeout);
    }

    /// <summary>Writes <paramref name="line"/> to the worker's standard input.</summary>
    public async Task SendLineAsync(string line)
    {
        await _process.StandardInput.WriteLineAsync(line);
        await _process.StandardInput.FlushAsync();
    }

    /// <summary>Closes the worker's standard input, which asks it to stop gracefully, and waits for it to exit.</summary>
    public async Task<int> StopAsync(TimeSpan timeout)
    {
        _process.StandardInput.Close();
        await WaitForExitAsync(timeout);
        return _process.ExitCode;
    }

    async Task WaitForExitAsync(TimeSpan timeout)
    {
        using var cancel = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cancel.Token);
        await _outputDone.WaitAsync(cancel.Token);
    }

    /// <summary>
    /// Polls <paramref name="progress"/> until it reaches <paramref name="threshold"/> (or <paramref name="total"/>)
    /// and returns what it saw; fails the test, with the worker's last output, if this worker exits on its own or
    /// makes no such progress within <paramref name="timeout"/>.
    /// </summary>
    public async Task<long> WaitForProgressAsync(Func<long> progress, long threshold, long total, string what, WorkerLog log, TimeSpan timeout, TimeSpan poll)
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            var seen = progress();
            if (seen >= threshold || seen >= total)
            {
                return seen;
            }

            if (HasExited)
            {
                Assert.Fail($"Worker {Number} exited on its own (exit code {ExitCode}) at {seen} {what}, before reaching {threshold}.\n{log.Tail()}");
            }

            if (waited.Elapsed > timeout)
            {
                Assert.Fail($"Worker {Number} reached only {seen} of {threshold} {what} in {timeout.TotalSeconds} s.\n{log.Tail()}");
            }

            await Task.Delay(poll);
        }
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill();
                _process.WaitForExit(TimeSpan.FromSeconds(10));
            }
        }
        catch (InvalidOperationException)
        {
            // Never started or already gone.
        }

        _process.Dispose();
    }

    static string FindWorker()
    {
        var path = typeof(WorkerProcess).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .SingleOrDefault(a => a.Key == "CrashWorkerPath")?.Value;
        if (string.IsNullOrEmpty(path) || !File.Exists(path))
        {
            throw new InvalidOperationException($"The crash worker was not found at '{path}'. Build tests/Converge.EndToEnd.Tests, which builds tests/Converge.CrashWorker and records its path.");
        }

        return path;
    }

    /// <summary>The dotnet host: the one running this test when the CLI says so, else the one on the PATH.</summary>
    static string DotnetHost()
    {
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host))
        {
            return host;
        }

        var current = Environment.ProcessPath;
        return current is not null && Path.GetFileNameWithoutExtension(current) == "dotnet" ? current : "dotnet";
    }
}

/// <summary>Everything the workers wrote, labelled by worker, for failure messages.</summary>
internal sealed class WorkerLog
{
    readonly Lock _gate = new();
    readonly StringBuilder _text = new();
    readonly List<(int Worker, string Line)> _lines = [];
    readonly List<(Func<int, string, bool> Match, TaskCompletionSource<string> Found)> _waiters = [];

    public void Add(int worker, string? line)
    {
        if (line is null)
        {
            return;
        }

        List<(TaskCompletionSource<string> Found, string Line)> found = [];
        lock (_gate)
        {
            _text.Append("[worker ").Append(worker).Append("] ").AppendLine(line);
            _lines.Add((worker, line));
            foreach (var waiter in _waiters.Where(w => w.Match(worker, line)).ToList())
            {
                _waiters.Remove(waiter);
                found.Add((waiter.Found, line));
            }
        }

        foreach (var (waiter, text) in found)
        {
            waiter.TrySetResult(text);
        }
    }

    /// <summary>
    /// The first line worker <paramref name="worker"/> wrote (already, or from now on) that <paramref name="match"/>
    /// accepts; fails the test with the workers' output if none comes within <paramref name="timeout"/>.
    /// </summary>
    public async Task<string> WaitForLineAsync(int worker, Func<string, bool> match, TimeSpan timeout, string what)
    {
        TaskCompletionSource<string> found = new(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            foreach (var (from, line) in _lines)
            {
                if (from == worker && match(line))
                {
                    return line;
                }
            }

            _waiters.Add(((from, line) => from == worker && match(line), found));
        }

        try
        {
            return await found.Task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            Assert.Fail($"Worker {worker} did not write {what} within {timeout.TotalSeconds} s.\n{Tail()}");
            throw;
        }
    }

    /// <summary>How many lines contain <paramref name="text"/>.</summary>
    public int Count(string text)
    {
        lock (_gate)
        {
            return _text.ToString().Split('\n').Count(line => line.Contains(text, StringComparison.Ordinal));
        }
    }

    /// <summary>The last <paramref name="max"/> characters, or a note that the workers wrote nothing.</summary>
    /// <summary>Everything worker <paramref name="worker"/> wrote, for a failure where another worker's lines fill the tail.</summary>
    public string Of(int worker)
    {
        lock (_gate)
        {
            var lines = _lines.Where(l => l.Worker == worker).Select(l => l.Line).ToList();
            return lines.Count == 0 ? $"(worker {worker} wrote nothing)" : string.Join(Environment.NewLine, lines);
        }
    }

    public string Tail(int max = 6000)
    {
        lock (_gate)
        {
            if (_text.Length == 0)
            {
                return "(the workers wrote nothing to stdout or stderr)";
            }

            return _text.Length <= max ? _text.ToString() : "..." + _text.ToString(_text.Length - max, max);
        }
    }
}
