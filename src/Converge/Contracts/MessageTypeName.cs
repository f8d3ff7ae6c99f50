using System.Globalization;
using System.Text.RegularExpressions;

namespace Converge.Contracts;

/// <summary>Formats and validates stable message type names of the form <c>name@version</c>.</summary>
public static partial class MessageTypeName
{
    /// <summary>Combines a name and a version into the stored form, for example <c>shop.place-order@1</c>.</summary>
    /// <exception cref="ArgumentException">The name is not lower-case letters, digits, '.', '-' or '_', or the version is below 1.</exception>
    public static string Format(string name, int version)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (!NamePattern().IsMatch(name))
        {
            throw new ArgumentException(
                $"Message type name '{name}' is not valid: use lower-case letters, digits, '.', '-' and '_' (for example 'shop.place-order').",
                nameof(name));
        }

        if (version < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(version), version, "Message type versions start at 1.");
        }

        return $"{name}@{version}";
    }

    /// <summary>
    /// Splits a stored type name such as <c>shop.place-order@2</c> into its name and version; <c>false</c> when
    /// <paramref name="typeName"/> is not of the form <see cref="Format"/> writes.
    /// </summary>
    public static bool TryParse(string? typeName, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out string? name, out int version)
    {
        name = null;
        version = 0;
        var at = typeName?.LastIndexOf('@') ?? -1;
        if (at <= 0
            || !int.TryParse(typeName.AsSpan(at + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var parsed)
            || parsed < 1
            || !NamePattern().IsMatch(typeName![..at]))
        {
            return false;
        }

        name = typeName[..at];
        version = parsed;
        return true;
    }

    /// <summary>Checks that <paramref name="typeName"/> has the form <c>name@version</c>.</summary>
    /// <exception cref="ArgumentException">It does not; the message shows the form.</exception>
    internal static string Require(string typeName, string parameter) =>
        TryParse(typeName, out _, out _)
            ? typeName
            : throw new ArgumentException($"'{typeName}' is not a message type name with its version; write it as 'name@version', for example 'shop.order-placed@1'.", parameter);

    [GeneratedRegex(@"^[a-z0-9][a-z0-9._-]{0,199}\z")]
    private static partial Regex NamePattern();
}
