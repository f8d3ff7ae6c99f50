using System.Data.Common;
using System.Globalization;
using Converge.Degraded;
using Converge.Runtime;

namespace Converge.Samples.Identity;

/// <summary>
/// Collects the checks' partial results (a consumer group over the log, so each is handled once, in log order, with
/// its checkpoint in the same transaction as what it decides). While the licence register is down and the licence has
/// been read, it grants a degraded permission (stakes up to £50) through <see cref="IDegradedGrants"/> and tells the
/// client on the request's stream; when every check has answered it publishes the result; every
/// <see cref="StatisticsEvery"/> results it publishes the running statistics.
/// </summary>
public sealed class IdentityStateMachine(IDegradedGrants grants) : IHandler<PartialResult>
{
    /// <summary>The dependency whose outage the grants stand in for.</summary>
    public const string RegisterDependency = "licence-register";

    /// <summary>What a degraded grant allows: stakes up to £50, on the licence read but not checked against the register.</summary>
    public const string Permission = "stake-up-to-50";

    /// <summary>How long a grant holds unless revisited: longer than any outage the demo simulates.</summary>
    public static readonly TimeSpan GrantDuration = TimeSpan.FromMinutes(10);

    public const int StatisticsEvery = 25;

    public async Task HandleAsync(PartialResult message, MessageContext context, CancellationToken cancellationToken)
    {
        if (message.Outcome == Outcomes.Granted)
        {
            return; // This machine's own note to the client.
        }

        // First answer per check wins; "unavailable" is the one outcome a later answer replaces.
        await context.ExecuteAsync(
            "INSERT INTO identity_checks (request_id, check_name, outcome) VALUES (@request, @check, @outcome) "
            + "ON CONFLICT (request_id, check_name) DO UPDATE SET outcome = excluded.outcome WHERE identity_checks.outcome = 'unavailable'",
            [("@request", message.RequestId), ("@check", message.Check), ("@outcome", message.Outcome)],
            cancellationToken);
        var transaction = await context.GetTransactionAsync(cancellationToken);
        var checks = await ReadChecksAsync(transaction, message.RequestId, cancellationToken);
        var (grantId, verdict) = await ReadRequestAsync(transaction, message.RequestId, cancellationToken);
        if (verdict is not null)
        {
            return;
        }

        var stream = IdentityEvents.StreamOf(message.RequestId);
        if (grantId is null && checks.GetValueOrDefault(Checks.Register) == Outcomes.Unavailable && checks.GetValueOrDefault(Checks.Ocr) == Outcomes.Passed)
        {
            var grant = await grants.GrantAsync(
                new DegradedGrantRequest(RegisterDependency, message.RequestId, Permission, GrantDuration, "licence register down; licence read by OCR"),
                context,
                cancellationToken);
            grantId = grant.Id.ToString();
            await context.ExecuteAsync("UPDATE identity_requests SET grant_id = @grant WHERE id = @request", [("@grant", grantId), ("@request", message.RequestId)], cancellationToken);
            await context.PublishAsync(
                stream,
                new PartialResult(message.RequestId, Checks.Register, Outcomes.Granted, $"register down: {Permission} granted until {grant.ExpiresAt:HH:mm:ss}, to be revisited", grant.Id, Permission),
                cancellationToken: cancellationToken);
        }

        if (!Checks.All.All(c => checks.TryGetValue(c, out var outcome) && Outcomes.IsFinal(outcome)))
        {
            return;
        }

        var failed = Checks.All.Where(c => checks[c] == Outcomes.Failed).ToList();
        verdict = failed.Count == 0 ? "verified" : "refused";
        await context.ExecuteAsync("UPDATE identity_requests SET verdict = @verdict WHERE id = @request", [("@verdict", verdict), ("@request", message.RequestId)], cancellationToken);
        await context.PublishAsync(stream, new VerificationResult(message.RequestId, verdict, failed, grantId is not null), cancellationToken: cancellationToken);

        await context.ExecuteAsync(
            "UPDATE identity_statistics SET results = results + 1, verified = verified + @verified, refused = refused + @refused, grants = grants + @granted WHERE id = 1",
            [("@verified", failed.Count == 0 ? 1 : 0), ("@refused", failed.Count == 0 ? 0 : 1), ("@granted", grantId is null ? 0 : 1)],
            cancellationToken);
        var statistics = await ReadStatisticsAsync(transaction, cancellationToken);
        if (statistics.Results % StatisticsEvery == 0)
        {
            await context.PublishAsync(IdentityEvents.StatisticsStream, statistics, cancellationToken: cancellationToken);
        }
    }

    static async Task<Dictionary<string, string>> ReadChecksAsync(DbTransaction transaction, string requestId, CancellationToken cancellationToken)
    {
        await using var command = Command(transaction, "SELECT check_name, outcome FROM identity_checks WHERE request_id = @request", ("@request", requestId));
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var checks = new Dictionary<string, string>(StringComparer.Ordinal);
        while (await reader.ReadAsync(cancellationToken))
        {
            checks[reader.GetString(0)] = reader.GetString(1);
        }

        return checks;
    }

    static async Task<(string? GrantId, string? Verdict)> ReadRequestAsync(DbTransaction transaction, string requestId, CancellationToken cancellationToken)
    {
        await using var command = Command(transaction, "SELECT grant_id, verdict FROM identity_requests WHERE id = @request", ("@request", requestId));
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        if (!await reader.ReadAsync(cancellationToken))
        {
            throw new InvalidOperationException($"Request {requestId} has partial results but no row in identity_requests.");
        }

        return (reader.IsDBNull(0) ? null : reader.GetString(0), reader.IsDBNull(1) ? null : reader.GetString(1));
    }

    static async Task<VerificationStatistics> ReadStatisticsAsync(DbTransaction transaction, CancellationToken cancellationToken)
    {
        await using var command = Command(transaction, "SELECT results, verified, refused, grants FROM identity_statistics WHERE id = 1");
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        return new VerificationStatistics(Long(reader, 0), Long(reader, 1), Long(reader, 2), Long(reader, 3));
    }

    static long Long(DbDataReader reader, int column) => Convert.ToInt64(reader.GetValue(column), CultureInfo.InvariantCulture);

    static DbCommand Command(DbTransaction transaction, string sql, params (string Name, object? Value)[] parameters)
    {
        var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        foreach (var (name, value) in parameters)
        {
            var parameter = command.CreateParameter();
            parameter.ParameterName = name;
            parameter.Value = value ?? DBNull.Value;
            command.Parameters.Add(parameter);
        }

        return command;
    }
}
