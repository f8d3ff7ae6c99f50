namespace Converge.Jobs;

/// <summary>What to do with occurrences of a recurring job that were missed while no process ran.</summary>
public enum MisfirePolicy
{
    /// <summary>Run once for all the missed occurrences (the latest of them), then keep to the schedule. The default.</summary>
    RunOnce,

    /// <summary>Skip the missed occurrences; run at the next one.</summary>
    Skip,
}
