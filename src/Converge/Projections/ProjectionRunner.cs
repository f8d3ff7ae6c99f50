using Converge.Diagnostics;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.Logging;

namespace Converge.Projections;

/// <summary>
/// Builds and keeps up one projection version: reads the log after the version's checkpoint in batches, hands the
/// events it reads to the projection, and moves the checkpoint in the same transaction. Registers the version (and
/// creates its tables) the first time; makes it live when it is the first built or is told to switch itself; rebuilds
/// it when asked; stops when it is dropped.
/// </summary>
internal sealed class ProjectionRunner
{
    readonly ProjectionRegistration _registration;
    readonly IProjection _projection;
    readonly ConvergeOptions _options;
    readonly IMessageStore _store;
    readonly IDatabaseStore _database;
    readonly ProjectionCatalog _catalog;
    readonly ILogger _logger;
    readonly string _group;
    readonly Dictionary<string, Type> _types;

    public ProjectionRunner(ProjectionRegistration registration, IProjection projection, ConvergeOptions options, IMessageStore store, ProjectionCatalog catalog, ILogger logger)
    {
        _registration = registration;
        _projection = projection;
        _options = options;
        _store = store;
        _database = store.Database();
        _catalog = catalog;
        _logger = logger;
        _group = ProjectionNames.Group(registration.Name, registration.Version);
        foreach (var table in projection.Tables)
        {
            ProjectionNames.ValidateTable(registration.Name, table);
        }

        _types = projection.Events.ToDictionary(type => options.Messages.GetName(type), type => type, StringComparer.Ordinal);
    }

    string Name => _registration.Name;

    int Version => _registration.Version;

