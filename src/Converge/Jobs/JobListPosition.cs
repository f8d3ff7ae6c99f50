using System.Globalization;
using Converge.Storage;

namespace Converge.Jobs;

/// <summary>
/// A job's place in a listing newest first (<see cref="JobQuery"/>), for the stores that list jobs from their queue,
/// their dead letters and their inbox and merge the three. Jobs are ordered by <see cref="Ticks"/> descending, then
/// by <see cref="Source"/> (queue, dead letters, inbox), then within a source by its own key descending: the row id
/// for the queue and the dead letters, (consumer, message id) for the inbox. Written as <see cref="JobInfo.Cursor"/>.
/// </summary>
/// <param name="Ticks">When the job was sent (waiting or running) or finished, in UTC ticks.</param>
/// <param name="Source">Where it was found: <see cref="QueueSource"/>, <see cref="DeadLetterSource"/> or <see cref="InboxSource"/>.</param>
/// <param name="Number">The row id in the queue or the dead letters; 0 in the inbox.</param>
/// <param name="Consumer">The inbox's consumer (the job queue); empty elsewhere.</param>
/// <param name="MessageId">The inbox's message id; empty elsewhere.</param>
public readonly record struct JobListPosition(long Ticks, int Source, long Number, string Consumer, Guid MessageId)
{
    /// <summary>Found on its queue (scheduled, enqueued, processing); first among jobs of the same time.</summary>
    public const int QueueSource = 2;

    /// <summary>Found in the dead letters (dead, cancelled).</summary>
    public const int DeadLetterSource = 1;

    /// <summary>Found in the inbox (succeeded); last among jobs of the same time.</summary>
    public const int InboxSource = 0;

    /// <summary>The cursor text of this position.</summary>
    public override string ToString() => PageCursor.Create(
        Ticks,
        string.Create(CultureInfo.InvariantCulture, $"{Source}.{Number}.{MessageId:N}.{Consumer}"));

    /// <summary>The position a cursor made by <see cref="ToString"/> stands for.</summary>
    /// <exception cref="FormatException"><paramref name="cursor"/> is not a job cursor.</exception>
    public static JobListPosition Parse(string cursor)
    {
        var (ticks, tail) = PageCursor.Parse(cursor);
        var parts = tail.Split('.', 4);
        return parts.Length == 4
            && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var source) && source is >= InboxSource and <= QueueSource
            && long.TryParse(parts[1], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var number)
            && Guid.TryParseExact(parts[2], "N", out var messageId)
            ? new JobListPosition(ticks, source, number, parts[3], messageId)
            : throw new FormatException($"'{cursor}' is not a job cursor; pass the Cursor of a listed job as it was returned.");
    }

    /// <summary>
    /// Compares two positions in listing order: negative when <paramref name="a"/> is listed first (is newer).
    /// <paramref name="messageIdOrder"/> orders message ids as the store's index does.
    /// </summary>
    public static int Compare(JobListPosition a, JobListPosition b, Comparison<Guid> messageIdOrder)
    {
        ArgumentNullException.ThrowIfNull(messageIdOrder);
        var order = b.Ticks.CompareTo(a.Ticks);
        order = order != 0 ? order : b.Source.CompareTo(a.Source);
        order = order != 0 ? order : b.Number.CompareTo(a.Number);
        order = order != 0 ? order : string.CompareOrdinal(b.Consumer, a.Consumer);
        return order != 0 ? order : messageIdOrder(b.MessageId, a.MessageId);
    }

    /// <summary>
    /// The row-id bound for a source that does not hold the cursor: a source listed before the cursor's (at the same
    /// time) is past, so none of its rows at that time may follow (<see cref="long.MinValue"/>); one listed after it is
    /// still to come, so all of them may (<see cref="long.MaxValue"/>); the cursor's own source continues after its row.
    /// </summary>
    public long NumberBoundFor(int source) => source == Source ? Number : source > Source ? long.MinValue : long.MaxValue;

    /// <summary>
    /// The newest <paramref name="max"/> of jobs found in several sources (each listing at most <paramref name="max"/>
    /// after the cursor), with their cursors set.
    /// </summary>
    public static List<JobInfo> Newest(IEnumerable<(JobInfo Job, JobListPosition Position)> found, int max, Comparison<Guid> messageIdOrder)
    {
        ArgumentNullException.ThrowIfNull(found);
        var all = found.ToList();
        all.Sort((x, y) => Compare(x.Position, y.Position, messageIdOrder));
        return [.. all.Take(max).Select(static pair => pair.Job with { Cursor = pair.Position.ToString() })];
    }
}
