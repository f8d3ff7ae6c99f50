using Converge.Contracts;

namespace Converge.Tests;

public sealed class MessageIdsTests
{
    [Fact]
    public void Ids_are_version_7_with_the_RFC_variant_and_the_given_time()
    {
        var now = new DateTimeOffset(2031, 3, 4, 5, 6, 7, 891, TimeSpan.Zero);

        var id = MessageIds.New(now);

        Assert.Equal(7, id.Version);
        Assert.Equal(0b10, id.Variant >> 2);
        var bytes = id.ToByteArray(bigEndian: true);
        var milliseconds = ((long)bytes[0] << 40) | ((long)bytes[1] << 32) | ((long)bytes[2] << 24) | ((long)bytes[3] << 16) | ((long)bytes[4] << 8) | bytes[5];
        Assert.Equal(now.ToUnixTimeMilliseconds(), milliseconds);
    }

    [Fact]
    public void Ids_sort_by_time_and_do_not_repeat()
    {
        var start = new DateTimeOffset(2031, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var ids = Enumerable.Range(0, 200_000).Select(i => MessageIds.New(start.AddMilliseconds(i / 100))).ToList();

        Assert.Equal(ids.Count, ids.Distinct().Count());
        var earlier = MessageIds.New(start);
        var later = MessageIds.New(start.AddMilliseconds(1));
        Assert.True(string.CompareOrdinal(earlier.ToString("N"), later.ToString("N")) < 0);
    }
}
