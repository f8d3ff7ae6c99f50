using System.Collections.Concurrent;

namespace Converge.Contracts;

/// <summary>
/// The explicit mapping between CLR types and stable message type names. A type name is never taken from a
/// payload: a message whose name is not registered here is dead-lettered as unknown.
/// </summary>
public sealed class MessageTypeRegistry
{
    readonly ConcurrentDictionary<Type, string> _names = new();
    readonly ConcurrentDictionary<string, Type> _types = new(StringComparer.Ordinal);

    /// <summary>Registers <typeparamref name="T"/> under <paramref name="name"/> and <paramref name="version"/> (default 1).</summary>
    /// <exception cref="InvalidOperationException">The type or the name is already registered differently.</exception>
    public MessageTypeRegistry Register<T>(string name, int version = 1) => Register(typeof(T), name, version);

    /// <summary>Registers <paramref name="type"/> under <paramref name="name"/> and <paramref name="version"/>.</summary>
    /// <exception cref="InvalidOperationException">The type or the name is already registered differently.</exception>
    public MessageTypeRegistry Register(Type type, string name, int version = 1)
    {
        ArgumentNullException.ThrowIfNull(type);
        var typeName = MessageTypeName.Format(name, version);
        if (_names.TryGetValue(type, out var existing) && existing != typeName)
        {
            throw new InvalidOperationException($"{type.FullName} is already registered as '{existing}'; a type has one name.");
        }

        if (_types.TryGetValue(typeName, out var existingType) && existingType != type)
        {
            throw new InvalidOperationException($"'{typeName}' is already registered for {existingType.FullName}; choose another name or version.");
        }

        _names[type] = typeName;
        _types[typeName] = type;
        return this;
    }

    /// <summary>The registered name of <paramref name="type"/>.</summary>
    /// <exception cref="InvalidOperationException">The type is not registered; the message names the fix.</exception>
    public string GetName(Type type) =>
        _names.TryGetValue(type, out var name)
            ? name
            : throw Unregistered(type);

    /// <summary>The error for a type with no registered name, naming the registration that fixes it.</summary>
    internal static InvalidOperationException Unregistered(Type type) => new(
        $"{type.FullName} has no message type name. Register it in AddConverge: o.Messages.Register<{type.Name}>(\"your.name\") (version 1 unless you pass version:).");

    /// <summary>Finds the CLR type registered for <paramref name="typeName"/>; <c>false</c> when unknown.</summary>
    public bool TryGetType(string typeName, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Type? type) =>
        _types.TryGetValue(typeName, out type);

    /// <summary>Whether <paramref name="type"/> has a registered name.</summary>
    public bool IsRegistered(Type type) => _names.ContainsKey(type);

    /// <summary>All registered names and types.</summary>
    public IReadOnlyDictionary<string, Type> All => _types;
}
