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

    [GeneratedRegex(@"^[a-z0-9][a-z0-9._-]{0,199}\z")]
    private static partial Regex NamePattern();
}
