using System.Text.Json;

namespace Converge.Contracts;

/// <summary>Turns message bodies into bytes and back. Implementations must be thread-safe.</summary>
public interface IMessageSerializer
{
    /// <summary>Serializes <paramref name="message"/> as <paramref name="type"/>.</summary>
    byte[] Serialize(object message, Type type);

    /// <summary>Deserializes <paramref name="body"/> as <paramref name="type"/>; throws when the body is malformed.</summary>
    object Deserialize(ReadOnlySpan<byte> body, Type type);
}

/// <summary>The default serializer: System.Text.Json with web defaults (camelCase, case-insensitive reads).</summary>
public sealed class SystemTextJsonMessageSerializer : IMessageSerializer
{
    readonly JsonSerializerOptions _options;

    /// <summary>Creates the serializer; <paramref name="options"/> defaults to <see cref="JsonSerializerDefaults.Web"/>.</summary>
    public SystemTextJsonMessageSerializer(JsonSerializerOptions? options = null) =>
        _options = options ?? new JsonSerializerOptions(JsonSerializerDefaults.Web);

    /// <inheritdoc />
    public byte[] Serialize(object message, Type type) => JsonSerializer.SerializeToUtf8Bytes(message, type, _options);

    /// <inheritdoc />
    public object Deserialize(ReadOnlySpan<byte> body, Type type) =>
        JsonSerializer.Deserialize(body, type, _options)
        ?? throw new JsonException($"The body deserialized to null as {type.Name}.");
}
