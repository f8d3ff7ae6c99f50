namespace Converge.Storage;

/// <summary>
/// A rate limit for a job queue (<c>QueueOptions.RateLimit</c>), kept in the store as a token bucket shared by every
/// process: <paramref name="PermitsPerSecond"/> refill, at most <paramref name="Burst"/> saved up.
/// </summary>
/// <param name="PermitsPerSecond">Sustained starts per second; must be positive.</param>
/// <param name="Burst">The most starts allowed at once after a quiet spell; at least 1.</param>
public sealed record RateLimit(double PermitsPerSecond, int Burst);
