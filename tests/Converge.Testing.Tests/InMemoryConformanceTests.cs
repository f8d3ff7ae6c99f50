using System.Collections.Concurrent;
using System.Data.Common;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing.Conformance;
using Converge.Testing.InMemory;

namespace Converge.Testing.Tests;

/// <summary>The conformance suite on the in-memory store: every fact that does not need a database.</summary>
public sealed class InMemoryConformanceTests : MessageStoreConformanceTests
{
    const string NeedsCallersTransaction = "The in-memory store has no database: there is no DbTransaction of the caller's to send in (Enlist).";
    const string NeedsSqlRows = "The in-memory store has no table rows that SQL could spoil: it holds only what Converge wrote.";
    const string NeedsReadConnection = "The in-memory store has no database to open a read connection to.";

    // The same name within a test is the same store, as two processes share a database; the first host's clock is its clock.
    readonly ConcurrentDictionary<string, InMemoryMessageStore> _stores = new(StringComparer.Ordinal);

    protected override bool HasDatabase => false;

    protected override void UseStore(ConvergeOptions options, string storeName) =>
        options.StoreFactory = context => _stores.GetOrAdd(storeName, _ => new InMemoryMessageStore(context.TimeProvider));

    protected override Task<DbConnection> OpenConnectionAsync(IMessageStore store) => throw new NotSupportedException(NeedsSqlRows);

    protected override string QueueTable => throw new NotSupportedException(NeedsSqlRows);

    [Fact(Skip = NeedsCallersTransaction)]
    public override Task Outbox_send_commits_and_rolls_back_with_the_callers_transaction() => base.Outbox_send_commits_and_rolls_back_with_the_callers_transaction();

    [Fact(Skip = NeedsSqlRows)]
    public override Task Rows_that_cannot_be_decoded_are_dead_lettered_as_invalid_and_the_queue_goes_on() => base.Rows_that_cannot_be_decoded_are_dead_lettered_as_invalid_and_the_queue_goes_on();

    [Fact(Skip = NeedsSqlRows)]
    public override Task Rows_no_consumer_will_reach_are_reported_as_stranded() => base.Rows_no_consumer_will_reach_are_reported_as_stranded();

    [Fact(Skip = NeedsSqlRows)]
    public override Task Job_row_that_cannot_be_decoded_is_dead_lettered_at_its_claim_and_counted_failed_in_its_batch() => base.Job_row_that_cannot_be_decoded_is_dead_lettered_at_its_claim_and_counted_failed_in_its_batch();

    [Fact(Skip = NeedsSqlRows)]
    public override Task Job_row_that_cannot_be_decoded_is_listed_looked_up_and_cancelled() => base.Job_row_that_cannot_be_decoded_is_listed_looked_up_and_cancelled();

    [Fact(Skip = NeedsReadConnection)]
    public override Task Read_connection_sees_committed_effects_and_refuses_writes() => base.Read_connection_sees_committed_effects_and_refuses_writes();
}
