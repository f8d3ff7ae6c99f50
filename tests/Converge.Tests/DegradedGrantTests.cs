using Converge.Degraded;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing;
using Converge.Testing.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests;

/// <summary>
/// Degraded modes: a limited permission granted while a dependency is down is recorded on the log with the caller's
/// transaction, and confirmed or revoked, each recorded too, once the dependency is back.
/// </summary>
public sealed class DegradedGrantTests
{
    static readonly DateTimeOffset Start = new(2026, 11, 20, 9, 0, 0, TimeSpan.Zero);

    [Fact]
    public async Task Grant_confirm_and_revoke_are_events_on_the_dependencys_stream_and_a_revoked_grant_is_reported()
    {
        var clock = new FakeTimeProvider(Start);
        await using var host = await ConvergeTestHost.StartAsync(o => { o.UseInMemory(); o.TimeProvider = clock; });
        var grants = host.Services.GetRequiredService<IDegradedGrants>();

        var alice = await GrantAsync(host, grants, "alice");
        var bob = await GrantAsync(host, grants, "bob");
        Assert.Equal((DegradedGrantState.Granted, Start + TimeSpan.FromMinutes(30)), (alice.State, alice.ExpiresAt));
        Assert.True(alice.IsInForce(Start));

        clock.Advance(TimeSpan.FromMinutes(5));
        var review = await grants.ReviewAsync("sms", (grant, _) => ValueTask.FromResult(grant.Subject == "alice"
            ? DegradedDecision.Confirm("phone number verified by SMS")
            : DegradedDecision.Revoke("the SMS code was never entered")));

        Assert.Equal([alice.Id], review.Confirmed.Select(g => g.Id));
        Assert.Equal([bob.Id], review.Revoked.Select(g => g.Id));
        Assert.Equal(0, review.SettledElsewhere);
        var listed = await grants.ListAsync("sms");
        Assert.Equal(
            [("alice", DegradedGrantState.Confirmed, "phone number verified by SMS"), ("bob", DegradedGrantState.Revoked, "the SMS code was never entered")],
            listed.Select(g => (g.Subject, g.State, g.SettledReason)));
        Assert.All(listed, g => Assert.Equal(Start + TimeSpan.FromMinutes(5), g.SettledAt));
        Assert.False(listed[1].IsInForce(clock.GetUtcNow()));
        Assert.True(listed[0].IsInForce(clock.GetUtcNow()));

        var stream = await host.Store.ReadStreamAsync("degraded-sms", 1, 10, CancellationToken.None);
        Assert.Equal(
            ["converge.degraded-granted@1", "converge.degraded-granted@1", "converge.degraded-confirmed@1", "converge.degraded-revoked@1"],
            stream.Select(e => e.Envelope.MessageType));
        Assert.Equal(alice.Id, stream[0].Envelope.MessageId);

        var again = await grants.ReviewAsync("sms", (_, _) => throw new InvalidOperationException("nothing is open, so nothing is re-checked"));
        Assert.Empty(again.Confirmed);
        Assert.Empty(again.Revoked);
    }

    [Fact]
    public async Task A_grant_rolled_back_with_the_callers_transaction_is_not_recorded()
    {
        await using var host = await ConvergeTestHost.StartAsync(o => o.UseInMemory());
        var grants = host.Services.GetRequiredService<IDegradedGrants>();

        await using (var transaction = await host.Bus.BeginTransactionAsync())
        {
            await grants.GrantAsync(new DegradedGrantRequest("sms", "carol", "read-only", TimeSpan.FromMinutes(30), "SMS service down"), transaction);
        }

        Assert.Empty(await grants.ListAsync("sms"));
    }

    [Fact]
    public async Task A_grant_settled_from_a_stale_read_is_refused_so_it_cannot_be_settled_twice()
    {
        await using var host = await ConvergeTestHost.StartAsync(o => o.UseInMemory());
        var grants = host.Services.GetRequiredService<IDegradedGrants>();
        await GrantAsync(host, grants, "dave");
        var read = (await grants.ListAsync("sms")).Single();

        await SettleAsync(host, grants, read, DegradedDecision.Revoke("first reviewer"));
        await Assert.ThrowsAsync<StreamVersionConflictException>(async () => await SettleAsync(host, grants, read, DegradedDecision.Confirm("second reviewer")));

        var settled = (await grants.ListAsync("sms")).Single();
        Assert.Equal((DegradedGrantState.Revoked, "first reviewer"), (settled.State, settled.SettledReason));
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await SettleAsync(host, grants, settled, DegradedDecision.Confirm("again")));
    }

    [Fact]
    public async Task A_grant_without_a_positive_duration_or_with_an_invalid_dependency_name_is_refused()
    {
        await using var host = await ConvergeTestHost.StartAsync(o => o.UseInMemory());
        var grants = host.Services.GetRequiredService<IDegradedGrants>();
        await using var transaction = await host.Bus.BeginTransactionAsync();

        var forever = await Assert.ThrowsAsync<ArgumentException>(async () =>
            await grants.GrantAsync(new DegradedGrantRequest("sms", "erin", "read-only", TimeSpan.Zero, "down"), transaction));
        Assert.Contains("positive duration", forever.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ArgumentException>(async () =>
            await grants.GrantAsync(new DegradedGrantRequest("sms service", "erin", "read-only", TimeSpan.FromMinutes(1), "down"), transaction));
    }

    static async Task<DegradedGrant> GrantAsync(ConvergeTestHost host, IDegradedGrants grants, string subject)
    {
        await using var transaction = await host.Bus.BeginTransactionAsync();
        var grant = await grants.GrantAsync(new DegradedGrantRequest("sms", subject, "read-only", TimeSpan.FromMinutes(30), "SMS service down: no second factor"), transaction);
        await transaction.CommitAsync();
        return grant;
    }

    static async Task SettleAsync(ConvergeTestHost host, IDegradedGrants grants, DegradedGrant grant, DegradedDecision decision)
    {
        await using var transaction = await host.Bus.BeginTransactionAsync();
        await grants.SettleAsync(grant, decision, transaction);
        await transaction.CommitAsync();
    }
}
