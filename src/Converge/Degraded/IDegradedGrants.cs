using Converge.Runtime;
using Converge.Storage;

namespace Converge.Degraded;

/// <summary>
/// Degraded modes: when a dependency is down, grant a limited, temporary permission instead of none (the SMS service
/// is down, so the customer gets read-only access rather than being locked out), record that it was granted, and once
/// the dependency is back confirm or revoke each grant after checking it again. Every grant, confirmation and
/// revocation is an event on the log stream <c>degraded-{dependency}</c>, written in the caller's transaction, so it
/// commits with what was done under it and consumer groups can follow it. Registered by <c>AddConverge</c>.
/// </summary>
/// <remarks>
/// The caller's obligations: decide that the dependency is down (this type does not probe it), use the permission
/// only while <see cref="DegradedGrant.IsInForce"/>, and call <see cref="ReviewAsync"/> when the dependency is back,
/// then again later for grants made by writers that had not yet seen it return. A grant that expires unsettled stays
/// open until reviewed: expiry ends the permission, not the obligation to revisit it.
/// </remarks>
public interface IDegradedGrants
{
    /// <summary>
    /// Grants <paramref name="request"/> in <paramref name="transaction"/> (from <c>IMessageBus.BeginTransactionAsync</c>):
    /// the grant is recorded only if the transaction commits. It expires <see cref="DegradedGrantRequest.Duration"/>
    /// after now on the options' clock.
    /// </summary>
    /// <returns>The grant, <see cref="DegradedGrantState.Granted"/>.</returns>
    /// <exception cref="ArgumentException">A blank field, a dependency name that is not valid, or a duration that is not positive.</exception>
    ValueTask<DegradedGrant> GrantAsync(DegradedGrantRequest request, IStoreTransaction transaction, CancellationToken cancellationToken = default);

    /// <summary>
    /// Grants <paramref name="request"/> in a handler's transaction: it commits with the handler's writes and its inbox
    /// record, carries the message's correlation id and is caused by it.
    /// </summary>
    /// <inheritdoc cref="GrantAsync(DegradedGrantRequest, IStoreTransaction, CancellationToken)"/>
    ValueTask<DegradedGrant> GrantAsync(DegradedGrantRequest request, MessageContext context, CancellationToken cancellationToken = default);

    /// <summary>
    /// Confirms or revokes <paramref name="grant"/> (as read by <see cref="ListAsync"/>) in <paramref name="transaction"/>.
    /// The decision is appended only if the dependency's stream is still at <see cref="DegradedGrant.StreamVersion"/>;
    /// otherwise the stream changed since the grant was read (it may have been settled meanwhile): read it again and decide again.
    /// </summary>
    /// <returns>The grant as settled, at the stream's new version.</returns>
    /// <exception cref="InvalidOperationException">The grant is not <see cref="DegradedGrantState.Granted"/>.</exception>
    /// <exception cref="StreamVersionConflictException">The stream moved on since the grant was read; roll back, read again, decide again.</exception>
    ValueTask<DegradedGrant> SettleAsync(DegradedGrant grant, DegradedDecision decision, IStoreTransaction transaction, CancellationToken cancellationToken = default);

    /// <summary>
    /// Every grant made for <paramref name="dependency"/>, in the order granted, each at its current state and at the
    /// stream version read. Reads the dependency's whole stream: fit for thousands of grants, not millions.
    /// </summary>
    ValueTask<IReadOnlyList<DegradedGrant>> ListAsync(string dependency, CancellationToken cancellationToken = default);

    /// <summary>
    /// Revisits every open grant of <paramref name="dependency"/>: asks <paramref name="recheck"/> (outside any
    /// transaction, so it may call the dependency), up to <paramref name="concurrency"/> grants at once (default 1: one
    /// after the other, oldest first), and appends each decision in a transaction of its own, one at a time. When another
    /// writer moved the stream first, the grant is read again and its decision appended again, unless it was settled
    /// meanwhile, which is counted in <see cref="DegradedReview.SettledElsewhere"/>. A <paramref name="recheck"/> that
    /// throws stops the review; the grants settled until then stay settled.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="concurrency"/> is below 1.</exception>
    ValueTask<DegradedReview> ReviewAsync(string dependency, Func<DegradedGrant, CancellationToken, ValueTask<DegradedDecision>> recheck, int concurrency = 1, CancellationToken cancellationToken = default);
}
