using System.Globalization;
using Converge.Storage;

namespace Converge.Consistency;

/// <summary>
/// A read-your-writes token: a position in the event log that a reader can wait for (<see cref="IConsistency"/>), as
/// Zanzibar's zookies and Cosmos DB's session tokens are. A commit that appended events yields one
/// (<see cref="After(LogEvent)"/>); a projection or consumer group has "reached" it once its checkpoint stands at or past
/// that position, so everything the commit appended has been applied there.
/// </summary>
/// <remarks>
/// Its text form (<see cref="ToString"/>) is opaque and compact, <c>cv1.12345</c>, fit for an HTTP header
/// (<c>Converge-Consistency</c>) or a cookie. Take a token after the transaction commits: a position handed out by a
/// transaction that rolls back is never reached by an event of its own (it is reached once a later event is).
/// <c>default</c> is <see cref="None"/>, position 0, which every reader has reached.
/// </remarks>
public readonly record struct ConsistencyToken : IComparable<ConsistencyToken>
{
    /// <summary>The prefix of the text form; the version of the format is part of it.</summary>
    public const string Prefix = "cv1.";

    /// <summary>Creates the token of log position <paramref name="position"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="position"/> is negative.</exception>
    public ConsistencyToken(long position)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(position);
        Position = position;
    }

    /// <summary>The token of position 0: asks for nothing, every reader has reached it.</summary>
    public static ConsistencyToken None => default;

    /// <summary>The log position a reader must have reached (its checkpoint at or past it).</summary>
    public long Position { get; }

    /// <summary>The token that covers <paramref name="stored"/>, as returned by <c>IMessageBus.PublishAsync</c>.</summary>
    public static ConsistencyToken After(LogEvent stored)
    {
        ArgumentNullException.ThrowIfNull(stored);
        return new ConsistencyToken(stored.Position);
    }

    /// <summary>
    /// The token that covers every event of <paramref name="stored"/> (the highest position), as returned by
    /// <see cref="ILogTransaction.AppendAsync"/> or gathered from several appends of one transaction; <see cref="None"/>
    /// when there are none.
    /// </summary>
    public static ConsistencyToken After(IEnumerable<LogEvent> stored)
    {
        ArgumentNullException.ThrowIfNull(stored);
        var position = 0L;
        foreach (var logEvent in stored)
        {
            position = Math.Max(position, logEvent.Position);
        }

        return new ConsistencyToken(position);
    }

    /// <summary>The later of two tokens: what a session keeps when it sees a new one, so it never steps back.</summary>
    public static ConsistencyToken Max(ConsistencyToken a, ConsistencyToken b) => a.Position >= b.Position ? a : b;

    /// <summary>Reads the text form <c>cv1.POSITION</c>; <c>false</c> for anything else (null, blank, another form).</summary>
    public static bool TryParse(string? text, out ConsistencyToken token)
    {
        token = default;
        if (text is null || !text.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return false;
        }

        var digits = text.AsSpan(Prefix.Length);
        if (digits.IsEmpty || !long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var position))
        {
            return false;
        }

        token = new ConsistencyToken(position);
        return true;
    }

    /// <summary>Reads the text form <c>cv1.POSITION</c>.</summary>
    /// <exception cref="FormatException"><paramref name="text"/> is not a token; the message shows the form expected.</exception>
    public static ConsistencyToken Parse(string text) =>
        TryParse(text, out var token)
            ? token
            : throw new FormatException($"'{Shorten(text)}' is not a consistency token: expected '{Prefix}' followed by a log position (for example '{Prefix}42'), as a response's Converge-Consistency header carries it.");

    /// <inheritdoc />
    public int CompareTo(ConsistencyToken other) => Position.CompareTo(other.Position);

    /// <summary>Whether <paramref name="left"/> asks for an earlier position than <paramref name="right"/>.</summary>
    public static bool operator <(ConsistencyToken left, ConsistencyToken right) => left.Position < right.Position;

    /// <summary>Whether <paramref name="left"/> asks for a later position than <paramref name="right"/>.</summary>
    public static bool operator >(ConsistencyToken left, ConsistencyToken right) => left.Position > right.Position;

    /// <summary>Whether <paramref name="left"/> asks for no later position than <paramref name="right"/>.</summary>
    public static bool operator <=(ConsistencyToken left, ConsistencyToken right) => left.Position <= right.Position;

    /// <summary>Whether <paramref name="left"/> asks for no earlier position than <paramref name="right"/>.</summary>
    public static bool operator >=(ConsistencyToken left, ConsistencyToken right) => left.Position >= right.Position;

    /// <summary>The text form, <c>cv1.POSITION</c>, that <see cref="Parse"/> reads.</summary>
    public override string ToString() => Prefix + Position.ToString(CultureInfo.InvariantCulture);

    static string Shorten(string? text) => text is null ? "(null)" : text.Length <= 40 ? text : text[..40] + "...";
}
