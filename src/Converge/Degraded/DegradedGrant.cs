namespace Converge.Degraded;

/// <summary>Where a degraded grant stands.</summary>
public enum DegradedGrantState
{
    /// <summary>Granted while the dependency was down, not yet revisited: the permission holds until it expires.</summary>
    Granted,

    /// <summary>Revisited once the dependency was back, which agreed: what was done under the grant stands.</summary>
    Confirmed,

    /// <summary>Revisited once the dependency was back, which disagreed: the permission is withdrawn, and what was done under it needs undoing.</summary>
    Revoked,
}

/// <summary>
/// What to grant while <see cref="Dependency"/> is down: a limited permission for one subject, for a limited time.
/// </summary>
/// <param name="Dependency">The dependency that is down, such as <c>sms</c> or <c>licence-register</c>: letters, digits,
/// '.', '-', '_' and ':' (at most 200). Its grants are kept on the log stream <c>degraded-{Dependency}</c>.</param>
/// <param name="Subject">Who the permission is for (a customer, an account, a request).</param>
/// <param name="Permission">What is allowed, in the application's own terms (<c>read-only</c>, <c>stake-up-to-50</c>): the
/// reduced permission, never the full one the dependency would have decided.</param>
/// <param name="Duration">How long the permission holds unless revisited first; must be positive.</param>
/// <param name="Reason">Why it was granted, for the record (what failed, what was checked instead).</param>
public sealed record DegradedGrantRequest(string Dependency, string Subject, string Permission, TimeSpan Duration, string Reason);

/// <summary>
/// A limited, temporary permission granted because a dependency was down, as the log records it: granted, then
/// confirmed or revoked once the dependency is back. Read with <see cref="IDegradedGrants.ListAsync"/>.
/// </summary>
/// <param name="Id">The grant's id, also the message id of the event that recorded it.</param>
/// <param name="Dependency">The dependency that was down.</param>
/// <param name="Subject">Who the permission is for.</param>
/// <param name="Permission">What was allowed.</param>
/// <param name="GrantedAt">When it was granted (the granting process's clock).</param>
/// <param name="ExpiresAt">When the permission ends, whatever its state.</param>
/// <param name="Reason">Why it was granted.</param>
public sealed record DegradedGrant(Guid Id, string Dependency, string Subject, string Permission, DateTimeOffset GrantedAt, DateTimeOffset ExpiresAt, string Reason)
{
    /// <summary>Where the grant stands (default <see cref="DegradedGrantState.Granted"/>).</summary>
    public DegradedGrantState State { get; init; } = DegradedGrantState.Granted;

    /// <summary>When it was confirmed or revoked; <c>null</c> while <see cref="DegradedGrantState.Granted"/>.</summary>
    public DateTimeOffset? SettledAt { get; init; }

    /// <summary>Why it was confirmed or revoked; <c>null</c> while <see cref="DegradedGrantState.Granted"/>.</summary>
    public string? SettledReason { get; init; }

    /// <summary>
    /// The version of the dependency's stream this view of the grant was read at (or written at, for a grant just
    /// made). A confirmation or revocation is appended only if the stream is still at this version, so two processes
    /// revisiting one grant cannot both settle it.
    /// </summary>
    public long StreamVersion { get; init; }

    /// <summary>
    /// Whether the permission may be used at <paramref name="now"/>: not revoked, and before <see cref="ExpiresAt"/>.
    /// A confirmed grant still ends at its expiry; after that the application asks the dependency as usual.
    /// </summary>
    public bool IsInForce(DateTimeOffset now) => State != DegradedGrantState.Revoked && now < ExpiresAt;
}

/// <summary>What a re-check decided about an open grant once its dependency was back.</summary>
public sealed record DegradedDecision
{
    DegradedDecision(DegradedGrantState outcome, string reason)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(reason);
        Outcome = outcome;
        Reason = reason;
    }

    /// <summary><see cref="DegradedGrantState.Confirmed"/> or <see cref="DegradedGrantState.Revoked"/>.</summary>
    public DegradedGrantState Outcome { get; }

    /// <summary>Why, for the record.</summary>
    public string Reason { get; }

    /// <summary>The dependency agrees with what was granted.</summary>
    public static DegradedDecision Confirm(string reason) => new(DegradedGrantState.Confirmed, reason);

    /// <summary>The dependency disagrees: the permission is withdrawn.</summary>
    public static DegradedDecision Revoke(string reason) => new(DegradedGrantState.Revoked, reason);
}

/// <summary>What <see cref="IDegradedGrants.ReviewAsync"/> did: the grants it confirmed and revoked, and the open grants another process settled first.</summary>
/// <param name="Confirmed">The grants this review confirmed, as settled.</param>
/// <param name="Revoked">The grants this review revoked, as settled.</param>
/// <param name="SettledElsewhere">Open grants found settled by another writer when this review came to append its decision.</param>
public sealed record DegradedReview(IReadOnlyList<DegradedGrant> Confirmed, IReadOnlyList<DegradedGrant> Revoked, int SettledElsewhere);

/// <summary>The event that records a grant on the stream <c>degraded-{Dependency}</c> (type <c>converge.degraded-granted@1</c>).</summary>
/// <param name="GrantId">The grant's id.</param>
/// <param name="Dependency">The dependency that was down.</param>
/// <param name="Subject">Who the permission is for.</param>
/// <param name="Permission">What was allowed.</param>
/// <param name="GrantedAt">When.</param>
/// <param name="ExpiresAt">When the permission ends.</param>
/// <param name="Reason">Why.</param>
public sealed record DegradedAccessGranted(Guid GrantId, string Dependency, string Subject, string Permission, DateTimeOffset GrantedAt, DateTimeOffset ExpiresAt, string Reason)
{
    /// <summary>The registered type name.</summary>
    public const string TypeName = "converge.degraded-granted";
}

/// <summary>The event that confirms a grant (type <c>converge.degraded-confirmed@1</c>).</summary>
/// <param name="GrantId">The grant confirmed.</param>
/// <param name="At">When.</param>
/// <param name="Reason">Why.</param>
public sealed record DegradedAccessConfirmed(Guid GrantId, DateTimeOffset At, string Reason)
{
    /// <summary>The registered type name.</summary>
    public const string TypeName = "converge.degraded-confirmed";
}

/// <summary>The event that revokes a grant (type <c>converge.degraded-revoked@1</c>); a consumer group can subscribe to it to undo what was done.</summary>
/// <param name="GrantId">The grant revoked.</param>
/// <param name="At">When.</param>
/// <param name="Reason">Why.</param>
public sealed record DegradedAccessRevoked(Guid GrantId, DateTimeOffset At, string Reason)
{
    /// <summary>The registered type name.</summary>
    public const string TypeName = "converge.degraded-revoked";
}
