using System.Data.Common;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Converge.Storage;

namespace Converge.Projections;

/// <summary>The states of a projection version, as the catalogue stores them.</summary>
public enum ProjectionState
{
    /// <summary>Being built from position 0; readers never see it.</summary>
    Building,

    /// <summary>Caught up with the log at least once and kept up to date; not yet what readers read.</summary>
    Built,

    /// <summary>What readers read: the views point at its tables.</summary>
    Live,

    /// <summary>Was live and was replaced; kept up to date until dropped, so it can be switched back.</summary>
    Retired,

    /// <summary>A rebuild was asked for: the version's runner drops its tables and builds it again from 0.</summary>
    Rebuilding,

    /// <summary>Dropped: its tables and checkpoint are gone and its runners stop.</summary>
    Dropped,
}

/// <summary>One projection version in the catalogue, with where its checkpoint stands.</summary>
/// <param name="Name">The projection's name.</param>
/// <param name="Version">The version.</param>
/// <param name="State">Its state.</param>
/// <param name="Tables">Its tables, by logical name.</param>
/// <param name="Position">Its checkpoint: the position of the last event applied.</param>
/// <param name="Lag">Events between its checkpoint and the log's head.</param>
/// <param name="FailedAttempts">Consecutive failures at the next batch; 0 when healthy.</param>
/// <param name="LastError">The last failure, if any.</param>
/// <param name="StartedAt">When its current build started.</param>
/// <param name="BuiltAt">When it first caught up, if it has.</param>
/// <param name="BuiltPosition">The position it had reached then.</param>
/// <param name="LiveSince">When it was last switched live.</param>
/// <param name="EventsPerSecond">
/// Its build rate: positions covered per second from the start to catching up (or, while building, to now).
/// </param>
public sealed record ProjectionVersionStatus(
    string Name,
    int Version,
    ProjectionState State,
    IReadOnlyList<string> Tables,
    long Position,
    long Lag,
    int FailedAttempts,
    string? LastError,
    DateTimeOffset StartedAt,
    DateTimeOffset? BuiltAt,
    long? BuiltPosition,
    DateTimeOffset? LiveSince,
    double EventsPerSecond);

/// <summary>Two versions of a projection side by side: rows per table and a sample of the rows that differ.</summary>
/// <param name="Name">The projection.</param>
/// <param name="From">The version compared (usually the live one).</param>
/// <param name="To">The version it is compared with (usually the new one).</param>
/// <param name="Tables">Per table: row counts and differing rows.</param>
public sealed record ProjectionComparison(string Name, int From, int To, IReadOnlyList<TableComparison> Tables)
{
    /// <summary>Whether every table holds the same rows in both versions.</summary>
    public bool Same => Tables.All(t => t.Same);
}

/// <summary>One table of a <see cref="ProjectionComparison"/>.</summary>
/// <param name="Table">The logical table name.</param>
/// <param name="FromRows">Rows in the older version's table (<c>null</c> when that version has no such table).</param>
/// <param name="ToRows">Rows in the newer version's table (<c>null</c> when that version has no such table).</param>
/// <param name="OnlyInFrom">A sample of rows only the older version holds, as <c>column=value</c> lists.</param>
/// <param name="OnlyInTo">A sample of rows only the newer version holds.</param>
/// <param name="Note">Why rows could not be compared (different columns), if so.</param>
public sealed record TableComparison(string Table, long? FromRows, long? ToRows, IReadOnlyList<string> OnlyInFrom, IReadOnlyList<string> OnlyInTo, string? Note)
{
    /// <summary>Whether both versions hold the same rows.</summary>
    public bool Same => Note is null && FromRows == ToRows && OnlyInFrom.Count == 0 && OnlyInTo.Count == 0;
}

