namespace Converge.Contracts;

/// <summary>What <see cref="ContractSnapshot.Compare"/> found between a committed snapshot and the current contracts.</summary>
public sealed class ContractComparison
{
    internal ContractComparison(IReadOnlyList<ContractChange> changes) => Changes = changes;

    /// <summary>Every difference, breaking ones first, then by type name and field.</summary>
    public IReadOnlyList<ContractChange> Changes { get; }

    /// <summary>The differences that break readers of messages already stored or sent.</summary>
    public IReadOnlyList<ContractChange> Breaking => [.. Changes.Where(c => c.IsBreaking)];

    /// <summary>Whether nothing breaks: the committed snapshot may still be out of date (see <see cref="Changes"/>).</summary>
    public bool IsCompatible => Changes.All(c => !c.IsBreaking);
}

/// <summary>One difference between two contract snapshots.</summary>
/// <param name="Kind">What changed.</param>
/// <param name="Type">The message type name with its version.</param>
/// <param name="Field">The field, for a field change; <c>null</c> otherwise.</param>
/// <param name="Description">What changed, in words.</param>
/// <param name="Fix">How to make a breaking change compatible; for a compatible one, a note or <c>null</c>.</param>
public sealed record ContractChange(ContractChangeKind Kind, string Type, string? Field, string Description, string? Fix)
{
    /// <summary>Whether the change breaks readers of messages already stored or sent.</summary>
    public bool IsBreaking => Kind is ContractChangeKind.TypeRemoved or ContractChangeKind.FieldRemoved
        or ContractChangeKind.FieldRetyped or ContractChangeKind.FieldRequired;
}

/// <summary>The kinds of <see cref="ContractChange"/>.</summary>
public enum ContractChangeKind
{
    /// <summary>Breaking: a type name is no longer registered, and no alias or upcaster reads it as a registered one.</summary>
    TypeRemoved,

    /// <summary>Breaking: a field is gone.</summary>
    FieldRemoved,

    /// <summary>Breaking: a field has another JSON type, or no longer accepts <c>null</c>.</summary>
    FieldRetyped,

    /// <summary>Breaking: a field became required, or a new field is required (messages written before lack it).</summary>
    FieldRequired,

    /// <summary>Compatible: a new type name.</summary>
    TypeAdded,

    /// <summary>Compatible: a new version of a known name.</summary>
    VersionAdded,

    /// <summary>Compatible: an old version's class is gone, and an alias or upcaster reads it as a registered type.</summary>
    ReadByUpcast,

    /// <summary>Compatible: a name that is only read as another (an alias or an upcaster from it) is new.</summary>
    ReadPathAdded,

    /// <summary>Compatible: a new optional field.</summary>
    FieldAdded,

    /// <summary>Compatible: a field now accepts <c>null</c>, or is no longer required.</summary>
    FieldRelaxed,
}

/// <summary>The rules of <see cref="ContractSnapshot.Compare"/>.</summary>
internal static class ContractComparer
{
    public static ContractComparison Compare(ContractSnapshot committed, ContractSnapshot current)
    {
        ArgumentNullException.ThrowIfNull(committed);
        ArgumentNullException.ThrowIfNull(current);
        var now = current.Messages.ToDictionary(m => m.Type, StringComparer.Ordinal);
        var before = committed.Messages.ToDictionary(m => m.Type, StringComparer.Ordinal);
        var changes = new List<ContractChange>();
        foreach (var old in committed.Messages)
        {
            if (!now.TryGetValue(old.Type, out var contract))
            {
                changes.Add(new(ContractChangeKind.TypeRemoved, old.Type, null,
                    "no longer registered, and no alias or upcaster reads it: stored and in-flight messages of this type become unknown (dead-lettered)",
                    FixForRemoved(old.Type)));
                continue;
            }

            if (old.IsRegistered && contract.IsRegistered)
            {
                CompareFields(old, contract, changes);
                continue;
            }

            if (contract.IsRegistered)
            {
                continue;
            }

            var end = ReadPathEnd(old.Type, now);
            if (end is null)
            {
                changes.Add(new(ContractChangeKind.TypeRemoved, old.Type, null,
                    $"read as {string.Join(" -> ", ReadPath(old.Type, now).Skip(1))}, which ends at no registered type: its messages become unknown (dead-lettered)",
                    $"Register the type at the end of the path, or point the path at a registered version. {FixForRemoved(old.Type)}"));
            }
            else if (old.IsRegistered)
            {
                changes.Add(new(ContractChangeKind.ReadByUpcast, old.Type, null,
                    $"its class is gone; stored messages are read as '{end}' ({string.Join(" -> ", ReadPath(old.Type, now))})",
                    null));
            }
        }

        foreach (var added in current.Messages.Where(m => !before.ContainsKey(m.Type)))
        {
            if (!added.IsRegistered)
            {
                changes.Add(new(ContractChangeKind.ReadPathAdded, added.Type, null, $"read as '{added.ReadsAs}' by {added.ReadsAsBy}", null));
                continue;
            }

            var name = NameOf(added.Type);
            var older = committed.Messages.Where(m => NameOf(m.Type) == name).Select(m => m.Type).ToList();
            if (older.Count == 0)
            {
                changes.Add(new(ContractChangeKind.TypeAdded, added.Type, null, "new type", null));
                continue;
            }

            var unread = older.Where(o => !ReadPath(o, now).Contains(added.Type, StringComparer.Ordinal)).ToList();
            changes.Add(unread.Count == 0
                ? new(ContractChangeKind.VersionAdded, added.Type, null, $"new version; {string.Join(", ", older)} read as it", null)
                : new(ContractChangeKind.VersionAdded, added.Type, null, $"new version; {string.Join(", ", unread)} still read as before, not as '{added.Type}'",
                    $"Handlers of '{added.Type}' receive older versions only through an upcaster, for example o.Messages.Upcast<OldType, NewType>(old => ...) or o.Messages.Upcast(\"{name}\", from: {VersionOf(unread[^1])}, to: {VersionOf(added.Type)}, json => ...)."));
        }

        return new ContractComparison([.. changes
            .OrderBy(c => c.IsBreaking ? 0 : 1)
            .ThenBy(c => c.Type, StringComparer.Ordinal)
            .ThenBy(c => c.Field ?? "", StringComparer.Ordinal)]);
    }

