using System.CommandLine.Parsing;

namespace Converge.Cli;

/// <summary>
/// What an option's validator reads. A value that does not convert (<c>--orders abc</c>) is reported by the parser
/// itself ("Cannot parse argument ...", exit 2); reading it in a validator would throw instead, so validators read it
/// through these and check only values that converted.
/// </summary>
internal static class OptionValues
{
    /// <summary>The value of an <c>Option&lt;T&gt;</c>, or <c>null</c> when its token did not convert.</summary>
    public static T? Parsed<T>(this OptionResult result) where T : struct
    {
        try
        {
            return result.GetValueOrDefault<T>();
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>The value of an <c>Option&lt;T?&gt;</c>, or <c>null</c> when it is absent or its token did not convert.</summary>
    public static T? ParsedNullable<T>(this OptionResult result) where T : struct
    {
        try
        {
            return result.GetValueOrDefault<T?>();
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }
}
