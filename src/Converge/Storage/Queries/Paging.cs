using System.Globalization;

namespace Converge.Storage;

/// <summary>
/// One page of a listing, newest first, and where the next page starts. Listings are keyset-paged: a page is read
/// from an index at the position of <see cref="Next"/>, so a page costs the same wherever it is, and rows written
/// while a caller pages through older ones neither repeat nor push others out of view.
/// </summary>
/// <typeparam name="T">The listed item.</typeparam>
/// <param name="Items">At most the requested number of items, newest first.</param>
/// <param name="Next">
/// The cursor to pass as <c>After</c> for the next (older) page; <c>null</c> when this page is the last. Opaque: compare
/// or build it only through the store that returned it.
/// </param>
public sealed record Page<T>(IReadOnlyList<T> Items, string? Next);

/// <summary>Builds pages for the stores that list by keyset.</summary>
public static class Page
{
    /// <summary>
    /// The page of the first <paramref name="max"/> of <paramref name="read"/>, which the store read one more than
    /// <paramref name="max"/> of to know whether more follow: the extra item is dropped, and the page's
    /// <see cref="Page{T}.Next"/> is the cursor of its last item then, <c>null</c> otherwise.
    /// </summary>
    public static Page<T> OfFirst<T>(List<T> read, int max, Func<T, string> cursorOf)
    {
        ArgumentNullException.ThrowIfNull(read);
        ArgumentNullException.ThrowIfNull(cursorOf);
        if (read.Count <= max)
        {
            return new Page<T>(read, null);
        }

        read.RemoveRange(max, read.Count - max);
        return new Page<T>(read, cursorOf(read[^1]));
    }
}

/// <summary>
/// The opaque cursors of keyset-paged listings, for the stores that write and read them: a time in UTC ticks and the
/// rest of the position, as <c>TICKS:REST</c>. Callers pass cursors through as the store returned them.
/// </summary>
public static class PageCursor
{
    /// <summary>The cursor of a position at <paramref name="ticks"/> with <paramref name="tail"/> (the tie-breaker).</summary>
    public static string Create(long ticks, string tail) => ticks.ToString(CultureInfo.InvariantCulture) + ":" + tail;

    /// <summary>The time and the tie-breaker of a cursor made by <see cref="Create"/>.</summary>
    /// <exception cref="FormatException"><paramref name="cursor"/> was not made by <see cref="Create"/>.</exception>
    public static (long Ticks, string Tail) Parse(string cursor)
    {
        ArgumentNullException.ThrowIfNull(cursor);
        var colon = cursor.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0 || !long.TryParse(cursor.AsSpan(0, colon), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var ticks))
        {
            throw new FormatException($"'{cursor}' is not a page cursor; pass the Next of a page (or the cursor of a listed item) as it was returned.");
        }

        return (ticks, cursor[(colon + 1)..]);
    }

    /// <summary>The time and the number of a cursor whose tie-breaker is a number (a row id).</summary>
    /// <exception cref="FormatException"><paramref name="cursor"/> does not end in a number.</exception>
    public static (long Ticks, long Number) ParseNumbered(string cursor)
    {
        var (ticks, tail) = Parse(cursor);
        return long.TryParse(tail, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var number)
            ? (ticks, number)
            : throw new FormatException($"'{cursor}' is not a cursor of this listing; pass the Next of one of its pages as it was returned.");
    }

    /// <summary>The cursor of a position at <paramref name="ticks"/> with the number <paramref name="number"/>.</summary>
    public static string CreateNumbered(long ticks, long number) => Create(ticks, number.ToString(CultureInfo.InvariantCulture));
}
