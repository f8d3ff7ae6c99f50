using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Converge.Contracts;

/// <summary>One step from a stored type name to the next one it is read as: an alias, or an upcaster.</summary>
internal abstract class ReadStep(string from, string to)
{
    public string From { get; } = from;

    public string To { get; } = to;

    /// <summary><c>alias</c>, <c>upcaster</c> (between CLR types) or <c>json-upcaster</c>; written in contract snapshots.</summary>
    public abstract string Kind { get; }

    public abstract void Apply(ref ReadState state, IMessageSerializer serializer);
}

/// <summary>A body on its way along a read path: still the stored bytes (or bytes an upcaster wrote), or an object.</summary>
internal struct ReadState
{
    public ReadOnlyMemory<byte> Bytes;
    public object? Value;
    public Type? ValueType;

    public readonly ReadOnlyMemory<byte> ToBytes(IMessageSerializer serializer) =>
        Value is null ? Bytes : serializer.Serialize(Value, ValueType!);

    public readonly object ToObject(Type type, IMessageSerializer serializer) =>
        Value is not null && type.IsInstanceOfType(Value) ? Value : serializer.Deserialize(ToBytes(serializer).Span, type);
}

internal sealed class AliasStep(string from, string to) : ReadStep(from, to)
{
    public override string Kind => "alias";

    public override void Apply(ref ReadState state, IMessageSerializer serializer)
    {
        // The body is the same; only the name it is read under changes.
    }
}

internal sealed class TypedUpcastStep(string from, string to, Type fromType, Type toType, Func<object, object> upcast) : ReadStep(from, to)
{
    public override string Kind => "upcaster";

    public override void Apply(ref ReadState state, IMessageSerializer serializer)
    {
        var old = state.ToObject(fromType, serializer);
        var upgraded = upcast(old) ?? throw new InvalidOperationException($"The upcaster from '{From}' to '{To}' returned null.");
        state = new ReadState { Value = upgraded, ValueType = toType };
    }
}

internal sealed class JsonUpcastStep(string from, string to, Func<JsonObject, JsonObject> upcast) : ReadStep(from, to)
{
    public override string Kind => "json-upcaster";

    public override void Apply(ref ReadState state, IMessageSerializer serializer)
    {
        var bytes = state.ToBytes(serializer);
        var old = JsonNode.Parse(bytes.Span) as JsonObject
            ?? throw new JsonException($"A '{From}' body is not a JSON object, so the JSON upcaster to '{To}' cannot read it.");
        var upgraded = upcast(old) ?? throw new InvalidOperationException($"The JSON upcaster from '{From}' to '{To}' returned null.");
        var buffer = new ArrayBufferWriter<byte>(bytes.Length + 64);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            upgraded.WriteTo(writer);
        }

        state = new ReadState { Bytes = buffer.WrittenMemory };
    }
}

/// <summary>
/// How a stored type name is read as a handled one: the steps to apply, in order (none when the names are equal).
/// </summary>
internal readonly struct ReadPath
{
    readonly ReadStep[]? _steps;

    public ReadPath(string target, ReadStep[] steps)
    {
        Target = target;
        _steps = steps;
    }

    /// <summary>The type name the body is read as at the end.</summary>
    public string Target { get; }

    public IReadOnlyList<ReadStep> Steps => _steps ?? [];

    /// <summary>Deserializes <paramref name="body"/> as <paramref name="type"/>, the CLR type of <see cref="Target"/>, upcasting it on the way.</summary>
    public object Read(ReadOnlyMemory<byte> body, Type type, IMessageSerializer serializer)
    {
        if (_steps is null || _steps.Length == 0)
        {
            return serializer.Deserialize(body.Span, type);
        }

        var state = new ReadState { Bytes = body };
        foreach (var step in _steps)
        {
            step.Apply(ref state, serializer);
        }

        return state.ToObject(type, serializer);
    }
}
