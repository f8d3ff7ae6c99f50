using Converge.Faults;
using Converge.Hosting;
using Converge.Runtime;
using Converge.Sqlite;
using Microsoft.Extensions.Options;

namespace Converge.Tests.Sagas;

/// <summary>Which rule of a fault plan acts on which step of which transaction.</summary>
public sealed class FaultInjectorTests
{
    static FaultInjector Plan(params FaultRule[] rules) => Plan(0, rules);

    static FaultInjector Plan(int seed, params FaultRule[] rules)
    {
        var plan = new FaultPlanOptions { Enabled = true, Seed = seed };
        foreach (var rule in rules)
        {
            plan.Rules.Add(rule);
        }

        return new FaultInjector(plan);
    }

    [Theory]
    [InlineData("test-fail-ship-*", "test-fail-ship-1", true)]
    [InlineData("test-fail-ship-*", "test-fail-ship-", true)]
    [InlineData("test-fail-ship-*", "test-fail-shipping", false)]
    [InlineData("test-fail-ship-*", "x-test-fail-ship-1", false)]
    [InlineData("test-fail-ship-*", "Test-Fail-Ship-1", false)]
    [InlineData("order-?", "order-1", true)]
    [InlineData("order-?", "order-12", false)]
    [InlineData("order-?", "order-", false)]
    [InlineData("*", "anything at all", true)]
    [InlineData("a*b*c", "aXXbYYc", true)]
    [InlineData("a*b*c", "abc", true)]
    [InlineData("a*b*c", "acb", false)]
    [InlineData("*-canary", "eu-canary", true)]
    [InlineData("*-canary", "eu-canary-2", false)]
    [InlineData("exact", "exact", true)]
    [InlineData("exact", "exactly", false)]
    public void Transaction_ids_match_the_rules_glob(string pattern, string transactionId, bool matches)
    {
        var injector = Plan(new FaultRule { TransactionId = pattern });

        Assert.Equal(matches, injector.Find(FaultAction.Fail, transactionId, "ship") is not null);
    }

    [Theory]
    [InlineData(null, "ship", true)]
    [InlineData("*", "ship", true)]
    [InlineData("ship", "ship", true)]
    [InlineData("ship", "charge", false)]
    [InlineData("Ship", "ship", false)]
    public void A_rule_acts_on_its_step_only(string? ruleStep, string step, bool matches)
    {
        var injector = Plan(new FaultRule { Step = ruleStep });

        Assert.Equal(matches, injector.Find(FaultAction.Fail, "tx", step) is not null);
    }

    [Fact]
    public void A_header_condition_is_a_name_or_a_name_and_value()
    {
        var byName = Plan(new FaultRule { Header = "x-canary" });
        var byValue = Plan(new FaultRule { Header = "x-canary=eu" });
        var byEmptyValue = Plan(new FaultRule { Header = "x-canary=" });
        var eu = new Dictionary<string, string> { ["x-canary"] = "eu" };
        var us = new Dictionary<string, string> { ["x-canary"] = "us" };
        var empty = new Dictionary<string, string> { ["x-canary"] = "" };
        var other = new Dictionary<string, string> { ["x-other"] = "eu" };

        Assert.NotNull(byName.Find(FaultAction.Fail, "tx", "ship", 1, eu));
        Assert.NotNull(byName.Find(FaultAction.Fail, "tx", "ship", 1, us));
        Assert.Null(byName.Find(FaultAction.Fail, "tx", "ship", 1, other));
        Assert.Null(byName.Find(FaultAction.Fail, "tx", "ship", 1, null));
        Assert.NotNull(byValue.Find(FaultAction.Fail, "tx", "ship", 1, eu));
        Assert.Null(byValue.Find(FaultAction.Fail, "tx", "ship", 1, us));
        Assert.Null(byValue.Find(FaultAction.Fail, "tx", "ship", 1, null));
        Assert.NotNull(byEmptyValue.Find(FaultAction.Fail, "tx", "ship", 1, empty));
        Assert.Null(byEmptyValue.Find(FaultAction.Fail, "tx", "ship", 1, eu));
        Assert.NotNull(Plan(new FaultRule()).Find(FaultAction.Fail, "tx", "ship", 1, null));
    }

