namespace Converge.Cli.Tests;

public sealed class MisuseTests
{
    [Theory]
    [InlineData("--db", "status")]
    [InlineData("Pass the store: --db app.db (SQLite) or --postgres", "dashboard")]
    [InlineData("--port must be between 0 and 65535", "dashboard", "--db", "app.db", "--port", "70000")]
    [InlineData("Cannot parse argument 'x' for option '--port'", "dashboard", "--db", "app.db", "--port", "x")]
    [InlineData("Required command was not provided", "")]
    [InlineData("Required command was not provided", "dead-letters")]
    [InlineData("--all", "dead-letters", "retry", "--db", "app.db")]
    [InlineData("not several", "dead-letters", "discard", "--db", "app.db", "7", "--all")]
    [InlineData("--source selects", "dead-letters", "retry", "--db", "app.db", "7", "--source", "work")]
    [InlineData("--db", "dead-letters", "list")]
    [InlineData("--max must be at least 1", "dead-letters", "list", "--db", "app.db", "--max", "0")]
    [InlineData("--count", "bench", "messages")]
    [InlineData("--count must be at least 1", "bench", "messages", "--count", "0")]
    [InlineData("--rate must be a positive", "bench", "messages", "--count", "10", "--rate", "-5")]
    [InlineData("full", "bench", "messages", "--count", "10", "--durability", "sometimes")]
    [InlineData("abc", "dead-letters", "retry", "--db", "app.db", "abc")]
    [InlineData("Cannot parse argument 'abc' for option '--orders'", "demo", "shop", "--orders", "abc")]
    [InlineData("Cannot parse argument 'x' for option '--fail-rate'", "demo", "shop", "--fail-rate", "x")]
    [InlineData("Cannot parse argument 'soon' for option '--deadline'", "demo", "shop", "--deadline", "soon")]
    [InlineData("Cannot parse argument 'abc' for option '--accounts'", "demo", "month-close", "--accounts", "abc")]
    [InlineData("Cannot parse argument 'abc' for option '--max'", "sagas", "list", "--db", "app.db", "--max", "abc")]
    [InlineData("Cannot parse argument 'zz' for option '--max'", "jobs", "list", "--db", "app.db", "--max", "zz")]
    [InlineData("Cannot parse argument 'zz' for option '--count'", "bench", "messages", "--count", "zz")]
    [InlineData("stats", "stats")]
    [InlineData("Required command was not provided", "sagas")]
    [InlineData("'paused' is not a saga state; use running, compensating, completed, compensated or stuck", "sagas", "list", "--db", "app.db", "--state", "paused")]
    [InlineData("Required argument missing", "sagas", "resume", "--db", "app.db")]
    [InlineData("--db", "sagas", "resume", "tx-1")]
    [InlineData("Pass one store, not both", "sagas", "resume", "tx-1", "--postgres", "Host=127.0.0.1", "--db", "app.db")]
    [InlineData("--version must be at least 1", "sagas", "list", "--db", "app.db", "--version", "0")]
    [InlineData("--max must be at least 1", "sagas", "list", "--db", "app.db", "--max", "0")]
    [InlineData("Required argument missing", "sagas", "show", "--db", "app.db")]
    [InlineData("--db", "sagas", "show", "tx-1")]
    [InlineData("Required argument missing", "flow", "--db", "app.db")]
    [InlineData("Required command was not provided", "jobs")]
    [InlineData("--db", "jobs", "list")]
    [InlineData("--state 'paused' is not a job state; use scheduled, enqueued, processing, succeeded, dead or cancelled", "jobs", "list", "--db", "app.db", "--state", "paused")]
    [InlineData("--max must be at least 1", "jobs", "list", "--db", "app.db", "--max", "0")]
    [InlineData("'abc' is not a job id", "jobs", "show", "abc", "--db", "app.db")]
    [InlineData("'42' is not a job id", "jobs", "retry", "42", "--db", "app.db")]
    [InlineData("Required argument missing", "jobs", "cancel", "--db", "app.db")]
    [InlineData("--db", "jobs", "retry", "0195f3a2-7c1e-7b3d-9a4f-2c8e5d6b1a90")]
    [InlineData("Required argument missing", "jobs", "batch", "--db", "app.db")]
    [InlineData("--count", "bench", "jobs")]
    [InlineData("--concurrency must be between 1 and 1024", "bench", "jobs", "--count", "10", "--concurrency", "0")]
    [InlineData("Pass the store: --db app.db (SQLite) or --postgres \"Host=...;Database=...\" (PostgreSQL).", "jobs", "list")]
    [InlineData("Pass the store: --db app.db (SQLite) or --postgres", "dead-letters", "retry", "7")]
    [InlineData("Pass the store: --db app.db (SQLite) or --postgres", "status", "--schema", "app")]
    [InlineData("Pass one store, not both: --db FILE (SQLite) or --postgres CONN (PostgreSQL).", "status", "--db", "app.db", "--postgres", "Host=127.0.0.1")]
    [InlineData("Pass one store, not both", "jobs", "show", "0195f3a2-7c1e-7b3d-9a4f-2c8e5d6b1a90", "--postgres", "Host=127.0.0.1", "--db", "app.db")]
    [InlineData("--schema is for a PostgreSQL store (--postgres)", "sagas", "list", "--db", "app.db", "--schema", "app")]
    [InlineData("--table-prefix is for a SQLite store (--db)", "flow", "tx-1", "--postgres", "Host=127.0.0.1", "--table-prefix", "app_")]
    [InlineData("--batch-size must be between 1 and 10000", "bench", "jobs", "--count", "10", "--batch-size", "0")]
    public async Task Misuse_exits_2_and_prints_what_to_do(string expected, params string[] args)
    {
        using var temp = new TempFolder();
        var arguments = args.Where(a => a.Length > 0).Select(a => a == "app.db" ? temp.File(a) : a).ToArray();

        var result = await Cli.RunAsync(arguments);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains(expected, result.Error, StringComparison.Ordinal);
        Assert.Contains("How to use 'converge", result.Error, StringComparison.Ordinal);
        Assert.Contains("Usage:", result.Error, StringComparison.Ordinal);
        Assert.Equal("", result.Out);
        Assert.Empty(Directory.EnumerateFileSystemEntries(temp.Path));
    }

    [Fact]
    public async Task Help_goes_to_stdout_and_succeeds()
    {
        var result = await Cli.RunAsync("dead-letters", "retry", "--help");

        Assert.Equal(0, result.ExitCode);
        Assert.Contains("--all", result.Out, StringComparison.Ordinal);
        Assert.Equal("", result.Error);
    }
}
