using Converge.Runtime;
using Converge.Storage;

namespace Converge.Degraded;

internal sealed class DegradedGrants(ConvergeOptions options, IMessageStore store, MessageBus bus) : IDegradedGrants
{
    /// <summary>Events read per page when a dependency's stream is folded into its grants.</summary>
    const int Page = 500;

    /// <summary>The log stream that holds <paramref name="dependency"/>'s grants.</summary>
    public static string StreamOf(string dependency)
    {
        ConvergeOptions.ValidateName(dependency, "degraded dependency");
        return "degraded-" + dependency;
    }

    public async ValueTask<DegradedGrant> GrantAsync(DegradedGrantRequest request, IStoreTransaction transaction, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        var (stream, granted) = Prepare(request);
        var stored = await bus.PublishCoreAsync(transaction, stream, granted, new PublishOptions { MessageId = granted.GrantId }, null, cancellationToken);
        return ToGrant(granted) with { StreamVersion = stored.StreamVersion };
    }

    public async ValueTask<DegradedGrant> GrantAsync(DegradedGrantRequest request, MessageContext context, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(context);
        var (stream, granted) = Prepare(request);
        var stored = await context.PublishAsync(stream, granted, new PublishOptions { MessageId = granted.GrantId }, cancellationToken);
        return ToGrant(granted) with { StreamVersion = stored.StreamVersion };
    }

    public async ValueTask<DegradedGrant> SettleAsync(DegradedGrant grant, DegradedDecision decision, IStoreTransaction transaction, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(grant);
        ArgumentNullException.ThrowIfNull(decision);
        ArgumentNullException.ThrowIfNull(transaction);
        if (grant.State != DegradedGrantState.Granted)
        {
            throw new InvalidOperationException($"Grant {grant.Id} ({grant.Dependency}, {grant.Subject}) is {grant.State.ToString().ToLowerInvariant()} already; only an open grant can be confirmed or revoked.");
        }

        var now = options.TimeProvider.GetUtcNow();
        var publish = new PublishOptions { ExpectedVersion = grant.StreamVersion };
        var stored = decision.Outcome == DegradedGrantState.Confirmed
            ? await bus.PublishCoreAsync(transaction, StreamOf(grant.Dependency), new DegradedAccessConfirmed(grant.Id, now, decision.Reason), publish, null, cancellationToken)
            : await bus.PublishCoreAsync(transaction, StreamOf(grant.Dependency), new DegradedAccessRevoked(grant.Id, now, decision.Reason), publish, null, cancellationToken);
        return grant with { State = decision.Outcome, SettledAt = now, SettledReason = decision.Reason, StreamVersion = stored.StreamVersion };
    }

    public async ValueTask<IReadOnlyList<DegradedGrant>> ListAsync(string dependency, CancellationToken cancellationToken = default)
    {
        var stream = StreamOf(dependency);
        var grants = new List<DegradedGrant>();
        var index = new Dictionary<Guid, int>();
        var version = 0L;
        while (true)
        {
            var events = await store.ReadStreamAsync(stream, version + 1, Page, cancellationToken);
            foreach (var logEvent in events)
            {
                version = logEvent.StreamVersion;
                switch (Read(logEvent))
                {
                    case DegradedAccessGranted granted when !index.ContainsKey(granted.GrantId):
                        index[granted.GrantId] = grants.Count;
                        grants.Add(ToGrant(granted));
                        break;
                    case DegradedAccessConfirmed confirmed:
                        Settle(confirmed.GrantId, DegradedGrantState.Confirmed, confirmed.At, confirmed.Reason);
                        break;
                    case DegradedAccessRevoked revoked:
                        Settle(revoked.GrantId, DegradedGrantState.Revoked, revoked.At, revoked.Reason);
                        break;
                }
            }

            if (events.Count < Page)
            {
                break;
            }
        }

        return [.. grants.Select(g => g with { StreamVersion = version })];

        void Settle(Guid id, DegradedGrantState state, DateTimeOffset at, string reason)
        {
            // A settlement is appended at the version its grant was read at, so a second one for a grant cannot commit;
            // should one be there anyway (written by other means), the first stands.
            if (index.TryGetValue(id, out var slot) && grants[slot].State == DegradedGrantState.Granted)
            {
                grants[slot] = grants[slot] with { State = state, SettledAt = at, SettledReason = reason };
            }
        }
    }

