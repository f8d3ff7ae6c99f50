using Converge.Runtime;
using Converge.Storage;

namespace Converge.Samples.Identity;

/// <summary>Wires the identity service into Converge: a job queue per check, and the consumer group that collects them.</summary>
public static class IdentitySetup
{
    public const string Group = "identity-verification";

    public static void Configure(ConvergeOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        o.Messages
            .Register<VerificationRequested>(IdentityEvents.Requested).Register<PartialResult>(IdentityEvents.PartialResult)
            .Register<VerificationResult>(IdentityEvents.Result).Register<VerificationStatistics>(IdentityEvents.Statistics)
            .Register<ReadLicence>("identity.read-licence").Register<ExtractFace>("identity.extract-face").Register<DetectTampering>("identity.detect-tampering")
            .Register<CheckRegister>("identity.check-register").Register<MatchFace>("identity.match-face");
        o.Job<ReadLicence, CheckHandlers>("identity.ocr");
        o.Job<ExtractFace, CheckHandlers>("identity.face-extraction");
        o.Job<DetectTampering, CheckHandlers>("identity.tamper");
        o.Job<CheckRegister, CheckHandlers>("identity.register");
        o.Job<MatchFace, CheckHandlers>("identity.face-match");
        foreach (var queue in new[] { "identity.ocr", "identity.face-extraction", "identity.tamper", "identity.register", "identity.face-match" })
        {
            // The jobs mostly wait on their service: many run at once.
            o.Queue(queue, q => q.Concurrency = 512);
        }

        o.Subscribe<PartialResult, IdentityStateMachine>(Group);

        // Transient service failures are retried soon: the client is waiting.
        o.Retry.InitialDelay = TimeSpan.FromMilliseconds(50);
        o.Retry.MaxDelay = TimeSpan.FromSeconds(1);
        o.Retry.MaxAttempts = 8;
    }

    public static async Task CreateTablesAsync(IMessageBus bus, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(bus);
        await using var transaction = await bus.BeginTransactionAsync(cancellationToken);
        await transaction.ExecuteAsync(
            "CREATE TABLE IF NOT EXISTS identity_requests (id TEXT PRIMARY KEY, number INTEGER NOT NULL, stake_pence BIGINT NOT NULL, submitted_at BIGINT NOT NULL, grant_id TEXT NULL, verdict TEXT NULL)",
            [], cancellationToken);
        await transaction.ExecuteAsync(
            "CREATE TABLE IF NOT EXISTS identity_checks (request_id TEXT NOT NULL, check_name TEXT NOT NULL, outcome TEXT NOT NULL, PRIMARY KEY (request_id, check_name))",
            [], cancellationToken);
        await transaction.ExecuteAsync(
            "CREATE TABLE IF NOT EXISTS identity_statistics (id INTEGER PRIMARY KEY, results BIGINT NOT NULL, verified BIGINT NOT NULL, refused BIGINT NOT NULL, grants BIGINT NOT NULL)",
            [], cancellationToken);
        await transaction.ExecuteAsync("INSERT INTO identity_statistics (id, results, verified, refused, grants) VALUES (1, 0, 0, 0, 0)", [], cancellationToken);
        await transaction.CommitAsync(cancellationToken);
    }
}
