using System.Buffers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization.Metadata;

namespace Converge.Contracts;

/// <summary>
/// The message contracts of an application as the serializer sees them: every registered <c>name@version</c> with
/// its fields, and every older name that is read as a newer one through an alias or an upcaster. Written as a
/// deterministic JSON file (sorted, indented, <c>\n</c> line ends) that a repository commits, so that
/// <see cref="Compare"/> (and <c>converge contracts check</c> in CI) can tell a breaking change from a compatible one.
/// </summary>
public sealed class ContractSnapshot
{
    /// <summary>The format written in the file's <c>format</c> property; <see cref="Parse"/> reads only this one.</summary>
    public const string FormatName = "converge-contracts/1";

    ContractSnapshot(IReadOnlyList<MessageContract> messages) => Messages = messages;

    /// <summary>The contracts, sorted by type name (ordinal).</summary>
    public IReadOnlyList<MessageContract> Messages { get; }

    /// <summary>
    /// Describes what <paramref name="messages"/> registers. Field names and types are those
    /// <paramref name="serializerOptions"/> (default <see cref="JsonSerializerDefaults.Web"/>, as the default serializer
    /// uses) reads and writes; nested objects are described field by field (<c>address.city</c>, <c>lines[].sku</c>).
    /// </summary>
    public static ContractSnapshot Create(MessageTypeRegistry messages, JsonSerializerOptions? serializerOptions = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var options = new JsonSerializerOptions(serializerOptions ?? new JsonSerializerOptions(JsonSerializerDefaults.Web));
        options.MakeReadOnly(populateMissingResolver: true);
        var names = messages.All.Keys.Union(messages.ReadSteps.Keys, StringComparer.Ordinal).Order(StringComparer.Ordinal);
        var contracts = new List<MessageContract>();
        foreach (var name in names)
        {
            var fields = messages.All.TryGetValue(name, out var type) ? ContractFields.Describe(type, options) : null;
            var step = messages.ReadSteps.GetValueOrDefault(name);
            contracts.Add(new MessageContract(name, fields, step?.To, step?.Kind));
        }

        return new ContractSnapshot(contracts);
    }

    /// <summary>Reads a snapshot written by <see cref="ToJson"/>.</summary>
    /// <exception cref="FormatException">The text is not JSON, or not a snapshot of format <see cref="FormatName"/>; the message says what is wrong.</exception>
    public static ContractSnapshot Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(json);
        }
        catch (JsonException exception)
        {
            throw new FormatException($"The contract snapshot is not valid JSON: {exception.Message}", exception);
        }

        if (root is not JsonObject file || Text(file["format"], "", optional: true) != FormatName || file["messages"] is not JsonArray list)
        {
            throw new FormatException($"The file is not a contract snapshot: it needs \"format\": \"{FormatName}\" and a \"messages\" array, as 'converge contracts snapshot' writes.");
        }

        var contracts = new List<MessageContract>();
        foreach (var item in list)
        {
            var type = Text(item?["type"], "a message's \"type\"")!;
            List<ContractField>? fields = null;
            if (item!["fields"] is JsonArray fieldList)
            {
                fields = [.. fieldList.Select(f => new ContractField(
                    Text(f?["name"], $"the \"name\" of a field of '{type}'")!,
                    Text(f?["type"], $"the \"type\" of a field of '{type}'")!,
                    f?["nullable"]?.GetValueKind() == JsonValueKind.True,
                    f?["required"]?.GetValueKind() == JsonValueKind.True))];
            }

            var readsAs = item["readsAs"];
            contracts.Add(new MessageContract(type, fields, Text(readsAs?["type"], $"the \"readsAs\" type of '{type}'", optional: readsAs is null), Text(readsAs?["by"], "", optional: true)));
        }

        return new ContractSnapshot([.. contracts.OrderBy(c => c.Type, StringComparer.Ordinal)]);
    }

    static string? Text(JsonNode? node, string what, bool optional = false) =>
        node?.GetValueKind() == JsonValueKind.String ? node.GetValue<string>()
        : optional && node is null ? null
        : throw new FormatException($"The contract snapshot lacks {what}, or it is not a string.");

    /// <summary>The snapshot as the committed file holds it: indented JSON, sorted, ending with a line break.</summary>
    public string ToJson()
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, NewLine = "\n" }))
        {
            writer.WriteStartObject();
            writer.WriteString("format", FormatName);
            writer.WriteStartArray("messages");
            foreach (var contract in Messages)
            {
                writer.WriteStartObject();
                writer.WriteString("type", contract.Type);
                if (contract.ReadsAs is not null)
                {
                    writer.WriteStartObject("readsAs");
                    writer.WriteString("type", contract.ReadsAs);
                    writer.WriteString("by", contract.ReadsAsBy);
                    writer.WriteEndObject();
                }

                if (contract.Fields is not null)
                {
                    writer.WriteStartArray("fields");
                    foreach (var field in contract.Fields)
                    {
                        writer.WriteStartObject();
                        writer.WriteString("name", field.Name);
                        writer.WriteString("type", field.Type);
                        writer.WriteBoolean("nullable", field.Nullable);
                        writer.WriteBoolean("required", field.Required);
                        writer.WriteEndObject();
                    }

                    writer.WriteEndArray();
                }

                writer.WriteEndObject();
            }

            writer.WriteEndArray();
            writer.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan) + "\n";
    }

    /// <summary>
    /// Compares the <paramref name="committed"/> snapshot with the <paramref name="current"/> one. Breaking: a type
    /// name that is no longer registered and not read as a registered one (through an alias or an upcaster); a field
    /// removed, retyped, made non-nullable or newly required. Compatible: added types, versions, read paths and
    /// optional fields, a field made nullable or optional, and an old version whose class is gone but which an
    /// upcaster or alias reads as a registered type (its fields are then the upcaster's business, not compared).
    /// </summary>
    public static ContractComparison Compare(ContractSnapshot committed, ContractSnapshot current) =>
        ContractComparer.Compare(committed, current);
}