    [Fact]
    public void Times_limits_a_rule_to_the_first_attempts()
    {
        var injector = Plan(new FaultRule { Times = 2 });

        Assert.Equal([true, true, false, false], Enumerable.Range(1, 4).Select(attempt => injector.Find(FaultAction.Fail, "tx", "ship", attempt) is not null));
        Assert.NotNull(Plan(new FaultRule()).Find(FaultAction.Fail, "tx", "ship", 1000));
    }

    [Fact]
    public void A_rule_acts_only_for_its_action_and_the_first_matching_rule_wins()
    {
        var delay = new FaultRule { Action = FaultAction.Delay, Step = "ship" };
        var specific = new FaultRule { Action = FaultAction.Fail, TransactionId = "vip-*", Error = "specific" };
        var general = new FaultRule { Action = FaultAction.Fail, Error = "general" };
        var injector = Plan(delay, specific, general);

        Assert.Same(delay, injector.Find(FaultAction.Delay, "vip-1", "ship"));
        Assert.Null(injector.Find(FaultAction.Delay, "vip-1", "charge"));
        Assert.Same(specific, injector.Find(FaultAction.Fail, "vip-1", "ship"));
        Assert.Same(general, injector.Find(FaultAction.Fail, "regular-1", "ship"));
        Assert.Null(injector.Find(FaultAction.DropReply, "vip-1", "ship"));
    }

    [Fact]
    public void Probability_picks_the_same_transactions_for_the_same_seed_and_others_for_another()
    {
        var ids = Enumerable.Range(0, 400).Select(i => "order-" + i).ToList();
        HashSet<string> Chosen(int seed, double probability)
        {
            var injector = Plan(seed, new FaultRule { Probability = probability });
            return [.. ids.Where(id => injector.Find(FaultAction.Fail, id, "ship") is not null)];
        }

        var first = Chosen(7, 0.5);
        var again = Chosen(7, 0.5);
        var otherSeed = Chosen(8, 0.5);

        Assert.Equal(first, again);
        Assert.NotEqual(first, otherSeed);
        Assert.InRange(first.Count, 140, 260);
        Assert.InRange(otherSeed.Count, 140, 260);
        Assert.Empty(Chosen(7, 0));
        Assert.Equal(ids.Count, Chosen(7, 1).Count);
    }

    [Fact]
    public void Probability_chooses_per_transaction_and_step_the_same_way_on_every_attempt()
    {
        var injector = Plan(3, new FaultRule { Probability = 0.5 });
        var ids = Enumerable.Range(0, 50).Select(i => "tx-" + i);

        Assert.All(ids, id => Assert.Equal(
            injector.Find(FaultAction.Fail, id, "ship", 1) is not null,
            injector.Find(FaultAction.Fail, id, "ship", 7) is not null));
    }

    [Fact]
    public void A_disabled_plan_does_nothing()
    {
        var plan = new FaultPlanOptions { Enabled = false };
        plan.Rules.Add(new FaultRule());
        var disabled = new FaultInjector(plan);
        var empty = new FaultInjector(new FaultPlanOptions { Enabled = true });

        Assert.False(disabled.Enabled);
        Assert.Null(disabled.Find(FaultAction.Fail, "tx", "ship"));
        Assert.False(empty.Enabled);
        Assert.Null(empty.Find(FaultAction.Fail, "tx", "ship"));
        Assert.Null(Plan(new FaultRule()).Find(FaultAction.Fail, null, "ship"));
    }

    [Fact]
    public void Invalid_rules_are_reported_at_start_up_with_their_fix()
    {
        var options = new ConvergeOptions();
        options.UseSqlite(Path.Combine(Path.GetTempPath(), "never-opened.db"));
        options.Faults.Rules.Add(new FaultRule { Probability = 1.5 });
        options.Faults.Rules.Add(new FaultRule { TransactionId = "" });
        options.Faults.Rules.Add(new FaultRule { Times = 0 });
        options.Faults.Rules.Add(new FaultRule { Action = FaultAction.Delay, Delay = TimeSpan.Zero });

        var error = Assert.Throws<OptionsValidationException>(() => ConvergeOptionsValidator.ThrowIfInvalid(options));

        Assert.Equal(
            ["Faults.Rules[0]: Probability is 1.5; use 0 to 1.",
             "Faults.Rules[1]: TransactionId is empty; use '*' to match every transaction.",
             "Faults.Rules[2]: Times is 0; use at least 1, or leave it unset for every attempt.",
             "Faults.Rules[3]: a Delay rule needs a positive Delay."],
            error.Failures);
    }
}
