using System.Text.Json;
using Converge.Runtime;

namespace Converge.Cli.Tests;

/// <summary>Runs the CLI in-process and captures what it printed.</summary>
public static class Cli
{
    public static async Task<CliResult> RunAsync(params string[] args)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        var code = await CliApp.RunAsync(args, stdout, stderr);
        return new CliResult(code, stdout.ToString(), stderr.ToString());
    }
}

public sealed record CliResult(int ExitCode, string Out, string Error)
{
    /// <summary>stdout parsed as the single JSON object the command must print with --json.</summary>
    public JsonElement Json()
    {
        using var document = JsonDocument.Parse(Out);
        Assert.Equal(JsonValueKind.Object, document.RootElement.ValueKind);
        return document.RootElement.Clone();
    }

    public override string ToString() => $"exit {ExitCode}\nstdout:\n{Out}\nstderr:\n{Error}";
}

/// <summary>A folder for one test's store, deleted afterwards.</summary>
public sealed class TempFolder : IDisposable
{
    public TempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "converge-cli-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Left for the system's temp clean-up.
        }
    }
}

public sealed record Job(int Number);

/// <summary>Lets a test break the handler, then "deploy the fix".</summary>
public sealed class FailSwitch
{
    int _handled;
    volatile bool _fail;

    public bool Fail
    {
        get => _fail;
        set => _fail = value;
    }

    public int Handled => Volatile.Read(ref _handled);

    public void CountHandled() => Interlocked.Increment(ref _handled);
}

public sealed class JobHandler(FailSwitch failSwitch) : IHandler<Job>
{
    public async Task HandleAsync(Job message, MessageContext context, CancellationToken cancellationToken)
    {
        if (failSwitch.Fail)
        {
            throw new HandlerFailureException("x", nonRetryable: true);
        }

        var transaction = await context.GetTransactionAsync(cancellationToken);
        await using var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "CREATE TABLE IF NOT EXISTS jobs (n INTEGER); INSERT INTO jobs (n) VALUES (" + message.Number + ")";
        await command.ExecuteNonQueryAsync(cancellationToken);
        failSwitch.CountHandled();
    }
}

/// <summary>
/// The tests that run a demo in worker processes. Each such run keeps both of a small machine's cores busy, and two at
/// once starve each other's saga step timeouts: they take turns.
/// </summary>
[CollectionDefinition(Name)]
public sealed class WorkerProcessRuns
{
    public const string Name = "demo runs in worker processes";
}
