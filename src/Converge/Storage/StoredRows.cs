using System.Text.Json;
using Converge.Contracts;

namespace Converge.Storage;

/// <summary>A queue row as a job listing sees it, in the form every store reads it.</summary>
public sealed record QueueRow(long Id, string Queue, int Priority, long VisibleAt, int Attempts, bool Leased, string? History, Envelope Envelope);

/// <summary>What the stores share when they turn rows into records: attempt histories and headers as JSON, and stored times.</summary>
public static class StoredRows
{
    static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>The history with <paramref name="next"/> appended, as stored; <c>null</c> when there is none.</summary>
    public static string? WriteHistory(IReadOnlyList<AttemptRecord> history, AttemptRecord? next)
    {
        if (next is null && history.Count == 0)
        {
            return null;
        }

        var all = next is null ? history : [.. history, next];
        return JsonSerializer.Serialize(all, Json);
    }

    /// <summary>Reads a stored history; throws <see cref="JsonException"/> unless it is a list of attempts, each with its error.</summary>
    public static IReadOnlyList<AttemptRecord> ParseHistory(string? history)
    {
        var parsed = history is null ? null : JsonSerializer.Deserialize<List<AttemptRecord>>(history, Json);
        if (parsed is not null && parsed.Exists(static attempt => attempt?.Error is null))
        {
            throw new JsonException("An attempt history holds an entry that is not an attempt with its error.");
        }

        return parsed ?? [];
    }

    /// <summary>Headers as stored: a JSON object of strings; <c>null</c> when there are none.</summary>
    public static string? WriteHeaders(IReadOnlyDictionary<string, string> headers) =>
        headers.Count == 0 ? null : JsonSerializer.Serialize(headers, Json);

    /// <summary>Reads stored headers; throws <see cref="JsonException"/> unless they are a JSON object of strings.</summary>
    public static IReadOnlyDictionary<string, string> ParseHeaders(string? headers)
    {
        var parsed = headers is null ? null : JsonSerializer.Deserialize<Dictionary<string, string>>(headers, Json);
        if (parsed is not null && parsed.Values.Any(static value => value is null))
        {
            throw new JsonException("Headers hold a null value; every header is a string.");
        }

        return parsed ?? Envelope.EmptyHeaders;
    }

    /// <summary>A stored time (UTC ticks).</summary>
    public static DateTimeOffset FromTicks(long ticks) => new(ticks, TimeSpan.Zero);

    /// <summary>
    /// A stored time that may be out of .NET's range (a row Converge did not write) as the nearest time in range, for
    /// reads that only compare or wait: a wait until the end of time is a wait, not a failure.
    /// </summary>
    public static DateTimeOffset FromTicksClamped(long ticks) => new(Math.Clamp(ticks, DateTimeOffset.MinValue.UtcTicks, DateTimeOffset.MaxValue.UtcTicks), TimeSpan.Zero);

}

/// <summary>The arithmetic of a claim policy's limits, the same in every store; the store keeps the numbers.</summary>
public static class ClaimLimits
{
    /// <summary>Absorbs rounding in refills, so that 0.3 s at 10 per second is 3 permits, not 2.9999.</summary>
    public const double TokenTolerance = 1e-9;

    /// <summary>Throws when <paramref name="policy"/> is null or its rate limit is not positive.</summary>
    public static void Validate(ClaimPolicy policy)
    {
        ArgumentNullException.ThrowIfNull(policy);
        if (policy.RateLimit is { } limit && (!(limit.PermitsPerSecond > 0) || limit.Burst < 1))
        {
            throw new ArgumentException($"A rate limit needs positive permits per second and a burst of at least 1; got {limit}.", nameof(policy));
        }
    }

    /// <summary>
    /// The permits in a token bucket at <paramref name="now"/>: what was left (<paramref name="stored"/>), plus the time
    /// since its last refill at the policy's rate, at most its burst; and the refill time to store. A bucket never used
    /// starts full. A clock behind the stored refill time (another process's clock ran ahead) adds nothing and keeps that time.
    /// </summary>
    public static (double Tokens, long RefilledAt) Refill((double Tokens, long RefilledAt)? stored, RateLimit rate, DateTimeOffset now)
    {
        if (stored is not { } bucket)
        {
            return (rate.Burst, now.UtcTicks);
        }

        var elapsedTicks = Math.Max(0, now.UtcTicks - bucket.RefilledAt);
        return (Math.Min(rate.Burst, bucket.Tokens + (elapsedTicks * rate.PermitsPerSecond / TimeSpan.TicksPerSecond)), Math.Max(bucket.RefilledAt, now.UtcTicks));
    }

    /// <summary>Whole permits available in <paramref name="tokens"/>.</summary>
    public static int Permits(double tokens) => (int)Math.Min(int.MaxValue, Math.Floor(tokens + TokenTolerance));
}
