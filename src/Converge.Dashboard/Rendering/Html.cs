using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Encodings.Web;

namespace Converge.Dashboard.Rendering;

/// <summary>
/// A fragment of HTML that is safe to write as it is. Pages are built with <see cref="Of"/>: the literal parts of the
/// interpolated string are markup, and every value put in a hole is HTML-encoded unless it is an <see cref="Html"/>
/// itself, so data from the store (message types, errors, saga data) can never inject markup.
/// </summary>
/// <remarks>
/// Chosen over Razor components: pages stay internal C# (no public component types in the package's API, no
/// renderer dispatcher per request), and encoding is still the default rather than a call to remember.
/// </remarks>
internal readonly struct Html
{
    readonly string? _value;

    Html(string value) => _value = value;

    public static Html Empty => new(string.Empty);

    /// <summary>Markup written as it is. Only for text that is markup by construction, never for data.</summary>
    public static Html Raw(string markup) => new(markup);

    /// <summary>Builds HTML from an interpolated string, encoding every hole that is not <see cref="Html"/>.</summary>
    public static Html Of(ref HtmlHandler handler) => new(handler.ToStringAndClear());

    public static Html Join(IEnumerable<Html> parts)
    {
        var builder = new StringBuilder();
        foreach (var part in parts)
        {
            builder.Append(part._value);
        }

        return new(builder.ToString());
    }

    public static Html When(bool condition, Html html) => condition ? html : Empty;

    public override string ToString() => _value ?? string.Empty;
}

/// <summary>The interpolated-string handler behind <see cref="Html.Of"/>.</summary>
[InterpolatedStringHandler]
internal ref struct HtmlHandler
{
    readonly StringBuilder _builder;

    public HtmlHandler(int literalLength, int formattedCount) => _builder = new StringBuilder(literalLength + (formattedCount * 16));

    public readonly void AppendLiteral(string markup) => _builder.Append(markup);

    public readonly void AppendFormatted(Html html) => _builder.Append(html.ToString());

    public readonly void AppendFormatted(string? text) => Encode(text);

    public readonly void AppendFormatted<T>(T value) => Encode(value switch
    {
        null => null,
        IFormattable formattable => formattable.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString(),
    });

    public readonly void AppendFormatted<T>(T value, string format) where T : IFormattable => Encode(value.ToString(format, CultureInfo.InvariantCulture));

    readonly void Encode(string? text)
    {
        if (!string.IsNullOrEmpty(text))
        {
            _builder.Append(HtmlEncoder.Default.Encode(text));
        }
    }

    public readonly string ToStringAndClear()
    {
        var text = _builder.ToString();
        _builder.Clear();
        return text;
    }
}
