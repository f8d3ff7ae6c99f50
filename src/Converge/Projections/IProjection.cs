using Converge.Storage;

namespace Converge.Projections;

/// <summary>
/// A projection: turns the log's events into rows of read tables it owns. Each registered version
/// (<see cref="Runtime.ConvergeOptions.AddProjection{TProjection}"/>) has tables of its own, is built from position 0
/// beside the live one, and serves readers only once it is switched live. Resolved from the application's services
/// (a singleton unless registered otherwise); calls for one version never overlap.
/// </summary>
public interface IProjection
{
    /// <summary>
    /// The tables this version owns, by logical name (lower-case letters, digits and '_', starting with a letter), for
    /// example <c>["totals"]</c>. <see cref="ProjectionContext.Table"/> gives each its physical name; readers read the
    /// live version through a view per table (<see cref="ProjectionCatalog.View"/>).
    /// </summary>
    IReadOnlyList<string> Tables { get; }

    /// <summary>The event types the projection reads (each registered in <c>o.Messages</c>); other events are skipped.</summary>
    IReadOnlyList<Type> Events { get; }

    /// <summary>
    /// Creates this version's tables (named with <see cref="ProjectionContext.Table"/>), in the transaction that
    /// registers the version; again, after dropping them, when a rebuild is asked for.
    /// </summary>
    ValueTask CreateTablesAsync(ProjectionContext context, CancellationToken cancellationToken);

    /// <summary>
    /// Applies events in log order. Runs in the transaction that moves the version's checkpoint past them, so an
    /// event is applied once: writes go through <see cref="ProjectionContext.Database"/> (or its
    /// <see cref="IDatabaseTransaction.Transaction"/>). A batch holds up to
    /// <see cref="ProjectionOptions.BatchSize"/> events; aggregating a batch in memory and writing each row once is
    /// what makes a rebuild fast. Throwing rolls the batch back; it is tried again with backoff, never skipped.
    /// </summary>
    ValueTask ApplyAsync(IReadOnlyList<ProjectedEvent> events, ProjectionContext context, CancellationToken cancellationToken);
}

/// <summary>An event handed to a projection: where it sits in the log and its deserialized body.</summary>
/// <param name="Event">The stored event: position, stream, version and envelope.</param>
/// <param name="Message">The body, deserialized as the type registered for its name.</param>
public sealed record ProjectedEvent(LogEvent Event, object Message);

/// <summary>How one projection version is run.</summary>
public sealed class ProjectionOptions
{
    /// <summary>Events read and applied per transaction. Default 1,000: a rebuild runs at batch speed.</summary>
    public int BatchSize { get; set; } = 1_000;

    /// <summary>
    /// Whether this version becomes live by itself once it has caught up. Default <c>false</c>: a version is switched
    /// live with <c>converge projections switch</c> (or <see cref="ProjectionCatalog.SwitchAsync"/>), after a compare.
    /// The first version of a projection, with none live, always becomes live once built.
    /// </summary>
    public bool SwitchWhenBuilt { get; set; }
}
