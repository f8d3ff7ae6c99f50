using System.Text.Json.Serialization;
using Converge.Contracts;

namespace Converge.Tests.Contracts;

/// <summary>
/// The contract snapshot as CI compares it: fields as the serializer writes them, a deterministic file, and each kind
/// of change classified as breaking or compatible.
/// </summary>
public sealed class ContractSnapshotTests
{
    public enum Channel { Web, Shop }

    public sealed record Line(string Sku, int Quantity);

    public sealed record Address(string City, string? Street);

    public sealed class Described
    {
        public required string OrderId { get; init; }

        public int Count { get; init; }

        public decimal? Discount { get; init; }

        public bool Paid { get; init; }

        public string? Note { get; init; }

        public DateTimeOffset PlacedAt { get; init; }

        public Channel Channel { get; init; }

        [JsonPropertyName("ref")]
        public Guid Reference { get; init; }

        [JsonIgnore]
        public string Secret { get; init; } = "";

        public List<Line> Lines { get; init; } = [];

        public Address? ShipTo { get; init; }

        public Dictionary<string, string> Tags { get; init; } = [];
    }

    // The same wire type, "tests.order@1", as successive commits shape it.
    public sealed record Order(string OrderId, decimal Amount, string? Note);

    public sealed record OrderWithoutNote(string OrderId, decimal Amount);

    public sealed record OrderWithTextAmount(string OrderId, string Amount, string? Note);

    public sealed record OrderWithNoteRequired(string OrderId, decimal Amount, string Note);

    public sealed record OrderWithCurrency(string OrderId, decimal Amount, string? Note, string? Currency);

    public sealed class OrderWithRequiredCurrency
    {
        public required string OrderId { get; init; }

        public decimal Amount { get; init; }

        public string? Note { get; init; }

        [JsonRequired]
        public string Currency { get; init; } = "";
    }

    public sealed record OrderV2(string OrderId, decimal Amount, string Currency);

    static ContractSnapshot Snapshot(Action<MessageTypeRegistry> register)
    {
        var messages = new MessageTypeRegistry();
        register(messages);
        return ContractSnapshot.Create(messages);
    }

    static readonly ContractSnapshot Committed = Snapshot(m => m.Register<Order>("tests.order"));

    static ContractComparison Against(Action<MessageTypeRegistry> register) => ContractSnapshot.Compare(Committed, Snapshot(register));

    [Fact]
    public void Fields_are_described_as_the_serializer_writes_them()
    {
        var contract = Assert.Single(Snapshot(m => m.Register<Described>("tests.described", 3)).Messages);

        Assert.Equal("tests.described@3", contract.Type);
        Assert.Equal(
        [
            new ContractField("channel", "number", Nullable: false, Required: false),
            new ContractField("count", "number", Nullable: false, Required: false),
            new ContractField("discount", "number", Nullable: true, Required: false),
            new ContractField("lines", "array", Nullable: false, Required: false),
            new ContractField("lines[].quantity", "number", Nullable: false, Required: false),
            new ContractField("lines[].sku", "string", Nullable: false, Required: false),
            new ContractField("note", "string", Nullable: true, Required: false),
            new ContractField("orderId", "string", Nullable: false, Required: true),
            new ContractField("paid", "boolean", Nullable: false, Required: false),
            new ContractField("placedAt", "string", Nullable: false, Required: false),
            new ContractField("ref", "string", Nullable: false, Required: false),
            new ContractField("shipTo", "object", Nullable: true, Required: false),
            new ContractField("shipTo.city", "string", Nullable: false, Required: false),
            new ContractField("shipTo.street", "string", Nullable: true, Required: false),
            new ContractField("tags", "object", Nullable: false, Required: false),
        ], contract.Fields!);
    }

    [Fact]
    public void Enums_written_as_strings_by_the_options_are_described_as_strings()
    {
        var messages = new MessageTypeRegistry().Register<Described>("tests.described");
        var options = new System.Text.Json.JsonSerializerOptions(System.Text.Json.JsonSerializerDefaults.Web) { Converters = { new JsonStringEnumConverter() } };

        var fields = Assert.Single(ContractSnapshot.Create(messages, options).Messages).Fields!;

        Assert.Equal("string", Assert.Single(fields, f => f.Name == "channel").Type);
    }