/// <summary>One message type name in a <see cref="ContractSnapshot"/>.</summary>
/// <param name="Type">The stored name with its version, for example <c>shop.order-placed@2</c>.</param>
/// <param name="Fields">The fields, sorted by name, when a CLR type is registered under <paramref name="Type"/>; <c>null</c> for a name that is only read as another (an old version or an old name).</param>
/// <param name="ReadsAs">The name a message stored as <paramref name="Type"/> is read as next, when an alias or an upcaster says so.</param>
/// <param name="ReadsAsBy">How: <c>alias</c>, <c>upcaster</c> (between CLR types) or <c>json-upcaster</c>.</param>
public sealed record MessageContract(string Type, IReadOnlyList<ContractField>? Fields, string? ReadsAs, string? ReadsAsBy)
{
    /// <summary>Whether a CLR type is registered under <see cref="Type"/>.</summary>
    public bool IsRegistered => Fields is not null;
}

/// <summary>One JSON property of a message as the serializer writes it.</summary>
/// <param name="Name">The property name, dotted for nested objects (<c>address.city</c>) and with <c>[]</c> for array items (<c>lines[].sku</c>).</param>
/// <param name="Type">The JSON type: <c>string</c>, <c>number</c>, <c>boolean</c>, <c>object</c>, <c>array</c> or <c>any</c>.</param>
/// <param name="Nullable">Whether the member accepts <c>null</c> (a nullable annotation or <see cref="Nullable{T}"/>).</param>
/// <param name="Required">Whether deserialization fails without it (<c>required</c> members and <c>[JsonRequired]</c>).</param>
public sealed record ContractField(string Name, string Type, bool Nullable, bool Required)
{
    /// <summary>The type as people read it: <c>string</c>, or <c>string | null</c> when nullable.</summary>
    public string Display => Nullable ? Type + " | null" : Type;
}

/// <summary>Reads the fields of a CLR type from the serializer's contract (<see cref="JsonTypeInfo"/>).</summary>
internal static class ContractFields
{
    public static IReadOnlyList<ContractField> Describe(Type type, JsonSerializerOptions options)
    {
        var fields = new List<ContractField>();
        var info = options.GetTypeInfo(type);
        if (info.Kind == JsonTypeInfoKind.Object)
        {
            AddFields(info, prefix: "", options, fields, [type]);
        }

        return [.. fields.OrderBy(f => f.Name, StringComparer.Ordinal)];
    }

