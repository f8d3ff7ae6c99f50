namespace Converge.Testing.Simulation;

/// <summary>
/// The scheduler of one simulated process (or of the simulation's own director): it runs nothing by itself, but hands
/// each piece of work to <see cref="SimulationWorld"/>, which picks what runs next from every live scheduler by its
/// seed. Work is never run inline, so every continuation is a choice of the seed. When the process dies its queued work
/// is dropped and whatever it would queue later is never run: its memory is gone, as a killed process's is.
/// </summary>
public sealed class ProcessScheduler : TaskScheduler
{
    readonly SimulationWorld _world;

    internal ProcessScheduler(SimulationWorld world, string name) => (_world, Name) = (world, name);

    /// <summary>The process's name, as the trace shows it.</summary>
    public string Name { get; }

    /// <summary>Whether the process has died.</summary>
    public bool IsDead { get; private set; }

    /// <inheritdoc />
    public override int MaximumConcurrencyLevel => 1;

    /// <summary>Queues <paramref name="action"/> as one piece of this process's work.</summary>
    public void Post(Action action)
    {
        if (!IsDead)
        {
            new Task(action).Start(this);
        }
    }

    /// <summary>Runs <paramref name="work"/> on this scheduler; its continuations come back here.</summary>
    public Task Run(Func<Task> work) =>
        Task.Factory.StartNew(work, CancellationToken.None, TaskCreationOptions.DenyChildAttach, this).Unwrap();

    internal void Die() => IsDead = true;

    internal void Execute(Task task) => TryExecuteTask(task);

    /// <inheritdoc />
    protected override void QueueTask(Task task)
    {
        if (!IsDead)
        {
            _world.Enqueue(this, task);
        }
    }

    /// <inheritdoc />
    protected override bool TryExecuteTaskInline(Task task, bool taskWasPreviouslyQueued) => false;

    /// <inheritdoc />
    protected override IEnumerable<Task> GetScheduledTasks() => _world.QueuedOf(this);
}
