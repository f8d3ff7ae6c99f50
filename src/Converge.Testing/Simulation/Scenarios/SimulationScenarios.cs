namespace Converge.Testing.Simulation.Scenarios;

/// <summary>The scenarios <c>converge sim</c> runs, by name.</summary>
public static class SimulationScenarios
{
    /// <summary>The names: <c>shop</c>, <c>month-close</c>, <c>identity</c>.</summary>
    public static IReadOnlyList<string> Names { get; } = ["shop", "month-close", "identity"];

    /// <summary>A new scenario of <paramref name="name"/> (one of <see cref="Names"/>), with <paramref name="planted"/> in it.</summary>
    /// <exception cref="ArgumentException">No scenario has that name.</exception>
    public static SimulationScenario Create(string name, PlantedBug planted = PlantedBug.None) => name switch
    {
        "shop" => new ShopScenario(planted),
        "month-close" => new MonthCloseScenario(planted),
        "identity" => new IdentityScenario(planted),
        _ => throw new ArgumentException($"No scenario is named '{name}'; the scenarios are {string.Join(", ", Names)}.", nameof(name)),
    };
}