/// <summary>What <see cref="ProjectionCatalog.SwitchAsync"/> did.</summary>
/// <param name="Switched">Whether readers now read <paramref name="Version"/>.</param>
/// <param name="Version">The version asked for.</param>
/// <param name="Previous">The version that was live before, if any.</param>
/// <param name="Reason">Why it was not switched, when it was not.</param>
public sealed record ProjectionSwitch(bool Switched, int Version, int? Previous, string? Reason);

/// <summary>
/// The catalogue of projections in a store on a database: what versions exist, which one is live, and the operations
/// on them (compare, switch, rebuild, drop) that <c>converge projections</c> runs. Readers ask it for the live
/// version's views (<see cref="View"/>): a view always points at a built version's table, switched atomically.
/// </summary>
public sealed class ProjectionCatalog
{
    readonly IMessageStore _store;
    readonly IDatabaseStore _database;
    readonly TimeProvider _time;
    readonly string _catalog;

    /// <summary>Opens the catalogue of <paramref name="store"/>, which must be on a database (SQLite or PostgreSQL).</summary>
    /// <exception cref="NotSupportedException">The store has no database (the in-memory store).</exception>
    public ProjectionCatalog(IMessageStore store, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(timeProvider);
        _store = store;
        _database = store is IDatabaseStore database
            ? database
            : throw new NotSupportedException($"Projections keep their tables in the store's database; the {store.Name} store has none. Use SQLite or PostgreSQL.");
        _time = timeProvider;
        _catalog = _database.TableName("projections");
    }

    /// <summary>
    /// The quoted name of the view readers read <paramref name="table"/> of projection <paramref name="name"/> through:
    /// it shows the live version's rows. It exists once a version has been live.
    /// </summary>
    public string View(string name, string table) => _database.TableName(ProjectionNames.View(name, table));

    /// <summary>The version readers read now; <c>null</c> while none has been built.</summary>
    public async ValueTask<int?> GetLiveVersionAsync(string name, CancellationToken cancellationToken)
    {
        await using var connection = await _database.OpenReadConnectionAsync(cancellationToken);
        var versions = await QueryAsync(connection, null, $"SELECT version FROM {_catalog} WHERE name = @name AND state = 'live'", [("@name", name)], r => Convert.ToInt32(r.GetValue(0), CultureInfo.InvariantCulture), cancellationToken);
        return versions.Count == 0 ? null : versions[0];
    }

    /// <summary>Every projection version in the catalogue, by name then version, with its checkpoint and lag.</summary>
    public async ValueTask<IReadOnlyList<ProjectionVersionStatus>> ListAsync(CancellationToken cancellationToken)
    {
        List<CatalogRow> rows;
        await using (var connection = await _database.OpenReadConnectionAsync(cancellationToken))
        {
            rows = await QueryAsync(connection, null, $"SELECT {CatalogRow.Columns} FROM {_catalog} ORDER BY name, version", [], CatalogRow.Read, cancellationToken);
        }

        var head = await _store.GetLogHeadAsync(cancellationToken);
        var now = _time.GetUtcNow();
        var statuses = new List<ProjectionVersionStatus>(rows.Count);
        foreach (var row in rows)
        {
            var group = await _store.GetConsumerGroupAsync(ProjectionNames.Group(row.Name, row.Version), cancellationToken);
            var position = group?.Position ?? 0;
            var (covered, until) = row.BuiltAt is { } builtAt ? (row.BuiltPosition ?? position, builtAt) : (position, now);
            var seconds = (until - row.StartedAt).TotalSeconds;
            statuses.Add(new ProjectionVersionStatus(
                row.Name, row.Version, row.State, row.Tables, position, Math.Max(0, head - position), group?.FailedAttempts ?? 0, group?.LastError,
                row.StartedAt, row.BuiltAt, row.BuiltPosition, row.LiveSince, seconds > 0 ? covered / seconds : 0));
        }

        return statuses;
    }

