namespace Converge.Samples.Identity;

/// <summary>
/// The outside services the checks call, simulated: each takes a seeded random time within its range, fails now and
/// then with a transient error that a retry gets past, and gives a seeded answer. The licence register is down for a
/// stretch (<see cref="OutageStart"/> to <see cref="OutageEnd"/> after <see cref="Begin"/>). Every draw is derived from
/// the seed, the request's number, the check and the attempt, so a run gives the same answers whatever order the
/// jobs run in. All waiting is on <see cref="Clock"/>.
/// </summary>
public sealed class IdentitySimulation(TimeProvider clock, int seed, TimeSpan outageStart, TimeSpan outageEnd)
{
    long _began;
    long _transientFailures;

    /// <summary>The latency ranges in milliseconds, and the share of answers that fail the check.</summary>
    static readonly Dictionary<string, (int Min, int Max, double FailRate)> Profiles = new(StringComparer.Ordinal)
    {
        [Checks.Ocr] = (300, 1500, 0.03),
        [Checks.FaceExtraction] = (300, 1200, 0.02),
        [Checks.Tamper] = (400, 2000, 0.02),
        [Checks.Register] = (500, 2500, 0.08),
        [Checks.FaceMatch] = (1000, 4000, 0.03),
    };

    /// <summary>The share of calls that fail with a transient error (a connection reset early in the call).</summary>
    public const double TransientRate = 0.05;

    /// <summary>How long a call to the register waits before it gives up while the register is down.</summary>
    public static readonly TimeSpan RegisterTimeout = TimeSpan.FromMilliseconds(200);

    public TimeProvider Clock => clock;

    public TimeSpan OutageStart => outageStart;

    public TimeSpan OutageEnd => outageEnd;

    public long TransientFailures => Interlocked.Read(ref _transientFailures);

    /// <summary>Starts the run's timeline: the outage is placed relative to this moment.</summary>
    public void Begin() => Interlocked.Exchange(ref _began, clock.GetTimestamp());

    /// <summary>Time since <see cref="Begin"/>.</summary>
    public TimeSpan Elapsed => clock.GetElapsedTime(Interlocked.Read(ref _began));

    /// <summary>Whether the licence register is down now.</summary>
    public bool RegisterIsDown => Elapsed >= outageStart && Elapsed < outageEnd;

    /// <summary>Waits until the register is back (at once when it is).</summary>
    public Task WaitForRegisterAsync(CancellationToken cancellationToken)
    {
        var left = outageEnd - Elapsed;
        return left > TimeSpan.Zero ? Task.Delay(left, clock, cancellationToken) : Task.CompletedTask;
    }

    /// <summary>
    /// Calls the service behind <paramref name="check"/> for request <paramref name="number"/>: waits its latency and
    /// returns whether the check passed, or throws <see cref="TransientServiceException"/> early in the call.
    /// </summary>
    public async Task<bool> CallAsync(string check, int number, int attempt, CancellationToken cancellationToken)
    {
        var (min, max, _) = Profiles[check];
        var random = Draw(check, number, attempt);
        var latency = TimeSpan.FromMilliseconds(random.Next(min, max + 1));
        if (random.NextDouble() < TransientRate)
        {
            await Task.Delay(latency * (0.1 + (0.2 * random.NextDouble())), clock, cancellationToken);
            Interlocked.Increment(ref _transientFailures);
            throw new TransientServiceException($"{check} for request {number}: connection reset (attempt {attempt + 1})");
        }

        await Task.Delay(latency, clock, cancellationToken);
        return Passes(check, number);
    }

    /// <summary>The service's answer for request <paramref name="number"/>: the same on every attempt.</summary>
    public bool Passes(string check, int number) => Draw(check, number, -1).NextDouble() >= Profiles[check].FailRate;

    /// <summary>The stake of request <paramref name="number"/>: £2, £50 or £3,000.</summary>
    public long StakeOf(int number) => Draw("stake", number, 0).NextDouble() switch
    {
        < 0.4 => 200,
        < 0.8 => 5_000,
        _ => 300_000,
    };

    /// <summary>The pause before request <paramref name="number"/> arrives after the one before it.</summary>
    public TimeSpan ArrivalGap(int number, TimeSpan mean) => mean * -Math.Log(1 - Draw("arrival", number, 0).NextDouble());

    Random Draw(string check, int number, int attempt)
    {
        // Stable across processes and runs (string.GetHashCode is not): a small FNV-1a over the check's name.
        var hash = 2166136261u;
        foreach (var c in check)
        {
            hash = (hash ^ c) * 16777619u;
        }

        return new Random(unchecked((int)((uint)seed * 2654435761u ^ hash ^ ((uint)number * 40503u) ^ ((uint)(attempt + 7) * 2246822519u))));
    }
}

/// <summary>A failure of an outside service that is worth retrying.</summary>
public sealed class TransientServiceException : Exception
{
    public TransientServiceException(string message) : base(message) { }

    public TransientServiceException() { }

    public TransientServiceException(string message, Exception innerException) : base(message, innerException) { }
}
