using Converge.Jobs;
using Converge.Sagas;
using Converge.Verification;

namespace Converge.Testing.Tests;

/// <summary>Each property names the violation planted in it: a lost effect, a repeated one, a compensation after the pivot, a skipped event.</summary>
public sealed class InvariantsTests
{
    static readonly (string, string?)[] Shop = [("reserve", "release"), ("charge", "refund"), ("ship", null)];

    [Fact]
    public void Exactly_once_names_a_lost_effect_a_repeated_one_and_one_never_asked_for()
    {
        Assert.Equal(
            ["b taken 0 times", "c taken 2 times", "x taken 1 times, never asked for"],
            Invariants.ExactlyOnce(["a", "b", "c"], ["a", "c", "c", "x"]));
        Assert.Empty(Invariants.ExactlyOnce(["a", "b"], ["b", "a"]));
    }

    [Theory]
    [InlineData(SagaState.Completed, "reserve,charge,ship")]
    [InlineData(SagaState.Compensated, "reserve,release")]
    [InlineData(SagaState.Compensated, "reserve,charge,refund,release")]
    [InlineData(SagaState.Compensated, "")]
    public void A_saga_done_or_undone_in_reverse_holds(SagaState state, string effects)
    {
        Assert.Empty(Invariants.SagaOutcome("o-1", state, Split(effects), Shop));
    }

    [Theory]
    [InlineData(SagaState.Completed, "reserve,charge,ship,refund")] // a compensation after the pivot
    [InlineData(SagaState.Compensated, "reserve,charge,release,refund")] // undone out of order
    [InlineData(SagaState.Completed, "reserve,reserve,charge,ship")] // a step taken twice
    [InlineData(SagaState.Compensated, "release")] // undoing what never happened
    [InlineData(SagaState.Completed, "reserve,ship")] // a step lost
    public void A_saga_otherwise_is_named(SagaState state, string effects)
    {
        var violation = Assert.Single(Invariants.SagaOutcome("o-1", state, Split(effects), Shop));
        Assert.StartsWith($"o-1: effects {string.Join(", ", Split(effects))}", violation, StringComparison.Ordinal);
    }

    [Fact]
    public void A_saga_whose_state_disagrees_with_its_effects_or_that_is_missing_is_named()
    {
        Assert.Equal(["o-1: every step done, but the saga is Running"], Invariants.SagaOutcome("o-1", SagaState.Running, ["reserve", "charge", "ship"], Shop));
        Assert.Equal(["o-1: saga missing"], Invariants.SagaOutcome("o-1", null, [], Shop));
    }

    [Fact]
    public void A_group_that_skips_repeats_or_reorders_an_event_is_named()
    {
        Assert.Empty(Invariants.ReadExactlyOnceInOrder("group g", [3, 5, 9], [3, 5, 9]));
        Assert.Equal(["group g skipped position 5"], Invariants.ReadExactlyOnceInOrder("group g", [3, 5, 9], [3, 9]));
        Assert.Equal(["group g repeated position 5"], Invariants.ReadExactlyOnceInOrder("group g", [3, 5, 9], [3, 5, 5, 9]));
        Assert.Equal(["group g read position 3 after 5"], Invariants.ReadExactlyOnceInOrder("group g", [3, 5, 9], [5, 3, 9]));
    }

    [Fact]
    public void Batch_counters_that_are_off_or_unfinished_are_named()
    {
        var finished = new JobBatchRecord { Id = "b", Total = 3, Succeeded = 3, Sealed = true, FinishedAt = DateTimeOffset.UnixEpoch };
        Assert.Empty(Invariants.BatchCounters("b", finished, 3));
        Assert.Equal(["batch b missing"], Invariants.BatchCounters("b", null, 3));
        Assert.Equal(
            ["batch b counts total 3, succeeded 2, failed 0, pending 1, not finished; expected total 3, succeeded 3, failed 0"],
            Invariants.BatchCounters("b", finished with { Succeeded = 2, Pending = 1, FinishedAt = null }, 3));
    }

    static string[] Split(string effects) => effects.Length == 0 ? [] : effects.Split(',');
}
