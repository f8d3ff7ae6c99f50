using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;

namespace Converge.Tests;

/// <summary>What a new application meets first: errors that name the registration to add, and its own tables.</summary>
public sealed class SendingTests
{
    sealed record Unregistered(string Id);

    sealed record Unrouted(string Id);

    [Fact]
    public async Task Sending_a_type_with_no_name_says_it_has_no_type_name_and_names_the_registration()
    {
        await using var host = await ConvergeTestHost.StartAsync(_ => { });

        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () => await host.Bus.SendAsync(new Unregistered("1")));

        Assert.Contains("has no message type name", error.Message, StringComparison.Ordinal);
        Assert.Contains("o.Messages.Register<Unregistered>(\"", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("has no queue", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Enqueueing_a_job_with_no_name_says_it_has_no_type_name()
    {
        await using var host = await ConvergeTestHost.StartAsync(_ => { });

        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () => await host.Jobs.EnqueueAsync(new Unregistered("1")));

        Assert.Contains("o.Messages.Register<Unregistered>(\"", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sending_a_named_type_with_no_route_says_it_has_no_queue_and_names_the_fixes()
    {
        await using var host = await ConvergeTestHost.StartAsync(o => o.Messages.Register<Unrouted>("tests.unrouted"));

        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () => await host.Bus.SendAsync(new Unrouted("1")));

        Assert.Contains("Unrouted has no queue", error.Message, StringComparison.Ordinal);
        Assert.Contains("o.Route<Unrouted>(\"queue\")", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_application_creates_and_writes_its_own_tables_in_a_transaction_from_the_bus()
    {
        await using var host = await ConvergeTestHost.StartAsync(_ => { });

        await using (var schema = await host.Bus.BeginTransactionAsync())
        {
            Assert.Equal(0, await schema.ExecuteAsync("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, note TEXT)"));
            await schema.CommitAsync();
        }

        await using (var transaction = await host.Bus.BeginTransactionAsync())
        {
            Assert.Equal(1, await transaction.ExecuteAsync("INSERT INTO orders (id, note) VALUES (@id, @note)", ("@id", "order-1"), ("@note", null)));
            await transaction.CommitAsync();
        }

        await using (var rolledBack = await host.Bus.BeginTransactionAsync())
        {
            await rolledBack.ExecuteAsync("INSERT INTO orders (id, note) VALUES (@id, @note)", ("@id", "order-2"), ("@note", "never committed"));
        }

        await using var read = await host.Store.Database().OpenReadConnectionAsync(CancellationToken.None);
        await using var command = read.CreateCommand();
        command.CommandText = "SELECT group_concat(id || ':' || coalesce(note, 'null')) FROM orders";
        Assert.Equal("order-1:null", await command.ExecuteScalarAsync());
    }
}