    public async ValueTask<DegradedReview> ReviewAsync(
        string dependency, Func<DegradedGrant, CancellationToken, ValueTask<DegradedDecision>> recheck, int concurrency = 1, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(recheck);
        ArgumentOutOfRangeException.ThrowIfLessThan(concurrency, 1);
        var confirmed = new List<DegradedGrant>();
        var revoked = new List<DegradedGrant>();
        var elsewhere = 0;
        var open = (await ListAsync(dependency, cancellationToken)).Where(g => g.State == DegradedGrantState.Granted).ToList();
        var version = open.Count > 0 ? open[0].StreamVersion : 0;

        // Re-checks overlap; appends take turns, each at the version the previous one left, so this review never
        // conflicts with itself, only with other writers.
        using var appending = new SemaphoreSlim(1, 1);
        await Parallel.ForEachAsync(open, new ParallelOptions { MaxDegreeOfParallelism = concurrency, CancellationToken = cancellationToken }, async (candidate, ct) =>
        {
            var decision = await recheck(candidate, ct)
                ?? throw new InvalidOperationException($"The re-check of grant {candidate.Id} returned no decision; return DegradedDecision.Confirm or DegradedDecision.Revoke.");
            await appending.WaitAsync(ct);
            try
            {
                var grant = candidate with { StreamVersion = version };
                while (true)
                {
                    try
                    {
                        await using var transaction = await store.BeginAsync(ct);
                        var settled = await SettleAsync(grant, decision, transaction, ct);
                        await transaction.CommitAsync(ct);
                        version = settled.StreamVersion;
                        (decision.Outcome == DegradedGrantState.Confirmed ? confirmed : revoked).Add(settled);
                        return;
                    }
                    catch (StreamVersionConflictException)
                    {
                        // Another writer appended first (a new grant, or this grant's settlement): read again and retry on the new version.
                        var current = (await ListAsync(dependency, ct)).FirstOrDefault(g => g.Id == grant.Id);
                        if (current is null || current.State != DegradedGrantState.Granted)
                        {
                            elsewhere++;
                            version = current?.StreamVersion ?? version;
                            return;
                        }

                        grant = current;
                        version = current.StreamVersion;
                    }
                }
            }
            finally
            {
                appending.Release();
            }
        });

        return new DegradedReview(confirmed, revoked, elsewhere);
    }

    (string Stream, DegradedAccessGranted Granted) Prepare(DegradedGrantRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var stream = StreamOf(request.Dependency);
        ArgumentException.ThrowIfNullOrWhiteSpace(request.Subject);
        ArgumentException.ThrowIfNullOrWhiteSpace(request.Permission);
        ArgumentException.ThrowIfNullOrWhiteSpace(request.Reason);
        if (request.Duration <= TimeSpan.Zero)
        {
            throw new ArgumentException($"A degraded grant needs a positive duration (got {request.Duration}): the permission must end on its own if nobody revisits it.", nameof(request));
        }

        var now = options.TimeProvider.GetUtcNow();
        var granted = new DegradedAccessGranted(Contracts.MessageIds.New(now), request.Dependency, request.Subject, request.Permission, now, now + request.Duration, request.Reason);
        return (stream, granted);
    }

    object? Read(LogEvent logEvent)
    {
        // The stream belongs to degraded grants; an event of another type written there is not one of them and is passed over.
        if (!options.Messages.TryGetType(logEvent.Envelope.MessageType, out var type)
            || (type != typeof(DegradedAccessGranted) && type != typeof(DegradedAccessConfirmed) && type != typeof(DegradedAccessRevoked)))
        {
            return null;
        }

        return options.Serializer.Deserialize(logEvent.Envelope.Body.Span, type);
    }

    static DegradedGrant ToGrant(DegradedAccessGranted granted) =>
        new(granted.GrantId, granted.Dependency, granted.Subject, granted.Permission, granted.GrantedAt, granted.ExpiresAt, granted.Reason);
}
