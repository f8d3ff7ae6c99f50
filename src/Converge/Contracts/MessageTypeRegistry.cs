using System.Collections.Concurrent;
using System.Text.Json.Nodes;

namespace Converge.Contracts;

/// <summary>
/// The explicit mapping between CLR types and stable message type names, and how older names are read: a stored
/// message of an older version is upcast on read to the newest version a handler takes (<see cref="Upcast{TFrom, TTo}"/>,
/// <see cref="Upcast(string, int, int, Func{JsonObject, JsonObject})"/>), and a renamed type keeps reading its old name
/// (<see cref="Alias"/>). Stored messages are never rewritten. A type name is never taken from a payload: a message
/// whose name is neither registered nor on a read path to a handled type is dead-lettered as unknown.
/// </summary>
public sealed class MessageTypeRegistry
{
    readonly ConcurrentDictionary<Type, string> _names = new();
    readonly ConcurrentDictionary<string, Type> _types = new(StringComparer.Ordinal);
    readonly ConcurrentDictionary<string, ReadStep> _next = new(StringComparer.Ordinal);
    readonly Lock _stepsLock = new();

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

    /// <summary>
    /// Reads stored <typeparamref name="TFrom"/> messages as <typeparamref name="TTo"/>: a handler of
    /// <typeparamref name="TTo"/> (or of a later version <typeparamref name="TTo"/> is upcast to in turn) receives
    /// <typeparamref name="TFrom"/> messages converted by <paramref name="upcast"/>. Both types must be registered
    /// first, usually as two versions of one name (<c>shop.order-placed@1</c> and <c>@2</c>); a handler of
    /// <typeparamref name="TFrom"/> itself still receives them unchanged. Upcasters run on every read, so they must
    /// be pure and deterministic; a failing one fails the delivery like a body that cannot be deserialized.
    /// </summary>
    /// <exception cref="InvalidOperationException">
    /// A type is not registered, <typeparamref name="TFrom"/>'s name already has a read path, or the new step would
    /// close a cycle.
    /// </exception>
    public MessageTypeRegistry Upcast<TFrom, TTo>(Func<TFrom, TTo> upcast)
        where TFrom : notnull
        where TTo : notnull
    {
        ArgumentNullException.ThrowIfNull(upcast);
        var from = _names.TryGetValue(typeof(TFrom), out var fromName) ? fromName
            : throw new InvalidOperationException($"Register {typeof(TFrom).Name} before upcasting from it: o.Messages.Register<{typeof(TFrom).Name}>(\"your.name\", version: 1). For an old version whose class no longer exists, use the JSON upcaster o.Messages.Upcast(\"your.name\", from: 1, to: 2, json => ...).");
        var to = _names.TryGetValue(typeof(TTo), out var toName) ? toName : throw Unregistered(typeof(TTo));
        AddStep(new TypedUpcastStep(from, to, typeof(TFrom), typeof(TTo), old => upcast((TFrom)old)));
        return this;
    }

    /// <summary>
    /// Reads stored <c>name@from</c> bodies as <c>name@to</c> by rewriting their JSON with <paramref name="upcast"/>:
    /// for old versions whose CLR type no longer exists. <paramref name="upcast"/> receives the stored object (property
    /// names as the serializer writes them, camelCase by default) and returns the object of version
    /// <paramref name="to"/>; it may change and return its argument. Steps chain: <c>1 -&gt; 2</c> and <c>2 -&gt; 3</c>
    /// read a version 1 body as version 3. Requires a serializer that writes JSON (the default one does).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="to"/> is not above <paramref name="from"/>.</exception>
    /// <exception cref="InvalidOperationException"><c>name@from</c> already has a read path, or the step would close a cycle.</exception>
    public MessageTypeRegistry Upcast(string name, int from, int to, Func<JsonObject, JsonObject> upcast)
    {
        ArgumentNullException.ThrowIfNull(upcast);
        if (to <= from)
        {
            throw new ArgumentOutOfRangeException(nameof(to), to, $"An upcaster reads an older version as a newer one: 'to' must be above 'from' ({from}).");
        }

        AddStep(new JsonUpcastStep(MessageTypeName.Format(name, from), MessageTypeName.Format(name, to), upcast));
        return this;
    }

