using Converge.Testing.Conformance;
using Xunit;

namespace Converge.Testing.Tests;

/// <summary>The order checker of the ordering-key tests finds each fault it claims to find.</summary>
public sealed class OrderedEffectsTests
{
    static readonly Dictionary<string, int> ThreeOfA = new(StringComparer.Ordinal) { ["a"] = 3 };

    [Fact]
    public void Keys_handled_one_at_a_time_in_send_order_pass()
    {
        OrderedEffect[] rows = [new("a", 1, 1), new("b", 1, 1), new("a", 2, 2), new("b", 2, 2), new("a", 3, 3)];

        Assert.Empty(OrderedEffects.Violations(rows, ThreeOfA));
    }

    [Fact]
    public void A_sequence_handled_after_a_later_one_is_reported()
    {
        OrderedEffect[] rows = [new("a", 1, 1), new("a", 3, 2), new("a", 2, 3)];

        Assert.Equal(["a: sequence 2 was handled after sequence 3."], OrderedEffects.Violations(rows, ThreeOfA));
    }

    [Fact]
    public void Two_messages_of_a_key_handled_at_once_are_reported()
    {
        // Two handlers of one key that ran at once both counted one row before them.
        OrderedEffect[] rows = [new("a", 1, 1), new("a", 2, 2), new("a", 3, 2)];

        var violation = Assert.Single(OrderedEffects.Violations(rows, ThreeOfA));
        Assert.Contains("handled at once", violation, StringComparison.Ordinal);
    }

    [Fact]
    public void A_message_never_handled_or_handled_twice_is_reported()
    {
        OrderedEffect[] missing = [new("a", 1, 1), new("a", 2, 2)];
        OrderedEffect[] twice = [new("a", 1, 1), new("a", 2, 2), new("a", 2, 3), new("a", 3, 4)];

        Assert.Equal(["a: 1 of 3 never handled (first: sequence 3)."], OrderedEffects.Violations(missing, ThreeOfA));
        Assert.Equal(["a: sequence 2 was handled twice."], OrderedEffects.Violations(twice, ThreeOfA));
    }
}
