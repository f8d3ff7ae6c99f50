using Converge.Consistency;
using Converge.Contracts;
using Converge.Storage;

namespace Converge.Tests.Consistency;

public sealed class ConsistencyTokenTests
{
    [Fact]
    public void A_token_is_written_as_cv1_and_its_position_and_read_back()
    {
        var token = new ConsistencyToken(12345);

        Assert.Equal("cv1.12345", token.ToString());
        Assert.Equal(token, ConsistencyToken.Parse("cv1.12345"));
        Assert.True(ConsistencyToken.TryParse(token.ToString(), out var read));
        Assert.Equal(12345, read.Position);
        Assert.Equal(ConsistencyToken.None, ConsistencyToken.Parse("cv1.0"));
        Assert.Equal(long.MaxValue, ConsistencyToken.Parse("cv1." + long.MaxValue).Position);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("cv1.")]
    [InlineData("cv1.-1")]
    [InlineData("cv1.+1")]
    [InlineData("cv1.12a")]
    [InlineData("cv1. 12")]
    [InlineData(" cv1.12")]
    [InlineData("CV1.12")]
    [InlineData("cv2.12")]
    [InlineData("12")]
    [InlineData("cv1.99999999999999999999")]
    public void Anything_but_cv1_and_a_position_is_refused_with_the_form_expected(string? text)
    {
        Assert.False(ConsistencyToken.TryParse(text, out var token));
        Assert.Equal(ConsistencyToken.None, token);
        var error = Assert.Throws<FormatException>(() => ConsistencyToken.Parse(text!));
        Assert.Contains("not a consistency token", error.Message, StringComparison.Ordinal);
        Assert.Contains("'cv1.' followed by a log position", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void After_events_is_the_highest_position_and_None_when_there_are_none()
    {
        LogEvent[] appended = [Event(7), Event(9), Event(8)];

        Assert.Equal(new ConsistencyToken(9), ConsistencyToken.After(appended));
        Assert.Equal(new ConsistencyToken(8), ConsistencyToken.After(appended[2]));
        Assert.Equal(ConsistencyToken.None, ConsistencyToken.After([]));
    }

    [Fact]
    public void Max_keeps_the_later_token_and_tokens_order_by_position()
    {
        var earlier = new ConsistencyToken(3);
        var later = new ConsistencyToken(4);

        Assert.Equal(later, ConsistencyToken.Max(earlier, later));
        Assert.Equal(later, ConsistencyToken.Max(later, earlier));
        Assert.True(earlier < later && later > earlier && earlier <= new ConsistencyToken(3) && later >= earlier);
        Assert.Equal(-1, earlier.CompareTo(later));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ConsistencyToken(-1));
    }

    static LogEvent Event(long position) => new(position, "s", position, new Envelope
    {
        MessageId = Guid.NewGuid(),
        MessageType = "test.happened@1",
        SentAt = DateTimeOffset.UnixEpoch,
        Body = "{}"u8.ToArray(),
    });
}