    static void AddFields(JsonTypeInfo info, string prefix, JsonSerializerOptions options, List<ContractField> fields, HashSet<Type> enclosing)
    {
        foreach (var property in info.Properties)
        {
            // An ignored property ([JsonIgnore]) stays in the contract with neither getter nor setter.
            if (property.IsExtensionData || (property.Get is null && property.Set is null))
            {
                continue;
            }

            var name = prefix + property.Name;
            var (kind, nullableValue) = Kind(property.PropertyType, options);
            fields.Add(new ContractField(name, kind, nullableValue || property.IsGetNullable || property.IsSetNullable, property.IsRequired));
            AddNested(Underlying(property.PropertyType), name, options, fields, enclosing);
        }
    }

    /// <summary>Describes the fields of an object, or of the objects an array holds, under <paramref name="name"/>.</summary>
    static void AddNested(Type type, string name, JsonSerializerOptions options, List<ContractField> fields, HashSet<Type> enclosing)
    {
        if (IsLeaf(type) || !enclosing.Add(type))
        {
            // A type that contains itself is described once, at its outermost place.
            return;
        }

        var info = options.GetTypeInfo(type);
        if (info.Kind == JsonTypeInfoKind.Object)
        {
            AddFields(info, name + ".", options, fields, enclosing);
        }
        else if (info.Kind == JsonTypeInfoKind.Enumerable && info.ElementType is { } element)
        {
            element = Underlying(element);
            if (!IsLeaf(element) && options.GetTypeInfo(element).Kind == JsonTypeInfoKind.Object && enclosing.Add(element))
            {
                AddFields(options.GetTypeInfo(element), name + "[].", options, fields, enclosing);
                enclosing.Remove(element);
            }
        }

        enclosing.Remove(type);
    }

    static Type Underlying(Type type) => System.Nullable.GetUnderlyingType(type) ?? type;

    static bool IsLeaf(Type type) => type.IsPrimitive || type.IsEnum || LeafKinds.ContainsKey(type);

    /// <summary>The JSON type of values of <paramref name="type"/>, and whether it is <see cref="Nullable{T}"/>.</summary>
    static (string Kind, bool Nullable) Kind(Type type, JsonSerializerOptions options)
    {
        if (System.Nullable.GetUnderlyingType(type) is { } underlying)
        {
            return (Kind(underlying, options).Kind, true);
        }

        if (LeafKinds.TryGetValue(type, out var leaf))
        {
            return (leaf, false);
        }

        if (type.IsEnum)
        {
            // Numbers by default; strings when the options carry a string enum converter.
            var written = JsonSerializer.Serialize(Activator.CreateInstance(type), type, options);
            return (written.StartsWith('"') ? "string" : "number", false);
        }

        if (type.IsPrimitive)
        {
            return ("number", false);
        }

        return options.GetTypeInfo(type).Kind switch
        {
            JsonTypeInfoKind.Object or JsonTypeInfoKind.Dictionary => ("object", false),
            JsonTypeInfoKind.Enumerable => ("array", false),
            _ => ("any", false),
        };
    }

    static readonly Dictionary<Type, string> LeafKinds = new()
    {
        [typeof(string)] = "string",
        [typeof(char)] = "string",
        [typeof(Guid)] = "string",
        [typeof(DateTime)] = "string",
        [typeof(DateTimeOffset)] = "string",
        [typeof(DateOnly)] = "string",
        [typeof(TimeOnly)] = "string",
        [typeof(TimeSpan)] = "string",
        [typeof(Uri)] = "string",
        [typeof(Version)] = "string",
        [typeof(byte[])] = "string",
        [typeof(bool)] = "boolean",
        [typeof(decimal)] = "number",
        [typeof(Half)] = "number",
        [typeof(Int128)] = "number",
        [typeof(UInt128)] = "number",
        [typeof(object)] = "any",
        [typeof(JsonElement)] = "any",
        [typeof(JsonNode)] = "any",
        [typeof(JsonObject)] = "object",
        [typeof(JsonArray)] = "array",
        [typeof(JsonDocument)] = "any",
    };
}
