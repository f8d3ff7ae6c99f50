namespace Converge.Samples.Identity;

/// <summary>The five checks of an identity verification. Face match needs the face extraction's result.</summary>
public static class Checks
{
    public const string Ocr = "ocr";
    public const string FaceExtraction = "face-extraction";
    public const string Tamper = "tamper";
    public const string Register = "register";
    public const string FaceMatch = "face-match";

    public static readonly IReadOnlyList<string> All = [Ocr, FaceExtraction, Tamper, Register, FaceMatch];
}

/// <summary>What a check found, as written in <see cref="PartialResult.Outcome"/>.</summary>
public static class Outcomes
{
    public const string Passed = "passed";
    public const string Failed = "failed";

    /// <summary>The licence register could not be asked: it is down. Superseded by its answer once it is back.</summary>
    public const string Unavailable = "unavailable";

    /// <summary>The register is down and a degraded grant stands in for it (see <see cref="PartialResult.GrantId"/>).</summary>
    public const string Granted = "granted";

    public static bool IsFinal(string outcome) => outcome is Passed or Failed;
}

/// <summary>The event types of the sample, each with its version: what the services publish and the clients read.</summary>
public static class IdentityEvents
{
    public const string Requested = "identity.requested";
    public const string PartialResult = "identity.partial-result";
    public const string Result = "identity.result";
    public const string Statistics = "identity.statistics";

    /// <summary>Every request's events are on its own stream: requested, then partial results as they exist, then the result.</summary>
    public static string StreamOf(string requestId) => "identity-" + requestId;

    /// <summary>The stream of the running statistics.</summary>
    public const string StatisticsStream = "identity-statistics";
}

/// <summary>A verification was submitted: pictures of a driving licence and a video of the face are in.</summary>
public sealed record VerificationRequested(string RequestId, long StakePence, DateTimeOffset SubmittedAt);

/// <summary>
/// One check's result, published the moment it exists. <see cref="GrantId"/> is set when the outcome is
/// <see cref="Outcomes.Granted"/>.
/// </summary>
public sealed record PartialResult(string RequestId, string Check, string Outcome, string Detail, Guid? GrantId = null, string? Permission = null);

/// <summary>Every check has answered: <c>verified</c> when all passed, else <c>refused</c> with the checks that failed.</summary>
public sealed record VerificationResult(string RequestId, string Verdict, IReadOnlyList<string> FailedChecks, bool DegradedGrantMade);

/// <summary>Running figures of the verification service, published every <see cref="IdentityStateMachine.StatisticsEvery"/> results.</summary>
public sealed record VerificationStatistics(long Results, long Verified, long Refused, long DegradedGrants);

/// <summary>The jobs: one per check. Face match is enqueued by the face extraction when it succeeds.</summary>
public sealed record ReadLicence(string RequestId, int Number);

public sealed record ExtractFace(string RequestId, int Number);

public sealed record DetectTampering(string RequestId, int Number);

/// <summary>Asks the licence register; <see cref="Poll"/> counts the asks made while it was down.</summary>
public sealed record CheckRegister(string RequestId, int Number, int Poll);

public sealed record MatchFace(string RequestId, int Number, bool FaceFound);
