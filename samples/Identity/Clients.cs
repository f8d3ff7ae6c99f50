using Converge.Client;

namespace Converge.Samples.Identity;

/// <summary>How much a client asks for before it lets the customer bet, by stake.</summary>
public enum StakeTier
{
    /// <summary>A £2 bet: the licence read by OCR is enough.</summary>
    Small,

    /// <summary>A £50 bet: OCR, no tampering, and the licence valid on the register, or a degraded grant while the register is down.</summary>
    Medium,

    /// <summary>A £3,000 bet: every check (the full result).</summary>
    Large,
}

/// <summary>The clients' rules: what each stake needs before it is decided.</summary>
public static class Thresholds
{
    public static StakeTier TierOf(long stakePence) => stakePence switch
    {
        <= 200 => StakeTier.Small,
        <= 5_000 => StakeTier.Medium,
        _ => StakeTier.Large,
    };

    /// <summary>
    /// <c>accept</c> or <c>refuse</c> once what the client has seen is enough for <paramref name="tier"/>, else <c>null</c>.
    /// <paramref name="checks"/> holds each check's latest outcome as the client saw it.
    /// </summary>
    public static string? Decide(StakeTier tier, IReadOnlyDictionary<string, string> checks, VerificationResult? result)
    {
        ArgumentNullException.ThrowIfNull(checks);
        if (result is not null && tier == StakeTier.Large)
        {
            return result.Verdict == "verified" ? "accept" : "refuse";
        }

        string? Outcome(string check) => checks.TryGetValue(check, out var outcome) ? outcome : null;
        switch (tier)
        {
            case StakeTier.Small:
                return Outcome(Checks.Ocr) switch { Outcomes.Passed => "accept", Outcomes.Failed => "refuse", _ => null };
            case StakeTier.Medium:
                if (new[] { Checks.Ocr, Checks.Tamper, Checks.Register }.Any(c => Outcome(c) == Outcomes.Failed))
                {
                    return "refuse";
                }

                return Outcome(Checks.Ocr) == Outcomes.Passed && Outcome(Checks.Tamper) == Outcomes.Passed && Outcome(Checks.Register) is Outcomes.Passed or Outcomes.Granted
                    ? "accept"
                    : null;
            default:
                return null;
        }
    }
}

/// <summary>An event as a client received it.</summary>
public sealed record SeenEvent(long Version, Guid Id, string Type);

/// <summary>
/// What one client saw of its request's stream and when it decided: the time from submission to its threshold's
/// decision, and to the full result. <see cref="Error"/> says why it stopped without the result.
/// </summary>
public sealed record ClientRecord(string RequestId, StakeTier Tier, IReadOnlyList<SeenEvent> Events, string? Decision, TimeSpan? DecisionTime, TimeSpan? ResultTime, string? Error = null);

/// <summary>A customer's phone following its verification over HTTP, from submission until the full result.</summary>
public static class IdentityClient
{
    public static async Task<ClientRecord> FollowAsync(
        ConvergeLogClient log, string requestId, StakeTier tier, long submittedAt, TimeProvider clock, TimeSpan giveUpAfter, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(log);
        ArgumentNullException.ThrowIfNull(clock);
        var seen = new List<SeenEvent>();
        var checks = new Dictionary<string, string>(StringComparer.Ordinal);
        string? decision = null;
        TimeSpan? decidedAfter = null;
        using var giveUp = new CancellationTokenSource(giveUpAfter, clock);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, giveUp.Token);
        try
        {
            await foreach (var entry in log.ReadStreamAsync(IdentityEvents.StreamOf(requestId), 0, follow: true, linked.Token))
            {
                seen.Add(new SeenEvent(entry.Version, entry.Id, entry.Type));
                VerificationResult? result = null;
                if (entry.Type == IdentityEvents.PartialResult + "@1")
                {
                    var partial = entry.Deserialize<PartialResult>()!;
                    // An answer is never replaced by a note that the register is down or that a grant stands in for it.
                    if (Outcomes.IsFinal(partial.Outcome) || !checks.TryGetValue(partial.Check, out var known) || !Outcomes.IsFinal(known))
                    {
                        checks[partial.Check] = partial.Outcome;
                    }
                }
                else if (entry.Type == IdentityEvents.Result + "@1")
                {
                    result = entry.Deserialize<VerificationResult>()!;
                }

                if (decision is null && Thresholds.Decide(tier, checks, result) is { } decided)
                {
                    decision = decided;
                    decidedAfter = clock.GetElapsedTime(submittedAt);
                }

                if (result is not null)
                {
                    return new ClientRecord(requestId, tier, seen, decision, decidedAfter, clock.GetElapsedTime(submittedAt));
                }
            }

            return new ClientRecord(requestId, tier, seen, decision, decidedAfter, null, "the stream ended without a result");
        }
        catch (OperationCanceledException) when (giveUp.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            return new ClientRecord(requestId, tier, seen, decision, decidedAfter, null, $"no result within {giveUpAfter.TotalSeconds:0} s");
        }
    }
}
