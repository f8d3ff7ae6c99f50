namespace Converge.Cli.Tests;

public sealed class MisuseTests
{
    [Theory]
    [InlineData("--db", "status")]
    [InlineData("Required command was not provided", "")]
    [InlineData("Required command was not provided", "dead-letters")]
    [InlineData("--all", "dead-letters", "retry", "--db", "app.db")]
    [InlineData("not both", "dead-letters", "discard", "--db", "app.db", "7", "--all")]
    [InlineData("--source selects", "dead-letters", "retry", "--db", "app.db", "7", "--source", "work")]
    [InlineData("--db", "dead-letters", "list")]
    [InlineData("--max must be at least 1", "dead-letters", "list", "--db", "app.db", "--max", "0")]
    [InlineData("--count", "bench", "messages")]
    [InlineData("--count must be at least 1", "bench", "messages", "--count", "0")]
    [InlineData("--rate must be a positive", "bench", "messages", "--count", "10", "--rate", "-5")]
    [InlineData("full", "bench", "messages", "--count", "10", "--durability", "sometimes")]
    [InlineData("abc", "dead-letters", "retry", "--db", "app.db", "abc")]
    [InlineData("stats", "stats")]
    [InlineData("Required command was not provided", "sagas")]
    [InlineData("'paused' is not a saga state; use running, compensating, completed or compensated", "sagas", "list", "--db", "app.db", "--state", "paused")]
    [InlineData("--version must be at least 1", "sagas", "list", "--db", "app.db", "--version", "0")]
    [InlineData("--max must be at least 1", "sagas", "list", "--db", "app.db", "--max", "0")]
    [InlineData("Required argument missing", "sagas", "show", "--db", "app.db")]
    [InlineData("--db", "sagas", "show", "tx-1")]
    [InlineData("Required argument missing", "flow", "--db", "app.db")]
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
