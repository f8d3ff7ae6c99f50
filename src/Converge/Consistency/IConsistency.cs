namespace Converge.Consistency;

/// <summary>
/// Read-your-writes: waits until a projection or a consumer group has reached a <see cref="ConsistencyToken"/>, so that
/// what a reader then reads from it includes the commit the token came from. Registered by <c>AddConverge</c> (a
/// singleton); works in any process on the same store, whichever process wrote and whichever runs the projection or group.
/// </summary>
/// <remarks>
/// A wait re-reads the checkpoint when a projection or group of this process commits one, and otherwise on an interval
/// that starts at 1 ms and doubles up to 50 ms (checkpoints moved by another process ring nothing here), on the options'
/// <c>TimeProvider</c>. Each read is one query (two for a projection); a wait that is already satisfied costs one read.
/// A timeout is an answer, not an error: the result says whether the token was reached and where the reader stands.
/// </remarks>
public interface IConsistency
{
    /// <summary>
    /// Waits until consumer group <paramref name="group"/> (as configured with <c>o.Subscribe</c>) has a checkpoint at or
    /// past <paramref name="token"/>, for at most <paramref name="timeout"/>. A group's checkpoint moves past the events it
    /// does not handle too, so any token is reached once the group has caught up with it; a group that never ran stands at 0.
    /// </summary>
    /// <param name="group">The consumer group's name.</param>
    /// <param name="token">The position to reach; <see cref="ConsistencyToken.None"/> is reached at once.</param>
    /// <param name="timeout">How long to wait: <see cref="TimeSpan.Zero"/> checks once, <see cref="Timeout.InfiniteTimeSpan"/> waits until reached or cancelled.</param>
    /// <param name="cancellationToken">Ends the wait with an <see cref="OperationCanceledException"/>.</param>
    /// <returns>Whether the token was reached, and the checkpoint last read.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite).</exception>
    ValueTask<ConsistencyWaitResult> WaitForGroupAsync(string group, ConsistencyToken token, TimeSpan timeout, CancellationToken cancellationToken = default);

    /// <summary>
    /// Waits until projection <paramref name="projection"/> (as registered with <c>o.AddProjection</c>) has reached
    /// <paramref name="token"/> in its live version, the one readers read through its views, for at most
    /// <paramref name="timeout"/>. A projection with no live version yet has reached nothing. When versions are switched
    /// during the wait, the version live at the last read counts.
    /// </summary>
    /// <param name="projection">The projection's name.</param>
    /// <param name="token">The position to reach; <see cref="ConsistencyToken.None"/> is reached once a version is live.</param>
    /// <param name="timeout">How long to wait: <see cref="TimeSpan.Zero"/> checks once, <see cref="Timeout.InfiniteTimeSpan"/> waits until reached or cancelled.</param>
    /// <param name="cancellationToken">Ends the wait with an <see cref="OperationCanceledException"/>.</param>
    /// <returns>Whether the token was reached, the live version's group and its checkpoint last read.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite).</exception>
    /// <exception cref="NotSupportedException">The store has no database (the in-memory store), so it has no projections.</exception>
    ValueTask<ConsistencyWaitResult> WaitForProjectionAsync(string projection, ConsistencyToken token, TimeSpan timeout, CancellationToken cancellationToken = default);
}

/// <summary>How a wait of <see cref="IConsistency"/> ended.</summary>
/// <param name="Reached">Whether the checkpoint stands at or past <paramref name="Token"/>.</param>
/// <param name="Token">The token waited for.</param>
/// <param name="Target">What was waited on: the group's name, or the projection's.</param>
/// <param name="Group">
/// The consumer group whose checkpoint was read: the group, or the projection's live version's group
/// (<c>projection:NAME@VERSION</c>); <c>null</c> when the projection had no live version.
/// </param>
/// <param name="Position">The checkpoint last read (0 when the group never ran or the projection has no live version).</param>
public sealed record ConsistencyWaitResult(bool Reached, ConsistencyToken Token, string Target, string? Group, long Position)
{
    /// <summary>
    /// Why the token was not reached, in words fit for an error response (<c>projection 'orders' (live version 2) is at
    /// position 41; cv1.42 needs position 42</c>); <c>null</c> when it was reached.
    /// </summary>
    public string? Reason => Reached
        ? null
        : Group is null
            ? $"projection '{Target}' has no live version yet; {Token} needs position {Token.Position}"
            : $"{(Group == Target ? $"consumer group '{Target}'" : $"projection '{Target}' ({Group})")} is at position {Position}; {Token} needs position {Token.Position}";
}
