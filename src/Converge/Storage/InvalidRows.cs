using System.Data.Common;
using System.Globalization;

namespace Converge.Storage;

/// <summary>
/// A claimed queue row as read: the message, and, when some column could not be decoded, why. The message then
/// carries what could be read, stand-ins for the rest and the raw values in its headers, ready to be dead-lettered.
/// </summary>
/// <param name="Message">The message, or what could be read of it.</param>
/// <param name="Problem">Why the row cannot be handled; <c>null</c> when it decoded.</param>
public readonly record struct ClaimedRow(QueuedMessage Message, string? Problem);

/// <summary>
/// What every store does with a claimed row it cannot decode: dead-letter it as <see cref="DeadLetterReasons.InvalidRow"/>
/// in the claim's transaction, so that one bad row neither fails the rest of its batch nor comes back at every claim.
/// </summary>
public static class InvalidRows
{
    /// <summary>Header under which a dead letter keeps the raw value of a column that could not be decoded: this prefix, then the column.</summary>
    public const string RawHeaderPrefix = "converge-raw-";

    /// <summary>The stand-in for a message type that could not be read.</summary>
    public const string UnknownType = "?";

    /// <summary>Visible-at times further ahead than this are not times Converge writes: reported as stranded, never claimed.</summary>
    public static readonly TimeSpan StrandedAfter = TimeSpan.FromDays(365.25 * 100);

    /// <summary>The raw value of a column as text: text as stored, numbers invariant, bytes as <c>base64:</c> and their Base64.</summary>
    public static string RawText(DbDataReader reader, int ordinal)
    {
        try
        {
            return reader.GetValue(ordinal) switch
            {
                DBNull => "null",
                byte[] bytes => "base64:" + Convert.ToBase64String(bytes),
                string text => text,
                IFormattable value => value.ToString(null, CultureInfo.InvariantCulture),
                var value => value.ToString() ?? "",
            };
        }
        catch (Exception exception) when (exception is not DbException)
        {
            return $"(unreadable: {exception.GetType().Name}: {exception.Message})";
        }
    }

    /// <summary>
    /// Takes the rows of a claim that could not be decoded out of <paramref name="claimed"/> and dead-letters them in
    /// <paramref name="transaction"/>, the claim's own, calling <paramref name="deadLettered"/> for each one it
    /// dead-lettered (a store that offers job storage passes <c>JobRows.InvalidRowDeadLetteredAsync</c>, which counts
    /// a job among them as failed in its batch).
    /// </summary>
    /// <returns>The messages that decoded, in claim order.</returns>
    public static async ValueTask<List<QueuedMessage>> SetAsideAsync(
        IStoreTransaction transaction,
        List<ClaimedRow> claimed,
        DateTimeOffset now,
        Func<IStoreTransaction, QueuedMessage, CancellationToken, ValueTask>? deadLettered,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        ArgumentNullException.ThrowIfNull(claimed);
        var messages = new List<QueuedMessage>(claimed.Count);
        foreach (var row in claimed)
        {
            if (row.Problem is null)
            {
                messages.Add(row.Message);
                continue;
            }

            var message = row.Message;
            var failure = new AttemptRecord(message.Attempt, now, $"{DeadLetterReasons.InvalidRow}: the queue row cannot be decoded");
            if (await transaction.DeadLetterAsync(message, DeadLetterReasons.InvalidRow, row.Problem, failure, cancellationToken) && deadLettered is not null)
            {
                await deadLettered(transaction, message, cancellationToken);
            }
        }

        return messages;
    }
}