    static void CompareFields(MessageContract old, MessageContract contract, List<ContractChange> changes)
    {
        var oldFields = old.Fields!.ToDictionary(f => f.Name, StringComparer.Ordinal);
        var newFields = contract.Fields!.ToDictionary(f => f.Name, StringComparer.Ordinal);
        var name = NameOf(old.Type);
        var version = VersionOf(old.Type);
        var bump = $"or register the new shape as '{name}@{version + 1}' with an upcaster from version {version} (o.Messages.Upcast<OldType, NewType>(old => ...) or o.Messages.Upcast(\"{name}\", from: {version}, to: {version + 1}, json => ...)), keeping '{old.Type}' readable";
        var removed = new List<string>();
        foreach (var field in old.Fields!)
        {
            if (!newFields.TryGetValue(field.Name, out var now))
            {
                // The fields of a removed object are gone with it; one change says so.
                if (!removed.Any(parent => field.Name.StartsWith(parent + ".", StringComparison.Ordinal) || field.Name.StartsWith(parent + "[].", StringComparison.Ordinal)))
                {
                    removed.Add(field.Name);
                    changes.Add(new(ContractChangeKind.FieldRemoved, old.Type, field.Name, $"field removed (was {field.Display})",
                        $"Keep the field (make it nullable if it may be absent), {bump}."));
                }

                continue;
            }

            if (now.Type != field.Type)
            {
                changes.Add(new(ContractChangeKind.FieldRetyped, old.Type, field.Name, $"type changed from {field.Display} to {now.Display}",
                    $"Keep the type {field.Type}, {bump}."));
            }
            else if (field.Nullable && !now.Nullable)
            {
                changes.Add(new(ContractChangeKind.FieldRetyped, old.Type, field.Name, $"no longer accepts null (was {field.Display}, now {now.Display})",
                    $"Keep it nullable, {bump}."));
            }
            else if (!field.Nullable && now.Nullable)
            {
                changes.Add(new(ContractChangeKind.FieldRelaxed, old.Type, field.Name, $"now accepts null ({now.Display})", null));
            }

            if (!field.Required && now.Required)
            {
                changes.Add(new(ContractChangeKind.FieldRequired, old.Type, field.Name, "now required: messages written without it fail to deserialize",
                    $"Keep it optional (drop 'required' or [JsonRequired]), {bump}."));
            }
            else if (field.Required && !now.Required)
            {
                changes.Add(new(ContractChangeKind.FieldRelaxed, old.Type, field.Name, "no longer required", null));
            }
        }

        foreach (var field in contract.Fields!.Where(f => !oldFields.ContainsKey(f.Name)))
        {
            changes.Add(field.Required
                ? new(ContractChangeKind.FieldRequired, old.Type, field.Name, $"new required field ({field.Display}): messages written before lack it and fail to deserialize",
                    $"Make the new field optional, {bump}.")
                : new(ContractChangeKind.FieldAdded, old.Type, field.Name, $"new optional field ({field.Display})", null));
        }
    }

    static string FixForRemoved(string type)
    {
        var name = NameOf(type);
        var version = VersionOf(type);
        return $"Keep registering '{type}', or read it as a registered type: o.Messages.Upcast(\"{name}\", from: {version}, to: {version + 1}, json => ...) for an older version, o.Messages.Alias(\"{type}\", \"new.name@1\") for a renamed type.";
    }

    /// <summary>The names <paramref name="type"/> is read as in <paramref name="contracts"/>, itself first; stops at a loop.</summary>
    static List<string> ReadPath(string type, Dictionary<string, MessageContract> contracts)
    {
        var path = new List<string> { type };
        while (contracts.TryGetValue(path[^1], out var contract) && contract.ReadsAs is { } next && !path.Contains(next, StringComparer.Ordinal))
        {
            path.Add(next);
        }

        return path;
    }

    /// <summary>The first registered name on <paramref name="type"/>'s read path; <c>null</c> when there is none.</summary>
    static string? ReadPathEnd(string type, Dictionary<string, MessageContract> contracts) =>
        ReadPath(type, contracts).FirstOrDefault(t => contracts.TryGetValue(t, out var c) && c.IsRegistered);

    static string NameOf(string type) => MessageTypeName.TryParse(type, out var name, out _) ? name : type;

    static int VersionOf(string type) => MessageTypeName.TryParse(type, out _, out var version) ? version : 1;
}
