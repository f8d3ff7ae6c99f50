using System.Buffers.Binary;

namespace Converge.Contracts;

/// <summary>
/// Time-ordered message ids (UUID version 7: 48 bits of Unix milliseconds, then random bits). Ids need to be
/// unique, not unguessable, so the 74 random bits come from a per-thread xoshiro256** generator whose whole
/// 256-bit state is seeded once from the operating system, instead of a system call per id as
/// <see cref="Guid.CreateVersion7(DateTimeOffset)"/> makes.
/// </summary>
public static class MessageIds
{
    [ThreadStatic]
    static Random? _random;

    /// <summary>
    /// Restarts this thread's generator from <paramref name="seed"/>: the ids made on this thread from now on repeat
    /// with the seed and the clock. For a deterministic simulation, which runs all of its work on one thread; a
    /// process that shares a database with others must never call it, as its ids could then collide with theirs.
    /// </summary>
    public static void ReseedThisThread(int seed) => _random = new Random(seed);

    /// <summary>A new version 7 id for the moment <paramref name="now"/>.</summary>
    public static Guid New(DateTimeOffset now)
    {
        var random = _random ??= new Random();
        Span<byte> bytes = stackalloc byte[16];
        random.NextBytes(bytes[6..]);
        var milliseconds = (ulong)now.ToUnixTimeMilliseconds();
        BinaryPrimitives.WriteUInt16BigEndian(bytes, (ushort)(milliseconds >> 32));
        BinaryPrimitives.WriteUInt32BigEndian(bytes[2..], (uint)milliseconds);
        bytes[6] = (byte)((bytes[6] & 0x0F) | 0x70);
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80);
        return new Guid(bytes, bigEndian: true);
    }
}
