using System.Diagnostics;

namespace Converge.RabbitMq.Tests;

/// <summary>
/// A RabbitMQ of one test's own, started with <c>scripts/services.sh</c> in a throw-away folder, so the test can stop
/// the broker and start it again without disturbing the broker the other tests share.
/// </summary>
internal sealed class PrivateBroker : IAsyncDisposable
{
    static readonly TimeSpan CommandTimeout = TimeSpan.FromMinutes(3);
    readonly string _folder;

    PrivateBroker(string folder, Uri uri)
    {
        _folder = folder;
        Uri = uri;
    }

    /// <summary>The broker's address.</summary>
    public Uri Uri { get; }

    /// <summary>Starts a broker on a free loopback port; RabbitMQ must be installed (the test command installs it).</summary>
    public static async Task<PrivateBroker> StartAsync()
    {
        var folder = Path.Combine(Path.GetTempPath(), "converge-broker-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            await RunAsync(new Dictionary<string, string> { ["CONVERGE_SERVICES"] = "rabbitmq" }, "start", folder);
            var line = (await File.ReadAllLinesAsync(Path.Combine(folder, "services.env")))
                .First(l => l.StartsWith($"export {TestBroker.Variable}=", StringComparison.Ordinal));
            return new PrivateBroker(folder, new Uri(line[(line.IndexOf('=', StringComparison.Ordinal) + 1)..].Trim('"')));
        }
        catch
        {
            await StopQuietlyAsync(folder);
            throw;
        }
    }

    /// <summary>Stops the broker (its node and data stay): clients lose their connections and cannot connect.</summary>
    public Task StopAppAsync() => RunAsync(null, "rabbitmqctl", _folder, "stop_app");

    /// <summary>Starts the stopped broker again; its durable queues come back with the messages they held.</summary>
    public Task StartAppAsync() => RunAsync(null, "rabbitmqctl", _folder, "start_app");

    /// <summary>
    /// What the broker holds (its queues with their state and counts, its consumers and channels) and the end of its own
    /// log, for a failure to say what the broker went through.
    /// </summary>
    public async Task<string> DescribeAsync(int logLines = 60)
    {
        var text = new System.Text.StringBuilder();
        foreach (var command in new[]
        {
            new[] { "list_queues", "name", "type", "state", "messages_ready", "messages_unacknowledged", "consumers" },
            ["list_consumers"],
            ["list_channels", "name", "consumer_count", "messages_unacknowledged", "confirm"],
            ["list_connections", "name", "state"],
        })
        {
            try
            {
                text.AppendLine($"rabbitmqctl {string.Join(' ', command)}:").AppendLine(await RunAsync(null, ["rabbitmqctl", _folder, .. command]));
            }
            catch (Exception exception) when (exception is InvalidOperationException or TimeoutException)
            {
                text.AppendLine($"rabbitmqctl {command[0]} failed: {exception.Message}");
            }
        }

        var logs = Path.Combine(_folder, "rabbitmq", "log");
        var file = Directory.Exists(logs) ? Directory.GetFiles(logs, "*.log").FirstOrDefault(f => !f.EndsWith("_upgrade.log", StringComparison.Ordinal)) : null;
        text.AppendLine("the broker's log:").Append(file is null ? "(none)" : string.Join(Environment.NewLine, File.ReadLines(file).TakeLast(logLines)));
        return text.ToString();
    }

    public async ValueTask DisposeAsync() => await StopQuietlyAsync(_folder);

    static async Task StopQuietlyAsync(string folder)
    {
        try
        {
            await RunAsync(null, "stop", folder);
        }
        finally
        {
            if (Directory.Exists(folder))
            {
                Directory.Delete(folder, recursive: true);
            }
        }
    }

    /// <summary>Runs scripts/services.sh with <paramref name="arguments"/>; returns what it printed.</summary>
    static async Task<string> RunAsync(IReadOnlyDictionary<string, string>? environment, params string[] arguments)
    {
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(RepositoryRoot(), "scripts", "services.sh"));
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[name] = value;
        }

        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(CommandTimeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"scripts/services.sh {string.Join(' ', arguments)} did not finish within {CommandTimeout}.");
        }

        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"scripts/services.sh {string.Join(' ', arguments)} failed with exit code {process.ExitCode}:\n{await output}\n{await errors}");
        }

        return await output;
    }

    static string RepositoryRoot()
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, "scripts", "services.sh")))
            {
                return folder.FullName;
            }
        }

        throw new InvalidOperationException($"No scripts/services.sh above {AppContext.BaseDirectory}: run the tests from the repository.");
    }
}