    /// <summary>
    /// Compares two versions: rows per table, and up to <paramref name="sample"/> rows each holds that the other does
    /// not (whole rows compared, so tables must have the same columns). Reads outside any transaction; with writes
    /// going on, rows the two versions have not both reached yet show as differences.
    /// </summary>
    public async ValueTask<ProjectionComparison> CompareAsync(string name, int from, int to, int sample, CancellationToken cancellationToken)
    {
        var versions = await ListAsync(cancellationToken);
        var older = versions.FirstOrDefault(v => v.Name == name && v.Version == from) ?? throw Unknown(name, from);
        var newer = versions.FirstOrDefault(v => v.Name == name && v.Version == to) ?? throw Unknown(name, to);
        await using var connection = await _database.OpenReadConnectionAsync(cancellationToken);
        var tables = new List<TableComparison>();
        foreach (var table in older.Tables.Union(newer.Tables, StringComparer.Ordinal))
        {
            var a = older.Tables.Contains(table) ? _database.TableName(ProjectionNames.Table(name, from, table)) : null;
            var b = newer.Tables.Contains(table) ? _database.TableName(ProjectionNames.Table(name, to, table)) : null;
            long? aRows = a is null ? null : await CountAsync(connection, a, cancellationToken);
            long? bRows = b is null ? null : await CountAsync(connection, b, cancellationToken);
            if (a is null || b is null)
            {
                tables.Add(new TableComparison(table, aRows, bRows, [], [], $"only version {(a is null ? to : from)} has this table"));
                continue;
            }

            try
            {
                var onlyA = await QueryAsync(connection, null, $"SELECT * FROM {a} EXCEPT SELECT * FROM {b} LIMIT {sample}", [], Describe, cancellationToken);
                var onlyB = await QueryAsync(connection, null, $"SELECT * FROM {b} EXCEPT SELECT * FROM {a} LIMIT {sample}", [], Describe, cancellationToken);
                tables.Add(new TableComparison(table, aRows, bRows, onlyA, onlyB, null));
            }
            catch (DbException exception)
            {
                tables.Add(new TableComparison(table, aRows, bRows, [], [], $"rows not compared: the tables' columns differ ({exception.Message.Trim()})"));
            }
        }

        return new ProjectionComparison(name, from, to, tables);
    }

    /// <summary>
    /// Switches readers to <paramref name="version"/>: in one transaction the live version becomes retired and the views
    /// are pointed at this version's tables. Refused (not thrown) while the version is still building or stands behind
    /// the live one, so readers never see a half-built version or step back in the log.
    /// </summary>
    public async ValueTask<ProjectionSwitch> SwitchAsync(string name, int version, CancellationToken cancellationToken)
    {
        await using var transaction = await _store.BeginAsync(cancellationToken);
        var result = await SwitchInAsync(transaction, name, version, null, cancellationToken);
        if (result.Switched)
        {
            await transaction.CommitAsync(cancellationToken);
            _store.Signals.Checkpoints.Ring();
        }

        return result;
    }

