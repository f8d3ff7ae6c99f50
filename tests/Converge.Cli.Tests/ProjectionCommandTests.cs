using Converge.Projections;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Testing;
using Converge.Testing.Conformance;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Cli.Tests;

/// <summary>
/// <c>converge projections</c> on a running application: a second version is listed while it builds, compared with
/// the live one, refused a switch while paused, switched to, and the old one rebuilt and dropped; misuse exits 2.
/// </summary>
public sealed class ProjectionCommandTests
{
    [Fact]
    public async Task A_new_version_is_listed_compared_switched_to_and_the_old_one_dropped()
    {
        using var temp = new TempFolder();
        var db = temp.File("projections.db");
        await using (var first = await StartAsync(db, withSecond: false))
        {
            foreach (var key in new[] { "a", "a", "b" })
            {
                await first.Bus.PublishAsync("s-" + key, new ConformanceEvent(key));
            }

            var catalog = first.Services.GetRequiredService<ProjectionCatalog>();
            await Eventually.UntilAsync(async () => (await catalog.ListAsync(CancellationToken.None)).SingleOrDefault() is { State: ProjectionState.Live, Position: 3 }, "the projection catalogue to reach the expected state");
        }

        var paused = await Cli.RunAsync("groups", "pause", "projection:counts@2", "--create", "--db", db);
        Assert.True(paused.ExitCode == 0, paused.ToString());
        await using var host = await StartAsync(db, withSecond: true);
        var projections = host.Services.GetRequiredService<ProjectionCatalog>();
        await Eventually.UntilAsync(async () => (await projections.ListAsync(CancellationToken.None)).Count == 2, "the projection catalogue to reach the expected state");

        var listed = await Cli.RunAsync("projections", "list", "--db", db, "--json");
        Assert.True(listed.ExitCode == 0, listed.ToString());
        var versions = listed.Json().GetProperty("versions").EnumerateArray().Select(v => (v.GetProperty("version").GetInt32(), v.GetProperty("state").GetString())).ToList();
        Assert.Equal([(1, "live"), (2, "building")], versions);

        var refused = await Cli.RunAsync("projections", "switch", "counts", "--to", "2", "--db", db);
        Assert.True(refused.ExitCode == 1, refused.ToString());
        Assert.Contains("still building", refused.Error, StringComparison.Ordinal);

        Assert.Equal(0, (await Cli.RunAsync("groups", "resume", "projection:counts@2", "--db", db)).ExitCode);
        await Eventually.UntilAsync(async () => (await projections.ListAsync(CancellationToken.None)).Single(v => v.Version == 2) is { State: ProjectionState.Built, Position: 3 }, "the projection catalogue to reach the expected state");

        var status = await Cli.RunAsync("projections", "status", "counts", "--db", db);
        Assert.True(status.ExitCode == 0, status.ToString());
        Assert.Contains("version 1 is live; readers read \"converge_counts_counts\"", status.Out, StringComparison.Ordinal);

        var compared = await Cli.RunAsync("projections", "compare", "counts", "--db", db, "--json");
        Assert.True(compared.ExitCode == 0, compared.ToString());
        var table = Assert.Single(compared.Json().GetProperty("tables").EnumerateArray());
        Assert.Equal((2L, 2L), (table.GetProperty("from_rows").GetInt64(), table.GetProperty("to_rows").GetInt64()));
        Assert.Contains(table.GetProperty("only_in_to").EnumerateArray(), row => row.GetString()!.Contains("n=4", StringComparison.Ordinal));
        Assert.Contains("differ", (await Cli.RunAsync("projections", "compare", "counts", "--db", db)).Out, StringComparison.Ordinal);

        var switched = await Cli.RunAsync("projections", "switch", "counts", "--to", "2", "--wait", "30", "--db", db);
        Assert.True(switched.ExitCode == 0, switched.ToString());
        Assert.Contains("now read version 2 (version 1 is retired", switched.Out, StringComparison.Ordinal);
        Assert.Equal(2, await projections.GetLiveVersionAsync("counts", CancellationToken.None));

        var dropLive = await Cli.RunAsync("projections", "drop", "counts", "--version", "2", "--db", db);
        Assert.True(dropLive.ExitCode == 1, dropLive.ToString());
        Assert.Contains("is live", dropLive.Error, StringComparison.Ordinal);

        var rebuilt = await Cli.RunAsync("projections", "rebuild", "counts", "--version", "1", "--db", db);
        Assert.True(rebuilt.ExitCode == 0, rebuilt.ToString());
        await Eventually.UntilAsync(async () => (await projections.ListAsync(CancellationToken.None)).Single(v => v.Version == 1) is { State: ProjectionState.Built, Position: 3 }, "the projection catalogue to reach the expected state");

        var dropped = await Cli.RunAsync("projections", "drop", "counts", "--version", "1", "--db", db);
        Assert.True(dropped.ExitCode == 0, dropped.ToString());
        var after = await Cli.RunAsync("projections", "list", "--db", db);
        Assert.Contains("dropped", after.Out, StringComparison.Ordinal);
        Assert.DoesNotContain("projection:counts@1", (await Cli.RunAsync("groups", "list", "--db", db)).Out, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(new[] { "projections", "switch", "counts" }, "--to")]
    [InlineData(new[] { "projections", "drop", "counts", "--version", "0" }, "--version must be 1 or more")]
    [InlineData(new[] { "projections", "compare", "counts", "--sample", "-1" }, "--sample must be between 0 and 10000")]
    [InlineData(new[] { "projections", "compare", "nothing" }, "has no live version to compare")]
    public async Task Misuse_exits_2_with_what_to_do(string[] args, string expected)
    {
        using var temp = new TempFolder();
        var db = temp.File("empty.db");
        await using (var host = await ConvergeTestHost.StartAsync(o => o.UseSqlite(db)))
        {
        }

        var result = await Cli.RunAsync([.. args, "--db", db]);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains(expected, result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unknown_projection_or_version_fails_with_what_there_is()
    {
        using var temp = new TempFolder();
        var db = temp.File("empty.db");
        await using (var host = await ConvergeTestHost.StartAsync(o => o.UseSqlite(db)))
        {
        }

        var status = await Cli.RunAsync("projections", "status", "counts", "--db", db);
        var rebuild = await Cli.RunAsync("projections", "rebuild", "counts", "--version", "3", "--db", db);

        Assert.True(status.ExitCode == 1, status.ToString());
        Assert.Contains("no projection 'counts'", status.Error, StringComparison.Ordinal);
        Assert.True(rebuild.ExitCode == 1, rebuild.ToString());
        Assert.Contains("has no version 3", rebuild.Error, StringComparison.Ordinal);
    }

    static Task<ConvergeTestHost> StartAsync(string db, bool withSecond) => ConvergeTestHost.StartAsync(o =>
    {
        o.UseSqlite(db);
        o.PollInterval = TimeSpan.FromMilliseconds(20);
        o.Messages.Register<ConformanceEvent>("conformance.event");
        o.AddProjection<ProjectionConformanceTests.CountsProjection>("counts", 1);
        if (withSecond)
        {
            o.AddProjection<ProjectionConformanceTests.DoubledCountsProjection>("counts", 2);
        }
    });
}
