using System.Text.RegularExpressions;

namespace Converge.Projections;

/// <summary>Names a projection's parts: its consumer group, its versions' tables and its readers' views.</summary>
internal static partial class ProjectionNames
{
    /// <summary>The consumer group that holds a version's checkpoint.</summary>
    public static string Group(string name, int version) => $"projection:{name}@{version}";

    /// <summary>A version's table, unquoted: <c>order_totals_v2_totals</c>.</summary>
    public static string Table(string name, int version, string table) => $"{Identifier(name)}_v{version}_{table}";

    /// <summary>The view readers read, on the live version's table: <c>order_totals_totals</c>.</summary>
    public static string View(string name, string table) => $"{Identifier(name)}_{table}";

    static string Identifier(string name) => name.Replace('-', '_');

    public static void ValidateName(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (!NamePattern().IsMatch(name))
        {
            throw new ArgumentException($"Projection name '{name}' is not valid: use lower-case letters, digits, '-' and '_', starting with a letter, at most 40 (for example 'order-totals').", nameof(name));
        }
    }

    public static void ValidateTable(string projection, string table)
    {
        if (string.IsNullOrEmpty(table) || !TablePattern().IsMatch(table))
        {
            throw new InvalidOperationException($"Projection '{projection}' names a table '{table}': use lower-case letters, digits and '_', starting with a letter, at most 40 (for example 'totals').");
        }
    }

    [GeneratedRegex(@"^[a-z][a-z0-9_-]{0,39}\z")]
    private static partial Regex NamePattern();

    [GeneratedRegex(@"^[a-z][a-z0-9_]{0,39}\z")]
    private static partial Regex TablePattern();
}