    public async Task RunAsync(CancellationToken stopping, CancellationToken abort)
    {
        var registered = false;
        var failures = 0;
        while (!stopping.IsCancellationRequested)
        {
            ConsumerGroupState? state = null;
            try
            {
                if (!registered)
                {
                    if (!await RegisterAsync(stopping))
                    {
                        return;
                    }

                    registered = true;
                }

                state = await _store.GetConsumerGroupAsync(_group, stopping) ?? new ConsumerGroupState(_group, 0, 0, null, _options.TimeProvider.GetUtcNow());
                if (state.Paused)
                {
                    await Task.Delay(_options.PollInterval, _options.TimeProvider, stopping);
                    continue;
                }

                var events = await _store.ReadLogAsync(state.Position, _registration.Options.BatchSize, stopping);
                var outcome = await ApplyAsync(state, events, abort);
                failures = 0;
                if (outcome == BatchOutcome.Dropped)
                {
                    Log.ProjectionDropped(_logger, Name, Version);
                    return;
                }

                if (outcome == BatchOutcome.Idle)
                {
                    await _store.Signals.Log.WaitAsync(_options.PollInterval, _options.TimeProvider, stopping);
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested || abort.IsCancellationRequested)
            {
                break;
            }
            catch (Exception exception)
            {
                failures++;
                var delay = _options.Retry.DelayBefore(Math.Min(failures, _options.Retry.MaxAttempts) + 1, _options.Random.NextDouble());
                Log.ProjectionFailed(_logger, exception, Name, Version, state?.Position ?? 0, failures, delay);
                try
                {
                    if (state is not null)
                    {
                        await RecordFailureAsync(state, failures, exception, stopping);
                    }

                    await Task.Delay(delay, _options.TimeProvider, stopping);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                catch (Exception recording)
                {
                    Log.ProjectionFailed(_logger, recording, Name, Version, state?.Position ?? 0, failures, delay);
                }
            }
        }
    }

    /// <summary>Adds the version to the catalogue and creates its tables, once; <c>false</c> when it was dropped.</summary>
    async Task<bool> RegisterAsync(CancellationToken cancellationToken)
    {
        await using var transaction = await _store.BeginAsync(cancellationToken);
        if (await _catalog.RegisterAsync(transaction, Name, Version, _projection.Tables, cancellationToken))
        {
            await _projection.CreateTablesAsync(Context(transaction), cancellationToken);
        }
        else if (await _catalog.ReadRowAsync(transaction, Name, Version, cancellationToken) is { State: ProjectionState.Dropped })
        {
            Log.ProjectionDropped(_logger, Name, Version);
            return false;
        }

        await transaction.CommitAsync(cancellationToken);
        return true;
    }

    async Task<BatchOutcome> ApplyAsync(ConsumerGroupState state, IReadOnlyList<LogEvent> events, CancellationToken cancellationToken)
    {
        await using var transaction = await _store.BeginAsync(cancellationToken);
        var row = await _catalog.ReadRowAsync(transaction, Name, Version, cancellationToken, share: true);
        switch (row?.State)
        {
            case null or ProjectionState.Dropped:
                return BatchOutcome.Dropped;
            case ProjectionState.Rebuilding:
                await _catalog.DropTablesAsync(transaction, Name, Version, row.Tables, cancellationToken);
                await _projection.CreateTablesAsync(Context(transaction), cancellationToken);
                await _catalog.RestartAsync(transaction, Name, Version, cancellationToken);
                await transaction.ConsumerGroups().DeleteConsumerGroupAsync(_group, cancellationToken);
                await transaction.CommitAsync(cancellationToken);
                Log.ProjectionRebuilding(_logger, Name, Version);
                return BatchOutcome.Applied;
        }

        // A built version that should be live tries again each batch until a switch goes through: the first attempt is
        // refused whenever the live version stands a few events ahead, as it does under steady writes.
        var caughtUp = events.Count < _registration.Options.BatchSize;
        var switchable = caughtUp && (row.State == ProjectionState.Building || row.State == ProjectionState.Built)
            && (_registration.Options.SwitchWhenBuilt || await _catalog.GetLiveVersionAsync(Name, cancellationToken) is null);
        if (events.Count == 0 && row.State != ProjectionState.Building && !switchable)
        {
            return BatchOutcome.Idle;
        }

        var position = state.Position;
        if (events.Count > 0)
        {
            var projected = new List<ProjectedEvent>(events.Count);
            foreach (var logEvent in events)
            {
                if (_types.TryGetValue(logEvent.Envelope.MessageType, out var type))
                {
                    projected.Add(new ProjectedEvent(logEvent, _options.Serializer.Deserialize(logEvent.Envelope.Body.Span, type)));
                }
            }

            if (projected.Count > 0)
            {
                await _projection.ApplyAsync(projected, Context(transaction), cancellationToken);
            }

            position = events[^1].Position;
            if (!await transaction.SaveConsumerGroupAsync(_group, state.Position, position, 0, null, cancellationToken))
            {
                return BatchOutcome.Applied;
            }
        }

        ProjectionSwitch? switched = null;
        if (row.State == ProjectionState.Building && caughtUp)
        {
            await _catalog.MarkBuiltAsync(transaction, Name, Version, position, cancellationToken);
        }

        if (switchable)
        {
            switched = await _catalog.SwitchInAsync(transaction, Name, Version, position, cancellationToken);
        }

        await transaction.CommitAsync(CancellationToken.None);
        _store.Signals.Checkpoints.Ring();
        if (switched is { Switched: true, Previous: { } previous })
        {
            Log.ProjectionSwitched(_logger, Name, Version, previous, position);
        }
        else if (switched is { Switched: true })
        {
            Log.ProjectionFirstLive(_logger, Name, Version, position);
        }
        else if (row.State == ProjectionState.Building && caughtUp)
        {
            Log.ProjectionBuilt(_logger, Name, Version, position);
        }

        return events.Count == 0 ? BatchOutcome.Idle : BatchOutcome.Applied;
    }

    async Task RecordFailureAsync(ConsumerGroupState state, int failures, Exception exception, CancellationToken cancellationToken)
    {
        await using var transaction = await _store.BeginAsync(cancellationToken);
        if (await transaction.SaveConsumerGroupAsync(_group, state.Position, state.Position, failures, $"{exception.GetType().Name}: {exception.Message}", cancellationToken))
        {
            await transaction.CommitAsync(cancellationToken);
        }
    }

    ProjectionContext Context(IStoreTransaction transaction) => new(Name, Version, _database, transaction);

    enum BatchOutcome
    {
        Applied,
        Idle,
        Dropped,
    }
}

/// <summary>A projection version registered with <see cref="ConvergeOptions.AddProjection{TProjection}"/>.</summary>
internal sealed record ProjectionRegistration(string Name, int Version, Type ProjectionType, ProjectionOptions Options);
