using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Testing.Simulation;

/// <summary>
/// A workload for <see cref="Simulator"/>: how each process is configured, the clients' work, when the work has
/// settled, and the properties the outcome must have. A scenario may keep state across processes (the outside world
/// its handlers call) but must draw every chance from the world it is given, never from a clock or generator of its own.
/// </summary>
public abstract class SimulationScenario
{
    /// <summary>The name <c>converge sim --scenario</c> takes.</summary>
    public abstract string Name { get; }

    /// <summary>Configures a process: messages, handlers, sagas, jobs and queues. The store, clock, random source and scheduler are the simulation's.</summary>
    public abstract void Configure(ConvergeOptions options);

    /// <summary>Registers the services a process's handlers need. Default: none.</summary>
    public virtual void ConfigureServices(IServiceCollection services)
    {
    }

    /// <summary>
    /// The clients' work (placing orders, enqueueing a close), run by the first process and again by each process that
    /// starts after a crash: it must skip what is already placed, as a client retrying after a failure would.
    /// </summary>
    public abstract Task PlaceAsync(IServiceProvider services, IMessageStore store, CancellationToken cancellationToken);

    /// <summary>Whether everything placed has finished, read from the shared <paramref name="store"/>.</summary>
    public abstract Task<bool> SettledAsync(IMessageStore store, CancellationToken cancellationToken);

    /// <summary>What is wrong with the outcome: each broken property, named; none when all hold.</summary>
    public abstract Task<IReadOnlyList<string>> JudgeAsync(IMessageStore store, CancellationToken cancellationToken);
}
