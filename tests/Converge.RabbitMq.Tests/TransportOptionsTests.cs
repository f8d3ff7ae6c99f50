using Converge.Runtime;
using Converge.Sqlite;

namespace Converge.RabbitMq.Tests;

/// <summary>Names the transport puts on the broker are checked whole, before anything connects.</summary>
public sealed class TransportOptionsTests
{
    static readonly Uri Broker = new("amqp://guest:guest@127.0.0.1:1/");

    [Theory]
    [InlineData("app\n", "QueuePrefix 'app\n' is not valid")]
    [InlineData("app:\r\n", "QueuePrefix 'app:\r\n' is not valid")]
    public void A_queue_prefix_with_a_trailing_line_break_is_refused(string prefix, string expected)
    {
        var error = Assert.Throws<ArgumentException>(() => new ConvergeOptions().UseSqlite("unused.db").UseRabbitMq(Broker, o => o.QueuePrefix = prefix));

        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_dead_letter_queue_name_with_a_trailing_line_break_is_refused()
    {
        var error = Assert.Throws<ArgumentException>(() => new ConvergeOptions().UseSqlite("unused.db").UseRabbitMq(Broker, o => o.DeadLetterQueue = "dead\n"));

        Assert.Contains("DeadLetterQueue 'dead\n' is not valid", error.Message, StringComparison.Ordinal);
    }
}