    /// <summary>
    /// Reads messages stored as <paramref name="oldTypeName"/> as <paramref name="typeName"/>, body unchanged: for a
    /// renamed type (<c>Alias("sales.order-placed@1", "shop.order-placed@1")</c>), or a version whose body reads as
    /// the next one as it is. Both are full names with their version. <paramref name="typeName"/> need not be
    /// registered yet; a message reaches a handler only if the path ends at a handled type.
    /// </summary>
    /// <exception cref="ArgumentException">A name is not of the form <c>name@version</c>, or both are the same.</exception>
    /// <exception cref="InvalidOperationException"><paramref name="oldTypeName"/> already has a read path, or the alias would close a cycle.</exception>
    public MessageTypeRegistry Alias(string oldTypeName, string typeName)
    {
        MessageTypeName.Require(oldTypeName, nameof(oldTypeName));
        MessageTypeName.Require(typeName, nameof(typeName));
        if (oldTypeName == typeName)
        {
            throw new ArgumentException($"'{oldTypeName}' cannot be an alias of itself.", nameof(typeName));
        }

        AddStep(new AliasStep(oldTypeName, typeName));
        return this;
    }

    /// <summary>
    /// The names a message stored as <paramref name="typeName"/> can be read as, in order: <paramref name="typeName"/>
    /// itself, then each name its aliases and upcasters lead to. A handler receives it as the first name on this path
    /// it handles.
    /// </summary>
    public IReadOnlyList<string> GetReadPath(string typeName)
    {
        ArgumentNullException.ThrowIfNull(typeName);
        var path = new List<string> { typeName };
        for (var name = typeName; _next.TryGetValue(name, out var step); name = step.To)
        {
            path.Add(step.To);
        }

        return path;
    }

    /// <summary>
    /// Deserializes a body stored as <paramref name="typeName"/> as <paramref name="type"/>, applying the aliases and
    /// upcasters on the way (see <see cref="GetReadPath"/>): for code that reads the log itself.
    /// </summary>
    /// <exception cref="InvalidOperationException"><paramref name="type"/> is not registered, or not on the read path of <paramref name="typeName"/>.</exception>
    public object Read(string typeName, ReadOnlyMemory<byte> body, Type type, IMessageSerializer serializer)
    {
        ArgumentNullException.ThrowIfNull(serializer);
        var target = GetName(type);
        return TryFindReadPath(typeName, target, static (target, name) => name == target, out var path)
            ? path.Read(body, type, serializer)
            : throw new InvalidOperationException($"'{typeName}' cannot be read as '{target}': its read path is {string.Join(" -> ", GetReadPath(typeName))}. Register an upcaster or an alias that leads to '{target}'.");
    }

    /// <summary>
    /// Finds the first name on <paramref name="typeName"/>'s read path that <paramref name="isHandled"/> accepts (given <paramref name="state"/>), with
    /// the steps that lead there; <c>false</c> when there is none. Allocates nothing for a name without a read path.
    /// </summary>
    internal bool TryFindReadPath<TState>(string typeName, TState state, Func<TState, string, bool> isHandled, out ReadPath path)
    {
        if (isHandled(state, typeName))
        {
            path = new ReadPath(typeName, []);
            return true;
        }

        path = default;
        if (!_next.ContainsKey(typeName))
        {
            return false;
        }

        var steps = new List<ReadStep>();
        for (var name = typeName; _next.TryGetValue(name, out var step); name = step.To)
        {
            steps.Add(step);
            if (isHandled(state, step.To))
            {
                path = new ReadPath(step.To, [.. steps]);
                return true;
            }
        }

        return false;
    }

    /// <summary>Whether <paramref name="typeName"/> is registered or reads as a registered type.</summary>
    internal bool IsKnown(string typeName) => TryFindReadPath(typeName, _types, static (types, name) => types.ContainsKey(name), out _);

    /// <summary>Every step registered, by the name it reads from.</summary>
    internal IReadOnlyDictionary<string, ReadStep> ReadSteps => _next;

    void AddStep(ReadStep step)
    {
        lock (_stepsLock)
        {
            if (_next.TryGetValue(step.From, out var existing))
            {
                throw new InvalidOperationException($"'{step.From}' already reads as '{existing.To}' (by {existing.Kind}); a stored name has one read path. Chain steps instead: '{step.From}' -> '{existing.To}' -> the next version.");
            }

            if (GetReadPath(step.To).Contains(step.From, StringComparer.Ordinal))
            {
                throw new InvalidOperationException($"Reading '{step.From}' as '{step.To}' would close a cycle: '{step.To}' already reads as '{step.From}'.");
            }

            _next[step.From] = step;
        }
    }
}
