using Converge.Verification;

namespace Converge.Samples.Identity;

/// <summary>
/// What the check of the clients' reads found. A gap is a version a client never received below the last it did (or
/// a stream it read from other than version 1); a duplicate is an event, or a version, a client received twice; a
/// mismatch is an event a client received at a version where the store holds another. <see cref="FullResultP99"/> is
/// over every client's time from submission to the full result.
/// </summary>
public sealed record IdentityVerification(
    int Completed,
    int Undecided,
    int Gaps,
    int Duplicates,
    int Mismatches,
    TimeSpan FullResultP50,
    TimeSpan FullResultP99,
    IReadOnlyList<string> Problems)
{
    /// <summary>Whether the run passes: every problem is listed in <see cref="Problems"/>, so none means it does.</summary>
    public bool Passed => Problems.Count == 0;

    /// <summary>
    /// Checks what each client received against what the store holds (<paramref name="stored"/>: each request's
    /// stream, event ids by version from 1; <c>null</c> to skip that comparison), that every client got its result and
    /// decided, and that the p99 time to the full result is under <paramref name="deadline"/>.
    /// </summary>
    public static IdentityVerification Verify(IReadOnlyList<ClientRecord> clients, IReadOnlyDictionary<string, IReadOnlyList<Guid>>? stored, TimeSpan deadline)
    {
        ArgumentNullException.ThrowIfNull(clients);
        var problems = new List<string>();
        int gaps = 0, duplicates = 0, mismatches = 0, completed = 0, undecided = 0;
        foreach (var client in clients)
        {
            // Each version of the client's stream received once and in order, judged as every reader of the log is.
            var ids = new HashSet<Guid>();
            var received = client.Events.Select(e => e.Version).ToList();
            var last = received.Count == 0 ? 0 : received.Max();
            foreach (var found in Invariants.ReadExactlyOnceInOrder(client.RequestId, [.. Enumerable.Range(1, (int)last).Select(v => (long)v)], received, "version"))
            {
                gaps += found.Contains(" skipped ", StringComparison.Ordinal) ? 1 : 0;
                duplicates += found.Contains(" repeated ", StringComparison.Ordinal) ? 1 : 0;
                Note(found);
            }

            foreach (var seen in client.Events)
            {
                if (!ids.Add(seen.Id) && received.Count(v => v == seen.Version) == 1)
                {
                    // The same event at two versions: the repeat the versions alone do not show.
                    duplicates++;
                    Note($"{client.RequestId}: event {seen.Id:N} ({seen.Type}) was received twice");
                }

                if (stored is not null && stored.TryGetValue(client.RequestId, out var truth)
                    && (seen.Version < 1 || seen.Version > truth.Count || truth[(int)seen.Version - 1] != seen.Id))
                {
                    mismatches++;
                    Note($"{client.RequestId}: version {seen.Version} was received as {seen.Id:N}, which the store does not hold there");
                }
            }

            if (client.ResultTime is null)
            {
                Note($"{client.RequestId}: no result ({client.Error ?? "reason unknown"})");
            }
            else
            {
                completed++;
            }

            if (client.Decision is null)
            {
                undecided++;
                Note($"{client.RequestId}: the {client.Tier.ToString().ToLowerInvariant()} stake was never decided");
            }
        }

        var times = clients.Where(c => c.ResultTime is not null).Select(c => c.ResultTime!.Value).ToList();
        var p50 = Percentile(times, 0.50);
        var p99 = Percentile(times, 0.99);
        if (times.Count > 0 && p99 >= deadline)
        {
            problems.Add($"p99 time to the full result is {p99.TotalMilliseconds:0} ms, not under the deadline of {deadline.TotalSeconds:0.#} s");
        }

        return new IdentityVerification(completed, undecided, gaps, duplicates, mismatches, p50, p99, problems);

        void Note(string problem)
        {
            // A broken run can break thousands of ways: the first ones tell what happened.
            if (problems.Count < 50)
            {
                problems.Add(problem);
            }
        }
    }

    /// <summary>The nearest-rank percentile: the smallest time at least <paramref name="share"/> of them are at or under; zero for none.</summary>
    public static TimeSpan Percentile(IReadOnlyCollection<TimeSpan> times, double share)
    {
        ArgumentNullException.ThrowIfNull(times);
        if (times.Count == 0)
        {
            return TimeSpan.Zero;
        }

        var sorted = times.Order().ToList();
        return sorted[Math.Clamp((int)Math.Ceiling(share * sorted.Count) - 1, 0, sorted.Count - 1)];
    }
}