    /// <summary>
    /// Asks for <paramref name="version"/> to be built again from position 0: the version's runner (in the application)
    /// drops its tables, creates them anew and replays the log. Refused for the live version: register a new version,
    /// build it beside, and switch.
    /// </summary>
    /// <exception cref="InvalidOperationException">The version is unknown, live or dropped.</exception>
    public async ValueTask RebuildAsync(string name, int version, CancellationToken cancellationToken)
    {
        await using var transaction = await _store.BeginAsync(cancellationToken);
        var row = await ReadRowAsync(transaction, name, version, cancellationToken) ?? throw Unknown(name, version);
        if (row.State is ProjectionState.Live or ProjectionState.Dropped)
        {
            throw new InvalidOperationException(row.State == ProjectionState.Live
                ? $"Version {version} of '{name}' is live: readers read it. Register a new version of the projection, let it build beside this one, and switch to it."
                : $"Version {version} of '{name}' was dropped; register a new version instead.");
        }

        await SetStateAsync(transaction, name, version, ProjectionState.Rebuilding, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
    }

    /// <summary>
    /// Drops <paramref name="version"/>: its tables and its checkpoint, in one transaction; its runners stop. Refused for
    /// the live version.
    /// </summary>
    /// <exception cref="InvalidOperationException">The version is unknown or live.</exception>
    public async ValueTask DropAsync(string name, int version, CancellationToken cancellationToken)
    {
        await using var transaction = await _store.BeginAsync(cancellationToken);
        var row = await ReadRowAsync(transaction, name, version, cancellationToken) ?? throw Unknown(name, version);
        if (row.State == ProjectionState.Live)
        {
            throw new InvalidOperationException($"Version {version} of '{name}' is live: readers read it. Switch to another version first.");
        }

        await DropTablesAsync(transaction, name, version, row.Tables, cancellationToken);
        await transaction.ConsumerGroups().DeleteConsumerGroupAsync(ProjectionNames.Group(name, version), cancellationToken);
        await SetStateAsync(transaction, name, version, ProjectionState.Dropped, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
    }

    /// <summary>Registers a version in <paramref name="transaction"/>; <c>true</c> when it is new (create its tables then).</summary>
    internal async ValueTask<bool> RegisterAsync(IStoreTransaction transaction, string name, int version, IReadOnlyList<string> tables, CancellationToken cancellationToken) =>
        await transaction.Database().ExecuteAsync(
            $"INSERT INTO {_catalog} (name, version, tables, state, started_at) VALUES (@name, @version, @tables, 'building', @now) ON CONFLICT (name, version) DO NOTHING",
            [new("@name", name), new("@version", version), new("@tables", JsonSerializer.Serialize(tables)), new("@now", _time.GetUtcNow().UtcTicks)],
            cancellationToken) == 1;

    /// <summary>
    /// Reads a version's row in <paramref name="transaction"/>; on PostgreSQL with a share lock, so that a switch (which
    /// locks every version of the projection) waits for the batch and the batch for the switch.
    /// </summary>
    internal async ValueTask<CatalogRow?> ReadRowAsync(IStoreTransaction transaction, string name, int version, CancellationToken cancellationToken, bool share = false)
    {
        var database = transaction.Database();
        var rows = await QueryAsync(
            database.Transaction.Connection!,
            database.Transaction,
            $"SELECT {CatalogRow.Columns} FROM {_catalog} WHERE name = @name AND version = @version{(share && _database.Dialect == SqlDialect.PostgreSql ? " FOR SHARE" : "")}",
            [("@name", name), ("@version", version)],
            CatalogRow.Read,
            cancellationToken);
        return rows.Count == 0 ? null : rows[0];
    }

    internal ValueTask<int> SetStateAsync(IStoreTransaction transaction, string name, int version, ProjectionState state, CancellationToken cancellationToken) =>
        transaction.Database().ExecuteAsync(
            $"UPDATE {_catalog} SET state = @state WHERE name = @name AND version = @version",
            [new("@state", CatalogRow.Format(state)), new("@name", name), new("@version", version)],
            cancellationToken);

    /// <summary>Marks a version built at <paramref name="position"/>, the first time it catches up.</summary>
    internal ValueTask<int> MarkBuiltAsync(IStoreTransaction transaction, string name, int version, long position, CancellationToken cancellationToken) =>
        transaction.Database().ExecuteAsync(
            $"UPDATE {_catalog} SET state = 'built', built_at = @now, built_position = @position WHERE name = @name AND version = @version AND state = 'building'",
            [new("@now", _time.GetUtcNow().UtcTicks), new("@position", position), new("@name", name), new("@version", version)],
            cancellationToken);

    /// <summary>Starts a version's build again: state building, started now, not built.</summary>
    internal ValueTask<int> RestartAsync(IStoreTransaction transaction, string name, int version, CancellationToken cancellationToken) =>
        transaction.Database().ExecuteAsync(
            $"UPDATE {_catalog} SET state = 'building', started_at = @now, built_at = NULL, built_position = NULL, live_since = NULL WHERE name = @name AND version = @version",
            [new("@now", _time.GetUtcNow().UtcTicks), new("@name", name), new("@version", version)],
            cancellationToken);

    internal async ValueTask DropTablesAsync(IStoreTransaction transaction, string name, int version, IReadOnlyList<string> tables, CancellationToken cancellationToken)
    {
        foreach (var table in tables)
        {
            await transaction.Database().ExecuteAsync($"DROP TABLE IF EXISTS {_database.TableName(ProjectionNames.Table(name, version, table))}", [], cancellationToken);
        }
    }

    /// <summary>
    /// The switch, in <paramref name="transaction"/>: locks every version of the projection, checks the target is
    /// built and not behind the live one (<paramref name="targetPosition"/> when the caller holds it uncommitted), then
    /// retires the live version and points the views at the target's tables.
    /// </summary>
    internal async ValueTask<ProjectionSwitch> SwitchInAsync(IStoreTransaction transaction, string name, int version, long? targetPosition, CancellationToken cancellationToken)
    {
        var database = transaction.Database();
        var rows = await QueryAsync(
            database.Transaction.Connection!,
            database.Transaction,
            $"SELECT {CatalogRow.Columns} FROM {_catalog} WHERE name = @name ORDER BY version{(_database.Dialect == SqlDialect.PostgreSql ? " FOR UPDATE" : "")}",
            [("@name", name)],
            CatalogRow.Read,
            cancellationToken);
        var target = rows.FirstOrDefault(r => r.Version == version);
        var live = rows.FirstOrDefault(r => r.State == ProjectionState.Live);
        if (target is null)
        {
            return new ProjectionSwitch(false, version, live?.Version, $"'{name}' has no version {version}; converge projections list shows the versions there are.");
        }

        if (target.State == ProjectionState.Live)
        {
            return new ProjectionSwitch(false, version, version, $"version {version} of '{name}' is already live.");
        }

        if (target.State is not (ProjectionState.Built or ProjectionState.Retired))
        {
            var at = (await _store.GetConsumerGroupAsync(ProjectionNames.Group(name, version), cancellationToken))?.Position ?? 0;
            return new ProjectionSwitch(false, version, live?.Version, target.State == ProjectionState.Dropped
                ? $"version {version} of '{name}' was dropped."
                : $"version {version} of '{name}' is still {CatalogRow.Format(target.State)} (at position {at} of {await _store.GetLogHeadAsync(cancellationToken)}); switch once it is built.");
        }

        var position = targetPosition ?? (await _store.GetConsumerGroupAsync(ProjectionNames.Group(name, version), cancellationToken))?.Position ?? 0;
        if (live is not null)
        {
            var livePosition = (await _store.GetConsumerGroupAsync(ProjectionNames.Group(name, live.Version), cancellationToken))?.Position ?? 0;
            if (position < livePosition)
            {
                return new ProjectionSwitch(false, version, live.Version, $"version {version} of '{name}' is at position {position}, behind the live version {live.Version} at {livePosition}: readers would step back. It can be switched once it has caught up, if an application runs it and its group is not paused (converge groups list); --wait keeps trying.");
            }
        }

        if (!await LockViewsAsync(transaction, target.Tables.Select(t => View(name, t)).ToList(), cancellationToken))
        {
            return new ProjectionSwitch(false, version, live?.Version, $"readers kept the views of '{name}' busy through {ViewLockAttempts} attempts to take them for the switch; try again in a moment.");
        }

        if (live is not null)
        {
            await SetStateAsync(transaction, name, live.Version, ProjectionState.Retired, cancellationToken);
        }

        await database.ExecuteAsync(
            $"UPDATE {_catalog} SET state = 'live', live_since = @now WHERE name = @name AND version = @version",
            [new("@now", _time.GetUtcNow().UtcTicks), new("@name", name), new("@version", version)],
            cancellationToken);
        foreach (var table in target.Tables)
        {
            await PointViewAsync(transaction, View(name, table), _database.TableName(ProjectionNames.Table(name, version, table)), cancellationToken);
        }

        return new ProjectionSwitch(true, version, live?.Version, null);
    }

    /// <summary>Tries to take the views for a switch, each try waiting at most <see cref="ViewLockWait"/>.</summary>
    const int ViewLockAttempts = 50;

    /// <summary>
    /// How long one try waits for readers to let go of the views: well under PostgreSQL's <c>deadlock_timeout</c>
    /// (1 s by default), so the switch gives up its locks before the deadlock detector would pick a victim.
    /// </summary>
    static readonly TimeSpan ViewLockWait = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// On PostgreSQL, takes every existing view of the switch at once, before any is replaced. Replacing a view takes
    /// it exclusively; a reader that reads two views of the projection in one statement holds one while it waits for the
    /// other, so a switch that took the views one by one, in another order, would deadlock with it and PostgreSQL
    /// would abort one of them, a reader or the switch. Each try waits at most <see cref="ViewLockWait"/> and, when
    /// readers hold a view that long, lets go of everything and tries again; readers wait for the switch, never fail.
    /// <c>false</c> when every try found the views busy. SQLite readers read a snapshot and take no such locks.
    /// </summary>
    async ValueTask<bool> LockViewsAsync(IStoreTransaction transaction, IReadOnlyList<string> views, CancellationToken cancellationToken)
    {
        if (_database.Dialect != SqlDialect.PostgreSql)
        {
            return true;
        }

        var database = transaction.Database();
        var existing = new List<string>();
        foreach (var view in views)
        {
            var found = await QueryAsync(database.Transaction.Connection!, database.Transaction, "SELECT to_regclass(@view) IS NOT NULL", [("@view", view)], r => r.GetBoolean(0), cancellationToken);
            if (found[0])
            {
                existing.Add(view);
            }
        }

        if (existing.Count == 0)
        {
            return true;
        }

        for (var attempt = 1; attempt <= ViewLockAttempts; attempt++)
        {
            await transaction.SavepointAsync(cancellationToken);
            try
            {
                await database.ExecuteAsync($"SET LOCAL lock_timeout = {(long)ViewLockWait.TotalMilliseconds}", [], cancellationToken);
                await database.ExecuteAsync($"LOCK TABLE {string.Join(", ", existing)} IN ACCESS EXCLUSIVE MODE", [], cancellationToken);
                await database.ExecuteAsync("SET LOCAL lock_timeout TO DEFAULT", [], cancellationToken);
                await transaction.ReleaseSavepointAsync(cancellationToken);
                return true;
            }
            catch (DbException exception) when (exception.SqlState == LockNotAvailable)
            {
                await transaction.RollbackToSavepointAsync(cancellationToken);
                await Task.Delay(TimeSpan.FromMilliseconds(10 * Math.Min(attempt, 5)), _time, cancellationToken);
            }
        }

        return false;
    }

    /// <summary>PostgreSQL's lock_not_available: a lock was not granted within <c>lock_timeout</c>.</summary>
    const string LockNotAvailable = "55P03";

    /// <summary>PostgreSQL's invalid_table_definition: <c>CREATE OR REPLACE VIEW</c> refuses to drop, rename or retype a column.</summary>
    const string InvalidTableDefinition = "42P16";

    /// <summary>
    /// Points a view at a table. PostgreSQL replaces it in place when the columns allow, so a reader waiting on the view
    /// reads the new table rather than failing on a dropped one; when they do not (a column dropped, renamed or retyped),
    /// and on SQLite, whose readers prepare again on a schema change, it is dropped and created anew. Any other failure
    /// (a lock timeout, a deadlock) fails the switch rather than being taken for a column change.
    /// </summary>
    async ValueTask PointViewAsync(IStoreTransaction transaction, string view, string table, CancellationToken cancellationToken)
    {
        var database = transaction.Database();
        if (_database.Dialect == SqlDialect.PostgreSql)
        {
            await transaction.SavepointAsync(cancellationToken);
            try
            {
                await database.ExecuteAsync($"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {table}", [], cancellationToken);
                await transaction.ReleaseSavepointAsync(cancellationToken);
                return;
            }
            catch (DbException exception) when (exception.SqlState == InvalidTableDefinition)
            {
                await transaction.RollbackToSavepointAsync(cancellationToken);
            }
        }

        await database.ExecuteAsync($"DROP VIEW IF EXISTS {view}", [], cancellationToken);
        await database.ExecuteAsync($"CREATE VIEW {view} AS SELECT * FROM {table}", [], cancellationToken);
    }

    static async Task<long> CountAsync(DbConnection connection, string table, CancellationToken cancellationToken) =>
        (await QueryAsync(connection, null, $"SELECT count(*) FROM {table}", [], r => Convert.ToInt64(r.GetValue(0), CultureInfo.InvariantCulture), cancellationToken))[0];

    static string Describe(DbDataReader reader)
    {
        var text = new StringBuilder();
        for (var i = 0; i < reader.FieldCount; i++)
        {
            text.Append(i == 0 ? "" : ", ").Append(reader.GetName(i)).Append('=')
                .Append(reader.IsDBNull(i) ? "null" : Convert.ToString(reader.GetValue(i), CultureInfo.InvariantCulture));
        }

        return text.ToString();
    }

    static InvalidOperationException Unknown(string name, int version) =>
        new($"'{name}' has no version {version} in the catalogue; converge projections list shows the versions there are.");

    internal static async Task<List<T>> QueryAsync<T>(DbConnection connection, DbTransaction? transaction, string sql, (string Name, object Value)[] parameters, Func<DbDataReader, T> map, CancellationToken cancellationToken)
    {
        await using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        foreach (var (name, value) in parameters)
        {
            var parameter = command.CreateParameter();
            parameter.ParameterName = name;
            parameter.Value = value;
            command.Parameters.Add(parameter);
        }

        var rows = new List<T>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            rows.Add(map(reader));
        }

        return rows;
    }
}

/// <summary>A row of the catalogue.</summary>
internal sealed record CatalogRow(string Name, int Version, IReadOnlyList<string> Tables, ProjectionState State, DateTimeOffset StartedAt, DateTimeOffset? BuiltAt, long? BuiltPosition, DateTimeOffset? LiveSince)
{
    public const string Columns = "name, version, tables, state, started_at, built_at, built_position, live_since";

    public static CatalogRow Read(DbDataReader r) => new(
        r.GetString(0),
        Convert.ToInt32(r.GetValue(1), CultureInfo.InvariantCulture),
        JsonSerializer.Deserialize<string[]>(r.GetString(2)) ?? [],
        Parse(r.GetString(3)),
        Time(r, 4)!.Value,
        Time(r, 5),
        r.IsDBNull(6) ? null : Convert.ToInt64(r.GetValue(6), CultureInfo.InvariantCulture),
        Time(r, 7));

    public static string Format(ProjectionState state) => state.ToString().ToLowerInvariant();

    static ProjectionState Parse(string state) =>
        Enum.TryParse<ProjectionState>(state, ignoreCase: true, out var parsed) ? parsed : throw new InvalidOperationException($"The projection catalogue holds an unknown state '{state}'.");

    static DateTimeOffset? Time(DbDataReader r, int ordinal) =>
        r.IsDBNull(ordinal) ? null : new DateTimeOffset(Convert.ToInt64(r.GetValue(ordinal), CultureInfo.InvariantCulture), TimeSpan.Zero);
}