    [Fact]
    public void The_file_is_sorted_and_the_same_whatever_the_registration_order_and_reads_back_unchanged()
    {
        var first = Snapshot(m => m.Register<Order>("tests.order").Register<Line>("tests.line").Alias("legacy.order@1", "tests.order@1")).ToJson();
        var second = Snapshot(m => m.Alias("legacy.order@1", "tests.order@1").Register<Line>("tests.line").Register<Order>("tests.order")).ToJson();

        Assert.Equal(first, second);
        Assert.Equal(first, ContractSnapshot.Parse(first).ToJson());
        Assert.DoesNotContain('\r', first);
        Assert.EndsWith("}\n", first, StringComparison.Ordinal);
        Assert.Equal(["legacy.order@1", "tests.line@1", "tests.order@1"], ContractSnapshot.Parse(first).Messages.Select(m => m.Type));
        Assert.Contains("\"readsAs\": {\n        \"type\": \"tests.order@1\",\n        \"by\": \"alias\"", first, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("""{"messages":[]}""")]
    [InlineData("""{"format":"converge-contracts/1","messages":[{"fields":[]}]}""")]
    [InlineData("""{"format":"converge-contracts/1","messages":[{"type":"a@1","fields":[{"name":"x"}]}]}""")]
    public void A_file_that_is_not_a_snapshot_is_refused_with_what_is_wrong(string json) =>
        Assert.Throws<FormatException>(() => ContractSnapshot.Parse(json));

    [Fact]
    public void The_same_contracts_compare_with_no_change() =>
        Assert.Empty(Against(m => m.Register<Order>("tests.order")).Changes);

    [Fact]
    public void A_removed_field_is_breaking_and_the_fix_names_the_upcaster()
    {
        var comparison = Against(m => m.Register<OrderWithoutNote>("tests.order"));

        var change = Assert.Single(comparison.Changes);
        Assert.False(comparison.IsCompatible);
        Assert.Equal((ContractChangeKind.FieldRemoved, "tests.order@1", "note"), (change.Kind, change.Type, change.Field));
        Assert.Contains("'tests.order@2' with an upcaster from version 1", change.Fix, StringComparison.Ordinal);
    }

    [Fact]
    public void A_retyped_field_is_breaking()
    {
        var change = Assert.Single(Against(m => m.Register<OrderWithTextAmount>("tests.order")).Breaking);

        Assert.Equal((ContractChangeKind.FieldRetyped, "amount"), (change.Kind, change.Field));
        Assert.Equal("type changed from number to string", change.Description);
    }

    [Fact]
    public void A_field_that_no_longer_accepts_null_is_breaking()
    {
        var change = Assert.Single(Against(m => m.Register<OrderWithNoteRequired>("tests.order")).Breaking);

        Assert.Equal((ContractChangeKind.FieldRetyped, "note"), (change.Kind, change.Field));
        Assert.Contains("no longer accepts null", change.Description, StringComparison.Ordinal);
    }

    [Fact]
    public void An_added_optional_field_is_compatible()
    {
        var comparison = Against(m => m.Register<OrderWithCurrency>("tests.order"));

        Assert.True(comparison.IsCompatible);
        var change = Assert.Single(comparison.Changes);
        Assert.Equal((ContractChangeKind.FieldAdded, "currency"), (change.Kind, change.Field));
    }

    [Fact]
    public void Required_ness_added_to_a_field_or_with_a_new_field_is_breaking()
    {
        var comparison = Against(m => m.Register<OrderWithRequiredCurrency>("tests.order"));

        Assert.Equal(
            [(ContractChangeKind.FieldRequired, "currency"), (ContractChangeKind.FieldRequired, "orderId")],
            comparison.Breaking.Select(c => (c.Kind, c.Field!)));
    }

    [Fact]
    public void A_removed_type_with_no_alias_or_upcaster_is_breaking()
    {
        var comparison = Against(m => m.Register<Line>("tests.line"));

        var removed = Assert.Single(comparison.Breaking);
        Assert.Equal((ContractChangeKind.TypeRemoved, "tests.order@1", null), (removed.Kind, removed.Type, removed.Field));
        Assert.Contains("o.Messages.Alias(\"tests.order@1\", \"new.name@1\")", removed.Fix, StringComparison.Ordinal);
        Assert.Contains(comparison.Changes, c => c is { Kind: ContractChangeKind.TypeAdded, Type: "tests.line@1", IsBreaking: false });
    }

    [Fact]
    public void A_version_whose_class_is_gone_is_compatible_when_an_upcaster_reads_it_as_a_registered_one()
    {
        var comparison = Against(m => m
            .Register<OrderV2>("tests.order", 2)
            .Upcast("tests.order", from: 1, to: 2, v1 => { v1["currency"] = "EUR"; return v1; }));

        Assert.True(comparison.IsCompatible, string.Join("\n", comparison.Changes));
        Assert.Equal(
            [(ContractChangeKind.ReadByUpcast, "tests.order@1"), (ContractChangeKind.VersionAdded, "tests.order@2")],
            comparison.Changes.Select(c => (c.Kind, c.Type)));
        Assert.Null(comparison.Changes[1].Fix);
    }

    [Fact]
    public void A_renamed_type_is_compatible_through_an_alias()
    {
        var comparison = Against(m => m.Register<Order>("sales.order").Alias("tests.order@1", "sales.order@1"));

        Assert.True(comparison.IsCompatible, string.Join("\n", comparison.Changes));
        Assert.Contains(comparison.Changes, c => c is { Kind: ContractChangeKind.ReadByUpcast, Type: "tests.order@1" });
    }

    [Fact]
    public void A_read_path_that_ends_at_no_registered_type_is_breaking()
    {
        var comparison = Against(m => m.Register<Line>("tests.line").Upcast("tests.order", from: 1, to: 2, json => json));

        var change = Assert.Single(comparison.Breaking);
        Assert.Equal((ContractChangeKind.TypeRemoved, "tests.order@1"), (change.Kind, change.Type));
        Assert.Contains("read as tests.order@2, which ends at no registered type", change.Description, StringComparison.Ordinal);
    }

    [Fact]
    public void A_new_version_without_an_upcaster_is_compatible_with_a_note_that_old_versions_do_not_reach_it()
    {
        var comparison = Against(m => m.Register<Order>("tests.order").Register<OrderV2>("tests.order", 2));

        var change = Assert.Single(comparison.Changes);
        Assert.Equal((ContractChangeKind.VersionAdded, false), (change.Kind, change.IsBreaking));
        Assert.Contains("o.Messages.Upcast(\"tests.order\", from: 1, to: 2, json => ...)", change.Fix, StringComparison.Ordinal);
    }

    [Fact]
    public void Breaking_changes_come_first()
    {
        var comparison = ContractSnapshot.Compare(
            Snapshot(m => m.Register<Order>("tests.order").Register<Line>("tests.line")),
            Snapshot(m => m.Register<OrderWithCurrency>("tests.order").Register<Address>("tests.address")));

        Assert.Equal(
            [ContractChangeKind.TypeRemoved, ContractChangeKind.TypeAdded, ContractChangeKind.FieldAdded],
            comparison.Changes.Select(c => c.Kind));
    }
}
