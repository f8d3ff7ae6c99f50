using System.Data.Common;
using Converge.Runtime;
using Converge.Storage;

namespace Converge.Testing.Conformance;

/// <summary>
/// The store a conformance suite runs on. A store's test project derives one, saying how to point options at a fresh
/// store (<see cref="Use"/>) and what to clean up afterwards (<see cref="CleanUpAsync"/>), and then one class per suite
/// the store offers, each a single line that passes a new instance to the suite's constructor:
/// <see cref="QueueConformanceTests"/>, <see cref="LogConformanceTests"/> and <see cref="InboxConformanceTests"/> (the
/// core, for every store); <see cref="StoreQueriesConformanceTests"/>, <see cref="SagaStorageConformanceTests"/> and
/// <see cref="JobStorageConformanceTests"/> (optional contracts); and, for a store on an ADO.NET database, a
/// <see cref="DatabaseConformanceStore"/> and <see cref="DatabaseConformanceTests"/>. Each test gets its own instance.
/// </summary>
public abstract class ConformanceStore : IAsyncDisposable
{
    /// <summary>
    /// Points <paramref name="options"/> at the store named <paramref name="storeName"/>: the same name within one test
    /// means the same store (as two processes would share it); a new test gets new, empty stores.
    /// </summary>
    public abstract void Use(ConvergeOptions options, string storeName);

    /// <summary>
    /// Whether the store keeps ordering keys on the conformance queues (default <c>true</c>). A transport that cannot
    /// (RabbitMQ) says <c>false</c>, and the ordering facts then check that it refuses keyed sends instead.
    /// </summary>
    public virtual bool KeepsOrderingKeys => true;

    /// <summary>Removes what the test's stores left behind, through <see cref="CleanUpAsync"/>.</summary>
    public async ValueTask DisposeAsync()
    {
        await CleanUpAsync();
        GC.SuppressFinalize(this);
    }

    /// <summary>Removes what the test's stores left behind (files, schemas, broker queues). The default does nothing.</summary>
    protected virtual ValueTask CleanUpAsync() => ValueTask.CompletedTask;
}

/// <summary>
/// A store on an ADO.NET database the suites reach with their own SQL: the conformance handlers write their effects as
/// rows of a table there, and <see cref="DatabaseConformanceTests"/> spoils queue rows with SQL.
/// </summary>
public abstract class DatabaseConformanceStore : ConformanceStore
{
    /// <summary>Opens a connection to the database of <paramref name="store"/> for the test's own SQL.</summary>
    public abstract Task<DbConnection> OpenConnectionAsync(IMessageStore store);

    /// <summary>The store's queue table as the test's own SQL names it on a connection from <see cref="OpenConnectionAsync"/>.</summary>
    public abstract string QueueTable { get; }

    /// <summary>
    /// One way a queue row can hold what Converge never writes to <paramref name="Column"/>, so that the row cannot be
    /// decoded; <paramref name="Value"/> draws a value (a type the store's column accepts) for the test's SQL.
    /// </summary>
    /// <param name="Column">The queue table's column.</param>
    /// <param name="Value">Draws one spoiling value.</param>
    public sealed record RowDamage(string Column, Func<Random, object> Value);

    /// <summary>
    /// The damage the fuzz fact inflicts on queue rows. The default is what every store's column types allow (text that
    /// is not headers or a history, times outside .NET's range, attempt counts no claim can raise); a store whose
    /// columns accept more (SQLite's are untyped) adds its own.
    /// </summary>
    public virtual IReadOnlyList<RowDamage> RowDamages => PortableRowDamages;

    /// <summary>Damage every store's column types allow.</summary>
    public static IReadOnlyList<RowDamage> PortableRowDamages { get; } =
    [
        new("headers", r => "x" + Garbage(r)),
        new("headers", r => "{\"n\":" + r.Next() + "}"),
        new("headers", _ => "{\"a\":null}"),
        new("headers", _ => "[\"not\",\"an\",\"object\"]"),
        new("headers", r => "{\"a\":" + new string('[', 70 + r.Next(30)) + new string(']', 100) + "}"),
        new("history", r => "x" + Garbage(r)),
        new("history", _ => "[null]"),
        new("history", _ => "[{}]"),
        new("history", _ => "{\"attempt\":1}"),
        new("sent_at", r => -1 - r.NextInt64(long.MaxValue - 1)),
        new("sent_at", r => DateTimeOffset.MaxValue.UtcTicks + 1 + r.NextInt64(long.MaxValue - DateTimeOffset.MaxValue.UtcTicks - 1)),
        new("as_of", r => -1 - r.NextInt64(long.MaxValue - 1)),
        new("as_of", _ => long.MaxValue),
        new("attempts", _ => int.MaxValue),
        new("attempts", r => -r.Next(1, int.MaxValue)),
    ];

    /// <summary>Printable junk of random length.</summary>
    public static string Garbage(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var chars = new char[random.Next(0, 40)];
        for (var i = 0; i < chars.Length; i++)
        {
            chars[i] = (char)random.Next(32, 127);
        }

        return new string(chars);
    }

    /// <summary>Visible-at values no consumer will reach that the store's column accepts; SQLite adds values that are not numbers.</summary>
    public virtual IReadOnlyList<object> StrandedVisibleAts => PortableStrandedVisibleAts;

    /// <summary>Visible-at values no consumer will reach that every store's column accepts.</summary>
    public static IReadOnlyList<object> PortableStrandedVisibleAts { get; } =
    [
        new DateTimeOffset(2300, 1, 1, 0, 0, 0, TimeSpan.Zero).UtcTicks,
        DateTimeOffset.MaxValue.UtcTicks,
        long.MaxValue,
    ];
}
