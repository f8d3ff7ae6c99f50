using System.Text.Json;
using System.Text.Json.Nodes;
using Converge.Samples.Shop;

namespace Converge.Cli.Tests;

/// <summary>
/// <c>converge contracts snapshot|check</c> on the Shop sample, as CI runs it: the committed snapshot passes, a planted
/// breaking change fails with exit 1 and its fix, misuse exits 2.
/// </summary>
public sealed class ContractCommandTests
{
    static string ShopAssembly => typeof(ShopContracts).Assembly.Location;

    static string CommittedSnapshot => Path.Combine(RepositoryRoot(), "samples", "Shop", "contracts.json");

    static string RepositoryRoot()
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, "Converge.slnx")))
            {
                return folder.FullName;
            }
        }

        throw new InvalidOperationException("The tests run outside the repository: Converge.slnx not found above " + AppContext.BaseDirectory);
    }

    /// <summary>The committed snapshot with <paramref name="plant"/> applied, written to <paramref name="temp"/>.</summary>
    static string Planted(TempFolder temp, Action<Dictionary<string, JsonObject>> plant)
    {
        var file = JsonNode.Parse(File.ReadAllText(CommittedSnapshot))!.AsObject();
        var messages = file["messages"]!.AsArray().Select(m => m!.AsObject()).ToDictionary(m => (string)m["type"]!);
        plant(messages);
        file["messages"] = new JsonArray([.. messages.Values.Select(m => (JsonNode)m.DeepClone())]);
        var path = temp.File("contracts.json");
        File.WriteAllText(path, file.ToJsonString());
        return path;
    }

    static JsonObject Field(string name, string type) =>
        new() { ["name"] = name, ["type"] = type, ["nullable"] = false, ["required"] = false };

    [Fact]
    public async Task The_committed_shop_snapshot_is_what_snapshot_prints_now()
    {
        var result = await Cli.RunAsync("contracts", "snapshot", "--assembly", ShopAssembly);

        Assert.Equal(0, result.ExitCode);
        Assert.Equal(File.ReadAllText(CommittedSnapshot), result.Out);
    }

    [Fact]
    public async Task Check_passes_on_the_committed_shop_snapshot()
    {
        var result = await Cli.RunAsync("contracts", "check", "--assembly", ShopAssembly, "--snapshot", CommittedSnapshot);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal($"Compatible with {CommittedSnapshot}.\n", result.Out.ReplaceLineEndings("\n"));
        Assert.Empty(result.Error);
    }

    [Fact]
    public async Task Check_fails_with_exit_1_on_a_planted_breaking_change_and_prints_each_with_its_fix()
    {
        using var temp = new TempFolder();
        var snapshot = Planted(temp, messages =>
        {
            messages["shop.order-created@1"]["fields"]!.AsArray().Add(Field("currency", "string"));
            messages["shop.charge-payment@1"]["fields"]!.AsArray().Single(f => (string)f!["name"]! == "amount")!["type"] = "string";
            messages["shop.order-refunded@1"] = new JsonObject { ["type"] = "shop.order-refunded@1", ["fields"] = new JsonArray(Field("orderId", "string")) };
        });

        var result = await Cli.RunAsync("contracts", "check", "--assembly", ShopAssembly, "--snapshot", snapshot);

        Assert.True(result.ExitCode == 1, result.ToString());
        var lines = result.Out.ReplaceLineEndings("\n").Split('\n');
        Assert.Equal($"Breaking changes against {snapshot}: 3", lines[0]);
        Assert.Equal("  x shop.charge-payment@1 field 'amount': type changed from string to number", lines[1]);
        Assert.StartsWith("    fix: Keep the type string, or register the new shape as 'shop.charge-payment@2' with an upcaster from version 1", lines[2], StringComparison.Ordinal);
        Assert.Equal("  x shop.order-created@1 field 'currency': field removed (was string)", lines[3]);
        Assert.StartsWith("    fix: Keep the field", lines[4], StringComparison.Ordinal);
        Assert.StartsWith("  x shop.order-refunded@1: no longer registered, and no alias or upcaster reads it", lines[5], StringComparison.Ordinal);
        Assert.Contains("o.Messages.Alias(\"shop.order-refunded@1\", \"new.name@1\")", lines[6], StringComparison.Ordinal);
        Assert.Contains("error: 3 breaking contract change(s)", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Check_with_json_prints_one_object_with_the_breaking_changes()
    {
        using var temp = new TempFolder();
        var snapshot = Planted(temp, messages => messages["shop.order-created@1"]["fields"]!.AsArray().Add(Field("currency", "string")));

        var result = await Cli.RunAsync("contracts", "check", "--assembly", ShopAssembly, "--snapshot", snapshot, "--json");

        Assert.True(result.ExitCode == 1, result.ToString());
        var json = result.Json();
        Assert.False(json.GetProperty("compatible").GetBoolean());
        var change = Assert.Single(json.GetProperty("breaking").EnumerateArray());
        Assert.Equal(("field_removed", "shop.order-created@1", "currency"),
            (change.GetProperty("kind").GetString(), change.GetProperty("type").GetString(), change.GetProperty("field").GetString()));
        Assert.Equal(JsonValueKind.String, change.GetProperty("fix").ValueKind);
        Assert.Empty(json.GetProperty("compatible_changes").EnumerateArray());
    }

    [Fact]
    public async Task A_compatible_change_passes_and_says_the_snapshot_can_be_updated()
    {
        using var temp = new TempFolder();
        var snapshot = Planted(temp, messages => messages.Remove("shop.order-cancelled@1"));

        var result = await Cli.RunAsync("contracts", "check", "--assembly", ShopAssembly, "--snapshot", snapshot);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("Compatible changes not yet in the snapshot: 1", result.Out, StringComparison.Ordinal);
        Assert.Contains("  + shop.order-cancelled@1: new type", result.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Snapshot_out_writes_the_file_that_check_then_passes()
    {
        using var temp = new TempFolder();
        var file = temp.File("written.json");

        var written = await Cli.RunAsync("contracts", "snapshot", "--assembly", ShopAssembly, "--out", file);
        var check = await Cli.RunAsync("contracts", "check", "--assembly", ShopAssembly, "--snapshot", file);

        Assert.True(written.ExitCode == 0, written.ToString());
        Assert.Contains("Wrote the contracts of 22 message type(s) from Converge.Samples.Shop.ShopContracts", written.Out, StringComparison.Ordinal);
        Assert.Equal(File.ReadAllText(CommittedSnapshot), File.ReadAllText(file));
        Assert.True(check.ExitCode == 0, check.ToString());
    }

    [Fact]
    public async Task A_missing_snapshot_exits_2_and_says_how_to_write_it()
    {
        using var temp = new TempFolder();

        var result = await Cli.RunAsync("contracts", "check", "--assembly", ShopAssembly, "--snapshot", temp.File("none.json"));

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("does not exist. Write it once with 'converge contracts snapshot --assembly PATH --out", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_file_that_is_not_a_snapshot_exits_2()
    {
        using var temp = new TempFolder();
        var file = temp.File("other.json");
        File.WriteAllText(file, """{"name":"something else"}""");

        var result = await Cli.RunAsync("contracts", "check", "--assembly", ShopAssembly, "--snapshot", file);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("is not a contract snapshot", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_missing_assembly_exits_2()
    {
        using var temp = new TempFolder();

        var result = await Cli.RunAsync("contracts", "snapshot", "--assembly", temp.File("App.dll"));

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("does not exist. Build the application first", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_assembly_with_no_contracts_class_exits_2_and_names_the_interface()
    {
        var result = await Cli.RunAsync("contracts", "check", "--assembly", typeof(Sqlite.SqliteStoreOptions).Assembly.Location, "--snapshot", CommittedSnapshot);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("has no public class implementing Converge.Contracts.IConvergeContracts", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Check_without_a_snapshot_option_is_misuse()
    {
        var result = await Cli.RunAsync("contracts", "check", "--assembly", ShopAssembly);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("--snapshot", result.Error, StringComparison.Ordinal);
    }
}
