using Converge.Faults;
using Microsoft.Extensions.Configuration;

namespace Converge.Tests.Sagas;

/// <summary>A production canary is switched on by configuration, not by code.</summary>
public sealed class FaultPlanConfigurationTests
{
    [Fact]
    public void A_fault_plan_binds_from_a_configuration_section()
    {
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["Converge:Faults:Enabled"] = "true",
                ["Converge:Faults:Seed"] = "7",
                ["Converge:Faults:Rules:0:TransactionId"] = "test-fail-ship-*",
                ["Converge:Faults:Rules:0:Step"] = "ship",
                ["Converge:Faults:Rules:0:Error"] = "carrier down",
                ["Converge:Faults:Rules:1:Step"] = "charge",
                ["Converge:Faults:Rules:1:Action"] = "Delay",
                ["Converge:Faults:Rules:1:Delay"] = "00:00:03",
                ["Converge:Faults:Rules:1:Times"] = "1",
            })
            .Build();
        var plan = new FaultPlanOptions();

        configuration.GetSection("Converge:Faults").Bind(plan);
        var faults = new FaultInjector(plan);

        Assert.True(plan.Enabled);
        Assert.Equal(7, plan.Seed);
        Assert.Equal(2, plan.Rules.Count);
        Assert.Equal("carrier down", faults.Find(FaultAction.Fail, "test-fail-ship-0042", "ship")?.Error);
        Assert.Null(faults.Find(FaultAction.Fail, "order-0042", "ship"));
        Assert.Equal(TimeSpan.FromSeconds(3), faults.Find(FaultAction.Delay, "order-1", "charge", attempt: 1)?.Delay);
        Assert.Null(faults.Find(FaultAction.Delay, "order-1", "charge", attempt: 2));
    }
}
