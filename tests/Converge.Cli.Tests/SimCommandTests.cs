namespace Converge.Cli.Tests;

/// <summary><c>converge sim</c>: seeds that pass, a planted bug found with a replay command that repeats it, and misuse.</summary>
public sealed class SimCommandTests
{
    [Fact]
    public async Task Seeds_of_every_scenario_pass_and_are_reported()
    {
        var result = await Cli.RunAsync("sim", "--scenario", "all", "--seeds", "30", "--from", "500", "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var report = result.Json();
        Assert.Equal(90, report.GetProperty("seeds").GetInt32());
        Assert.Equal(0, report.GetProperty("failed").GetInt32());
        foreach (var scenario in report.GetProperty("scenarios").EnumerateArray())
        {
            Assert.Equal(30, scenario.GetProperty("passed").GetInt32());
            Assert.True(scenario.GetProperty("crashes").GetInt32() > 0, result.ToString());
            Assert.True(scenario.GetProperty("store_operations").GetInt64() > 0, result.ToString());
        }
    }

    [Fact]
    public async Task A_planted_bug_fails_its_seeds_and_each_prints_a_replay_that_repeats_it()
    {
        var result = await Cli.RunAsync("sim", "--scenario", "shop", "--seeds", "20", "--plant", "effect-outside-transaction");

        Assert.True(result.ExitCode == 1, result.ToString());
        var replay = result.Out.Split('\n').Select(l => l.Trim()).First(l => l.StartsWith("replay: converge sim ", StringComparison.Ordinal))["replay: converge ".Length..];
        Assert.EndsWith("--verbose --plant effect-outside-transaction", replay, StringComparison.Ordinal);

        var runs = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            var again = await Cli.RunAsync(replay.Split(' '));
            Assert.True(again.ExitCode == 1, again.ToString());
            Assert.Contains(": effects ", again.Out, StringComparison.Ordinal);

            // The run itself, operation by operation; the timings of the summary differ.
            runs.Add(string.Join('\n', again.Out.Split('\n').Where(l => l.StartsWith("shop ", StringComparison.Ordinal))));
        }

        Assert.True(runs[0].Split('\n').Length > 100, runs[0]);
        Assert.Equal(runs[0], runs[1]);
        Assert.Equal(runs[0], runs[2]);
    }

    [Theory]
    [InlineData("Option '--scenario' is required", "sim")]
    [InlineData("Argument 'checkout' not recognized", "sim", "--scenario", "checkout")]
    [InlineData("--seeds must be 1 or more", "sim", "--scenario", "shop", "--seeds", "0")]
    [InlineData("--from must be 0 or more", "sim", "--scenario", "shop", "--from", "-3")]
    [InlineData("Cannot parse argument 'abc' for option '--from'", "sim", "--scenario", "shop", "--from", "abc")]
    [InlineData("Cannot parse argument 'x' for option '--seeds'", "sim", "--scenario", "shop", "--seeds", "x")]
    [InlineData("--parallel must be 1 or more", "sim", "--scenario", "shop", "--parallel", "0")]
    [InlineData("Argument 'lost-reply' not recognized", "sim", "--scenario", "shop", "--plant", "lost-reply")]
    public async Task Misuse_says_what_to_do_and_exits_2(string expected, params string[] args)
    {
        var result = await Cli.RunAsync(args);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains(expected, result.Error, StringComparison.Ordinal);
    }
}
