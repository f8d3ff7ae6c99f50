using Npgsql;

namespace Converge.PostgreSql.Tests;

/// <summary>
/// A claim must walk its index in order and stop after the batch, however stale the table's statistics are: right after
/// a burst of enqueues they still describe an empty table, and a plan that reads and sorts every waiting row would run for
/// each claim until autovacuum catches up.
/// </summary>
public sealed class ClaimPlanTests : IAsyncDisposable
{
    readonly TestDatabase _database = new();

    public ValueTask DisposeAsync() => _database.DisposeAsync();

    [Theory]
    [InlineData(false, "queue_ready")]
    [InlineData(true, "queue_oldest")]
    public async Task A_claim_reads_its_index_in_order_while_the_statistics_say_the_queue_is_empty(bool oldestFirst, string index)
    {
        var schema = _database.Schema("plan" + (oldestFirst ? "_oldest" : ""));
        await using var store = new PostgreSqlMessageStore(new PostgreSqlStoreOptions { ConnectionString = TestDatabase.ConnectionString, Schema = schema }, TimeProvider.System);
        await store.MigrateAsync(CancellationToken.None);
        await using var connection = new NpgsqlConnection(TestDatabase.ConnectionString);
        await connection.OpenAsync();
        await ExecuteAsync(connection, $"""
            ALTER TABLE "{schema}".queue SET (autovacuum_enabled = false);
            ANALYZE "{schema}".queue;
            INSERT INTO "{schema}".queue (queue, visible_at, message_id, message_type, sent_at, body)
            SELECT 'burst', n, gen_random_uuid(), 'probe', n, '\x00'::bytea FROM generate_series(1, 50000) AS n;
            """);

        await using var transaction = await connection.BeginTransactionAsync();
        foreach (var setting in PostgreSqlSchema.PinClaimPlan)
        {
            await ExecuteAsync(connection, setting);
        }

        await using var explain = new NpgsqlCommand("EXPLAIN " + (oldestFirst ? store.Schema.ClaimOldest : store.Schema.Claim), connection);
        explain.Parameters.AddWithValue("until", long.MaxValue);
        explain.Parameters.AddWithValue("token", Guid.NewGuid());
        explain.Parameters.AddWithValue("queue", "burst");
        explain.Parameters.AddWithValue("now", 60_000L);
        explain.Parameters.AddWithValue("max", 64);
        var plan = new List<string>();
        await using (var reader = await explain.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                plan.Add(reader.GetString(0));
            }
        }

        var text = string.Join('\n', plan);
        Assert.Contains($"Index Scan using {index}", text, StringComparison.Ordinal);
        Assert.DoesNotContain("Sort", text, StringComparison.Ordinal);
        Assert.DoesNotContain("Bitmap", text, StringComparison.Ordinal);
    }

    static async Task ExecuteAsync(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }
}
