namespace Converge.Storage;

/// <summary>
/// Optional dead-letter queries for the dashboard and the CLI, on the same object as the store: keyset-paged listings
/// with filters, counts per reason and source, and one dead letter by id. Every listing is served by an index, so a
/// page costs about the same with a hundred or a hundred thousand dead letters. Reach it with
/// <see cref="DeadLetterQueryExtensions.DeadLetterQueries"/>.
/// </summary>
public interface IDeadLetterQueries
{
    /// <summary>
    /// Dead letters matching <paramref name="query"/>, newest first (by when they were dead-lettered, then by id), from
    /// <see cref="DeadLetterQuery.After"/> on. The page's <see cref="Page{T}.Next"/> continues where it ended.
    /// </summary>
    ValueTask<Page<DeadLetter>> ListDeadLettersAsync(DeadLetterQuery query, CancellationToken cancellationToken);

    /// <summary>
    /// Dead letters counted per reason and source, with the newest one's time; ordered by reason, then source
    /// (ordinal). Parked log events count under their <c>log:GROUP</c> source.
    /// </summary>
    ValueTask<IReadOnlyList<DeadLetterGroup>> GroupDeadLettersAsync(CancellationToken cancellationToken);

    /// <summary>The dead letter <paramref name="id"/>; <c>null</c> when there is none (never was, retried or discarded).</summary>
    ValueTask<DeadLetter?> GetDeadLetterAsync(long id, CancellationToken cancellationToken);
}

/// <summary>Which dead letters to list. Unset filters do not filter; set ones must all match.</summary>
public sealed record DeadLetterQuery
{
    /// <summary>Only dead letters from this queue (or <c>log:GROUP</c> for parked events); <c>null</c> (default) for any.</summary>
    public string? Source { get; init; }

    /// <summary>Only dead letters with this reason (one of <see cref="DeadLetterReasons"/>, or a transport's); <c>null</c> (default) for any.</summary>
    public string? Reason { get; init; }

    /// <summary>Only dead letters of this ordering key (<see cref="DeadLetter.OrderingKey"/>); <c>null</c> (default) for any, keyed or not.</summary>
    public string? OrderingKey { get; init; }

    /// <summary>
    /// Start after this position: the <see cref="Page{T}.Next"/> of the previous page, or
    /// <see cref="CursorOf(DeadLetter)"/> of the last dead letter seen. <c>null</c> (default) starts with the newest.
    /// </summary>
    public string? After { get; init; }

    /// <summary>At most this many on the page; default 50. Zero or less lists nothing.</summary>
    public int Max { get; init; } = 50;

    /// <summary>The cursor that lists the dead letters after (older than) <paramref name="letter"/>.</summary>
    public static string CursorOf(DeadLetter letter)
    {
        ArgumentNullException.ThrowIfNull(letter);
        return PageCursor.CreateNumbered(letter.DeadLetteredAt.UtcTicks, letter.Id);
    }
}

/// <summary>The dead letters of one reason and source.</summary>
/// <param name="Reason">Why they were dead-lettered.</param>
/// <param name="Source">The queue they came from, or <c>log:GROUP</c>.</param>
/// <param name="Count">How many.</param>
/// <param name="NewestAt">When the newest of them was dead-lettered.</param>
public sealed record DeadLetterGroup(string Reason, string Source, long Count, DateTimeOffset NewestAt);

/// <summary>Finds the optional dead-letter queries on a store.</summary>
public static class DeadLetterQueryExtensions
{
    /// <summary><paramref name="store"/>'s dead-letter queries.</summary>
    /// <exception cref="NotSupportedException">The store does not offer <see cref="IDeadLetterQueries"/>.</exception>
    public static IDeadLetterQueries DeadLetterQueries(this IStore store) => StoreContracts.Require<IDeadLetterQueries>(store, "Dead-letter queries");
}
