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
            var ids = new HashSet<Guid>();
            var versions = new HashSet<long>();
            foreach (var seen in client.Events)
            {
                if (!ids.Add(seen.Id) || !versions.Add(seen.Version))
                {
                    duplicates++;
                    Note($"{client.RequestId}: version {seen.Version} ({seen.Type}, {seen.Id:N}) was received twice");
                }

                if (stored is not null && stored.TryGetValue(client.RequestId, out var truth)
                    && (seen.Version < 1 || seen.Version > truth.Count || truth[(int)seen.Version - 1] != seen.Id))
                {
                    mismatches++;
                    Note($"{client.RequestId}: version {seen.Version} was received as {seen.Id:N}, which the store does not hold there");
                }
            }

            var last = client.Events.Count == 0 ? 0 : client.Events.Max(e => e.Version);
            for (var version = 1L; version <= last; version++)
            {
                if (!versions.Contains(version))
                {
                    gaps++;
                    Note($"{client.RequestId}: version {version} of {last} was never received");
                }
            }

            for (var i = 1; i < client.Events.Count; i++)
            {
                if (client.Events[i].Version < client.Events[i - 1].Version)
                {
                    Note($"{client.RequestId}: version {client.Events[i].Version} arrived after version {client.Events[i - 1].Version}");
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
