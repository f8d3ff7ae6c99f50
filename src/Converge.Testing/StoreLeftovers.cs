using Converge.Storage;

namespace Converge.Testing;

/// <summary>What a store still holds once the work should have settled, in words: for a judge's report.</summary>
/// <param name="Queued">Each queue that still holds a ready, in-flight or scheduled message: <c>queue stock still holds 2</c>, by queue name.</param>
/// <param name="DeadLetters">The dead letters, counted, with the first three's type, source, reason, attempts and error; <c>null</c> when there are none.</param>
public sealed record StoreLeftovers(IReadOnlyList<string> Queued, string? DeadLetters)
{
    /// <summary>The queues that still hold messages, then the dead letters.</summary>
    public List<string> All => DeadLetters is null ? [.. Queued] : [.. Queued, DeadLetters];

    /// <summary>Reads what <paramref name="store"/> still holds: its status, and its dead letters when it has any.</summary>
    public static async Task<StoreLeftovers> ReadAsync(IMessageStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        var status = await store.Queries().GetStatusAsync(CancellationToken.None);
        var queued = status.Queues.Where(q => q.Ready + q.InFlight + q.Scheduled > 0).OrderBy(q => q.Queue, StringComparer.Ordinal)
            .Select(q => $"queue {q.Queue} still holds {q.Ready + q.InFlight + q.Scheduled}").ToList();
        if (status.DeadLetters == 0)
        {
            return new StoreLeftovers(queued, null);
        }

        var letters = await store.DeadLetterQueries().ListDeadLettersAsync(new DeadLetterQuery(), CancellationToken.None);
        return new StoreLeftovers(queued, $"{status.DeadLetters} dead letter(s) (" + string.Join("; ", letters.Items.Take(3).Select(l => $"{l.Envelope.MessageType} from {l.Source}: {l.Reason} after {l.Attempts}: {l.Exception?.Split('\n')[0]}")) + ")");
    }
}
