using Converge.Jobs;
using Converge.Sagas;

namespace Converge.Verification;

/// <summary>
/// The properties Converge promises, written once and judged the same way by the crash-point matrices, the seeded
/// simulation (<c>converge sim</c>) and the demos, and open to an application's own tests: every effect exactly once, every saga either done or undone in reverse order, batch
/// counters exact, a consumer group never skipping or repeating an event. Each returns what is wrong, in words; an
/// empty list when the property holds.
/// </summary>
public static class Invariants
{
    /// <summary>
    /// Each of <paramref name="expected"/> appears in <paramref name="effects"/> exactly once, and nothing else does:
    /// <c>"account-7 taken 0 times"</c>, <c>"account-3 taken 2 times"</c>, <c>"x taken 1 times, never asked for"</c>.
    /// </summary>
    public static List<string> ExactlyOnce(IEnumerable<string> expected, IEnumerable<string> effects)
    {
        ArgumentNullException.ThrowIfNull(expected);
        ArgumentNullException.ThrowIfNull(effects);
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var effect in effects)
        {
            counts[effect] = counts.GetValueOrDefault(effect) + 1;
        }

        var violations = new List<string>();
        var wanted = new HashSet<string>(StringComparer.Ordinal);
        foreach (var key in expected)
        {
            wanted.Add(key);
            if (counts.GetValueOrDefault(key) != 1)
            {
                violations.Add($"{key} taken {counts.GetValueOrDefault(key)} times");
            }
        }

        violations.AddRange(counts.Where(c => !wanted.Contains(c.Key)).OrderBy(c => c.Key, StringComparer.Ordinal).Select(c => $"{c.Key} taken {c.Value} times, never asked for"));
        return violations;
    }

    /// <summary>
    /// The participants' own records of one saga, in the order they took effect, are its steps <c>T1..Tn</c> (and the
    /// saga <see cref="SagaState.Completed"/>), or <c>T1..Tj</c> then <c>Cj..C1</c> with every one of <c>T1..Tj</c>
    /// compensatable (and the saga <see cref="SagaState.Compensated"/>): nothing twice, nothing out of order, no
    /// compensation of a step that did not happen or after the pivot. <paramref name="steps"/> lists each step's
    /// effect and its compensation's (<c>null</c> for the pivot and the steps after it).
    /// </summary>
    public static List<string> SagaOutcome(string transactionId, SagaState? state, IReadOnlyList<string> effects, IReadOnlyList<(string Effect, string? Compensation)> steps)
    {
        ArgumentNullException.ThrowIfNull(effects);
        ArgumentNullException.ThrowIfNull(steps);
        if (state is null)
        {
            return [$"{transactionId}: saga missing"];
        }

        var forward = steps.Select(s => s.Effect).ToList();
        if (effects.SequenceEqual(forward))
        {
            return state == SagaState.Completed ? [] : [$"{transactionId}: every step done, but the saga is {state}"];
        }

        for (var done = 0; done < steps.Count && steps[done].Compensation is not null; done++)
        {
            var undone = forward.Take(done + 1).Concat(steps.Take(done + 1).Reverse().Select(s => s.Compensation!));
            if (effects.SequenceEqual(undone))
            {
                return state == SagaState.Compensated ? [] : [$"{transactionId}: undone, but the saga is {state}"];
            }
        }

        if (effects.Count == 0 && state == SagaState.Compensated)
        {
            return [];
        }

        return [$"{transactionId}: effects {(effects.Count == 0 ? "none" : string.Join(", ", effects))} (saga {state}): neither every step nor the steps done then undone in reverse"];
    }

    /// <summary>A finished batch counts every job once: <paramref name="total"/> in all, <paramref name="failed"/> failed, the rest succeeded, none pending.</summary>
    public static List<string> BatchCounters(string batchId, JobBatchRecord? batch, int total, int failed = 0)
    {
        if (batch is null)
        {
            return [$"batch {batchId} missing"];
        }

        return (batch.Total, batch.Succeeded, batch.Failed, batch.Pending, batch.FinishedAt is not null) == (total, total - failed, failed, 0, true)
            ? []
            : [$"batch {batchId} counts total {batch.Total}, succeeded {batch.Succeeded}, failed {batch.Failed}, pending {batch.Pending}{(batch.FinishedAt is null ? ", not finished" : "")}; expected total {total}, succeeded {total - failed}, failed {failed}"];
    }

    /// <summary>
    /// A reader (a consumer group, a client following a stream) took the events at <paramref name="handled"/> (in the
    /// order it took them) from a log or stream whose events of interest sit at <paramref name="logged"/>: each exactly
    /// once, and in order. Named as <c>"group g skipped position 5"</c>, <c>"... repeated position 5"</c>,
    /// <c>"... read position 3 after 5"</c>, with <paramref name="reader"/> and <paramref name="unit"/> as given.
    /// </summary>
    public static List<string> ReadExactlyOnceInOrder(string reader, IReadOnlyList<long> logged, IReadOnlyList<long> handled, string unit = "position")
    {
        ArgumentNullException.ThrowIfNull(logged);
        ArgumentNullException.ThrowIfNull(handled);
        var violations = new List<string>();
        var seen = new HashSet<long>();
        var last = long.MinValue;
        foreach (var position in handled)
        {
            if (!seen.Add(position))
            {
                violations.Add($"{reader} repeated {unit} {position}");
            }
            else if (position < last)
            {
                violations.Add($"{reader} read {unit} {position} after {last}");
            }

            last = Math.Max(last, position);
        }

        violations.AddRange(logged.Where(p => !seen.Contains(p)).Select(p => $"{reader} skipped {unit} {p}"));
        return violations;
    }
}
