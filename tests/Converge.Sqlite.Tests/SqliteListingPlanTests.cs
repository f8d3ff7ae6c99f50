using Microsoft.Data.Sqlite;

namespace Converge.Sqlite.Tests;

/// <summary>
/// The dashboard's listings read an index in their order and stop at the page's end: no statement sorts all its rows
/// (a temporary B-tree for the whole ORDER BY) or scans a table, whatever filters it has. A sort would read every matching row on every page,
/// which is what makes a page of a million succeeded jobs slow.
/// </summary>
public sealed class SqliteListingPlanTests : IDisposable
{
    readonly string _folder = Directory.CreateTempSubdirectory("converge-sqlite-plan-").FullName;

    public static TheoryData<string> Listings()
    {
        var schema = new SqliteSchema("converge_");
        var data = new TheoryData<string>();
        foreach (var (name, statements) in new[]
        {
            ("sagas", schema.QuerySagas),
            ("dead letters", schema.PageDeadLetters),
            ("succeeded jobs", schema.ListInboxJobs),
            ("dead jobs", schema.ListDeadLetterJobs),
        })
        {
            for (var i = 0; i < statements.Count; i++)
            {
                data.Add($"{name} {i}");
            }
        }

        data.Add("dead-letter groups");
        data.Add("operator log");
        return data;
    }

    [Theory]
    [MemberData(nameof(Listings))]
    public async Task A_listing_reads_an_index_in_its_order(string listing)
    {
        await using var store = new SqliteMessageStore(new SqliteStoreOptions { Path = Path.Combine(_folder, "plan.db") }, TimeProvider.System);
        await store.MigrateAsync(CancellationToken.None);
        var schema = store.Schema;
        var space = listing.LastIndexOf(' ');
        IReadOnlyList<string> family = listing[..space] switch
        {
            "sagas" => schema.QuerySagas,
            "dead letters" => schema.PageDeadLetters,
            "succeeded jobs" => schema.ListInboxJobs,
            "dead jobs" => schema.ListDeadLetterJobs,
            _ => [],
        };
        var sql = listing switch
        {
            "dead-letter groups" => schema.GroupDeadLetters,
            "operator log" => schema.ListOperatorActions,
            _ => family[int.Parse(listing[(space + 1)..], System.Globalization.CultureInfo.InvariantCulture)],
        };

        using var connection = store.OpenConnection();
        using var command = connection.CreateCommand();
        command.CommandText = "EXPLAIN QUERY PLAN " + sql;
        var plan = new List<string>();
        using (var reader = command.ExecuteReader())
        {
            while (reader.Read())
            {
                plan.Add(reader.GetString(3));
            }
        }

        // A sort of the rows that share a time ("RIGHT PART" or "LAST TERM OF ORDER BY": succeeded jobs of one queue and
        // batch, whose index orders by consumer, which the filter fixes) stays within a page's rows; a sort of every
        // matching row ("FOR ORDER BY") does not.
        Assert.DoesNotContain(plan, step => step.Contains("TEMP B-TREE FOR ORDER BY", StringComparison.Ordinal) || step.Contains("TEMP B-TREE FOR DISTINCT", StringComparison.Ordinal));

        // The only table a listing may scan is the small list of job queues, which its IN reads once.
        Assert.All(plan.Where(step => step.StartsWith("SCAN ", StringComparison.Ordinal) && !step.Contains("job_queues", StringComparison.Ordinal)), step => Assert.Contains("INDEX", step, StringComparison.Ordinal));
    }

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(_folder, recursive: true);
    }
}
