using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Converge.Samples.Billing;

/// <summary>
/// Deterministic job ids. A job enqueued twice under the same id (a second month close of the same period, a
/// retried fan-out) is the same job: the worker's inbox records each id once, so its effects happen once.
/// </summary>
public static class JobIds
{
    /// <summary>
    /// The id of the <paramref name="step"/> job of one account in one period. The first eight bytes come from a
    /// hash of step and period, the last eight are the account id: ids of one step ascend with the account, so a
    /// million of them land in the store's indexes in order rather than at random places.
    /// </summary>
    public static Guid For(string step, string period, long accountId)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(accountId);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(accountId, 1L << 62); // the top two bits hold the UUID variant
        Span<byte> bytes = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(step + ":" + period), bytes);
        BinaryPrimitives.WriteInt64BigEndian(bytes[8..], accountId);
        return Versioned(bytes[..16]);
    }

    /// <summary>The id of a job named by <paramref name="name"/> alone (fan-out ranges, one per period and range).</summary>
    public static Guid For(string name)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(name), hash);
        return Versioned(hash[..16]);
    }

    /// <summary>Marks the bytes as an RFC 9562 version 8 (application-defined) UUID.</summary>
    static Guid Versioned(Span<byte> bytes)
    {
        bytes[6] = (byte)((bytes[6] & 0x0F) | 0x80);
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80);
        return new Guid(bytes, bigEndian: true);
    }
}

/// <summary>Seeded, order-independent chance: the same seed, salt and id give the same number in every process.</summary>
public static class Seeded
{
    /// <summary>A 64-bit hash of (<paramref name="seed"/>, <paramref name="salt"/>, <paramref name="id"/>) (SplitMix64 steps).</summary>
    public static ulong Hash(int seed, ulong salt, long id) => Mix(Mix((ulong)(uint)seed ^ salt) ^ (ulong)id);

    /// <summary>A number in [0, 1).</summary>
    public static double Unit(int seed, ulong salt, long id) => (Hash(seed, salt, id) >> 11) * (1.0 / (1UL << 53));

    /// <summary>A number in [<paramref name="min"/>, <paramref name="max"/>).</summary>
    public static long Between(int seed, ulong salt, long id, long min, long max) => min + (long)(Hash(seed, salt, id) % (ulong)(max - min));

    static ulong Mix(ulong x)
    {
        x += 0x9E3779B97F4A7C15;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB;
        return x ^ (x >> 31);
    }
}
