using Converge.Sagas;
using Converge.Storage;

namespace Converge.Choreography;

/// <summary>One row of a flow view: a message or event, its depth in the causal tree, and what a saga did with it.</summary>
/// <param name="Depth">0 for a root (a message whose cause is not part of the flow); one more than its cause otherwise.</param>
/// <param name="Item">The message or event, and where it is.</param>
/// <param name="Saga">
/// The saga log entries placed on this row, oldest first (see <see cref="FlowView"/>); empty when there are none.
/// </param>
public sealed record FlowStep(int Depth, FlowItem Item, IReadOnlyList<SagaLogEntry> Saga);

/// <summary>
/// The flow view of one business transaction: every message and event that carries its transaction id, in causal
/// order, as <c>converge flow</c> shows it.
/// </summary>
/// <remarks>
/// <para>
/// <b>Rows.</b> The rows are the store's <see cref="IStoreQueries.ReadFlowAsync"/> items, one per message id and
/// place (<see cref="FlowItem.Where"/>). When the store holds the same message twice in one place (a copy still
/// queued after another copy was handled, say), the row keeps the most advanced status: handled, then pending, then
/// dead-lettered, then appended. A message that is in several places (handled on its queue and a redelivered copy
/// dead-lettered) has a row for each.
/// </para>
/// <para>
/// <b>Order.</b> The rows form a tree by <see cref="FlowItem.CausationId"/>: the roots are the rows whose cause is
/// not part of the flow (sent from outside a handler, or caused by a message whose inbox record was purged); the
/// children of a message follow it, one level deeper. Roots and siblings are ordered by
/// <see cref="FlowItem.SentAt"/>, then message id, then status as above, then place. The list is the tree walked
/// depth first, so indenting each row by its <see cref="FlowStep.Depth"/> draws it. The rows of one message sit
/// together at the same depth, its most advanced first, and its children follow them. Should bad data make causes
/// loop, the loop is broken at its earliest message, which is ordered among the roots; no row is ever left out or shown twice.
/// </para>
/// <para>
/// <b>The saga log.</b> When a saga instance has the transaction id, its log is read too. Each entry that names a
/// message of the flow is placed on that message's row (<c>command-sent</c> on the command, <c>reply-received</c> on
/// the reply). Entries that name none (<c>started</c>, <c>state-changed</c>, a <c>step-failed</c> without a reply)
/// are placed on the row of the message whose handling wrote them: the reply or timeout the saga was handling, or,
/// for a saga started from outside a handler, the first command it sent. A command or reply named by the log but
/// found nowhere else (sent to another store's queue, or handled and since purged from the inbox) gets a row of its
/// own with <see cref="FlowItem.Where"/> <see cref="SagaLogPlace"/> and status <see cref="SentStatus"/> or
/// <see cref="ReceivedStatus"/>. The failure reply that a fault plan stands in for a participant is placed under the
/// message whose handling injected the fault. Entries that cannot be placed by these rules go on the first root; with
/// no row at all the view is empty (read the saga log itself with <see cref="ISagaQueries.ReadSagaLogAsync"/>).
/// </para>
/// </remarks>
public static class FlowView
{
    /// <summary>The <see cref="FlowItem.Where"/> of a row known only from the saga log.</summary>
    public const string SagaLogPlace = "saga-log";

    /// <summary>The status of a command the saga log says was sent, found nowhere else in the store.</summary>
    public const string SentStatus = "sent";

    /// <summary>The status of a reply or timeout the saga log says was handled, found nowhere else in the store.</summary>
    public const string ReceivedStatus = "received";

    /// <summary>
    /// Reads the flow of <paramref name="transactionId"/> from <paramref name="store"/> (its flow items and, when a saga
    /// instance has that id, the saga log) and orders it; see <see cref="FlowView"/>. Empty when nothing carries the id.
    /// </summary>
    public static async ValueTask<IReadOnlyList<FlowStep>> BuildAsync(IMessageStore store, string transactionId, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentException.ThrowIfNullOrWhiteSpace(transactionId);
        var items = await store.Queries().ReadFlowAsync(transactionId, cancellationToken);
        IReadOnlyList<SagaLogEntry> log = await store.SagaQueries().GetSagaAsync(transactionId, cancellationToken) is null
            ? []
            : await store.SagaQueries().ReadSagaLogAsync(transactionId, cancellationToken);
        return Build(items, log);
    }

    /// <summary>
    /// Orders <paramref name="items"/> (in any order, possibly with duplicates) into the flow view and places the
    /// <paramref name="sagaLog"/> entries (oldest first; empty when there is no saga) on its rows; see <see cref="FlowView"/>.
    /// </summary>
    public static IReadOnlyList<FlowStep> Build(IReadOnlyList<FlowItem> items, IReadOnlyList<SagaLogEntry> sagaLog)
    {
        ArgumentNullException.ThrowIfNull(items);
        ArgumentNullException.ThrowIfNull(sagaLog);
        var flow = new Flow();
        foreach (var item in items)
        {
            flow.Add(item);
        }

        flow.PlaceSagaLog(sagaLog);
        return flow.Walk();
    }

    static int Rank(string status) => status switch
    {
        "handled" => 0,
        "pending" => 1,
        "dead-lettered" => 2,
        "appended" => 3,
        ReceivedStatus => 4,
        SentStatus => 5,
        _ => 6,
    };

    static int Compare(FlowItem a, FlowItem b)
    {
        var order = a.SentAt.CompareTo(b.SentAt);
        if (order == 0)
        {
            order = a.MessageId.CompareTo(b.MessageId);
        }

        if (order == 0)
        {
            order = Rank(a.Status).CompareTo(Rank(b.Status));
        }

        return order != 0 ? order : string.CompareOrdinal(a.Where, b.Where);
    }

    /// <summary>The rows being built: one per message id and place, the saga entries placed on them, and the tree.</summary>
    sealed class Flow
    {
        readonly Dictionary<(Guid MessageId, string Where), FlowItem> _rows = [];

        /// <summary>The row of each message that carries its children and saga entries: its most advanced one.</summary>
        readonly Dictionary<Guid, FlowItem> _primary = [];

        readonly Dictionary<Guid, List<(int Order, SagaLogEntry Entry)>> _saga = [];

        /// <summary>Ids the saga log names but no row has (a fault plan's stand-in), mapped to the row they stand under.</summary>
        readonly Dictionary<Guid, Guid> _aliases = [];

        public void Add(FlowItem item)
        {
            var key = (item.MessageId, item.Where);
            if (_rows.TryGetValue(key, out var existing) && Rank(existing.Status) <= Rank(item.Status))
            {
                return;
            }

            _rows[key] = item;
            if (!_primary.TryGetValue(item.MessageId, out var primary)
                || Rank(item.Status) < Rank(primary.Status)
                || (Rank(item.Status) == Rank(primary.Status) && string.CompareOrdinal(item.Where, primary.Where) < 0)
                || primary.Where == item.Where)
            {
                _primary[item.MessageId] = item;
            }
        }

        bool Has(Guid? id) => id is { } known && _primary.ContainsKey(known);

        public void PlaceSagaLog(IReadOnlyList<SagaLogEntry> log)
        {
            var ordered = log.Select((entry, index) => (Order: index, Entry: entry)).OrderBy(e => e.Entry.Id).ThenBy(e => e.Order).ToList();
            var unplaced = new List<(int Order, SagaLogEntry Entry)>();
            foreach (var transition in Transitions(ordered))
            {
                var cause = CauseOf(transition);
                foreach (var (_, entry) in transition)
                {
                    AddKnownOnlyFromLog(entry, cause);
                }

                var anchor = AnchorOf(transition, cause);
                foreach (var entry in transition)
                {
                    if (entry.Entry.MessageId is { } named && _primary.ContainsKey(named))
                    {
                        Attach(named, entry);
                    }
                    else if (anchor is { } to)
                    {
                        Attach(to, entry);
                        if (entry.Entry.MessageId is { } standIn)
                        {
                            _aliases.TryAdd(standIn, to);
                        }
                    }
                    else
                    {
                        unplaced.Add(entry);
                    }
                }
            }

            if (unplaced.Count > 0 && _primary.Count > 0)
            {
                var first = _primary.Values.Where(r => ParentOf(r) is null).DefaultIfEmpty(_primary.Values.First()).Aggregate((a, b) => Compare(a, b) <= 0 ? a : b);
                foreach (var waiting in unplaced)
                {
                    Attach(first.MessageId, waiting);
                }
            }
        }

        /// <summary>
        /// Splits the log into the transitions that wrote it: each starts where the saga starts or handles a message
        /// (a reply, a timeout, a refused compensation); entries a participant writes (a fault plan dropping its reply)
        /// join the transition before them.
        /// </summary>
        static IEnumerable<List<(int Order, SagaLogEntry Entry)>> Transitions(List<(int Order, SagaLogEntry Entry)> log)
        {
            List<(int Order, SagaLogEntry Entry)>? current = null;
            foreach (var entry in log)
            {
                if (current is null || StartsTransition(entry.Entry))
                {
                    if (current is not null)
                    {
                        yield return current;
                    }

                    current = [];
                }

                current.Add(entry);
            }

            if (current is not null)
            {
                yield return current;
            }
        }

        static bool StartsTransition(SagaLogEntry entry) => entry.Kind switch
        {
            SagaLogKinds.Started or SagaLogKinds.ReplyReceived or SagaLogKinds.ReplyIgnored or SagaLogKinds.TimeoutFired => true,
            SagaLogKinds.StepFailed => entry.MessageId is not null,
            _ => false,
        };

        static bool IsHandled(SagaLogEntry entry) => entry.MessageId is not null && entry.Kind is SagaLogKinds.ReplyReceived or SagaLogKinds.ReplyIgnored or SagaLogKinds.TimeoutFired or SagaLogKinds.StepFailed;

        static bool IsSent(SagaLogEntry entry) => entry.MessageId is not null && entry.Kind is SagaLogKinds.CommandSent or SagaLogKinds.CompensationSent;

        /// <summary>The message whose handling wrote <paramref name="transition"/>, if known.</summary>
        Guid? CauseOf(List<(int Order, SagaLogEntry Entry)> transition)
        {
            var first = transition[0].Entry;
            if (IsHandled(first))
            {
                return first.MessageId;
            }

            // A start: the commands it sent name the message that started it (none when started from outside).
            return transition.Select(e => e.Entry).Where(IsSent).Select(e => _primary.GetValueOrDefault(e.MessageId!.Value)?.CausationId).FirstOrDefault(c => c is not null);
        }

        /// <summary>Gives a row to a command or reply that only the saga log knows of.</summary>
        void AddKnownOnlyFromLog(SagaLogEntry entry, Guid? cause)
        {
            if (entry.MessageId is not { } id || _primary.ContainsKey(id))
            {
                return;
            }

            var type = entry.MessageType ?? "?";
            if (IsSent(entry))
            {
                Add(new FlowItem(id, type, cause, entry.At, SagaLogPlace, SentStatus, null));
            }
            else if (IsHandled(entry))
            {
                Add(new FlowItem(id, type, entry.Answers, entry.At, SagaLogPlace, ReceivedStatus, entry.At));
            }
        }

        /// <summary>The row that the entries of <paramref name="transition"/> naming no row of their own go on.</summary>
        Guid? AnchorOf(List<(int Order, SagaLogEntry Entry)> transition, Guid? cause)
        {
            if (Has(cause))
            {
                return cause;
            }

            if (transition.Select(e => e.Entry.MessageId).FirstOrDefault(Has) is { } named)
            {
                return named;
            }

            // A fault plan failed the first step: the only message is the failure reply standing in for a participant.
            var standIns = transition.Where(e => e.Entry.MessageId is not null).Select(e => e.Entry.MessageId!.Value).ToHashSet();
            return _primary.Values.Where(r => r.CausationId is { } c && standIns.Contains(c)).Select(r => (Guid?)r.MessageId).FirstOrDefault();
        }

        void Attach(Guid messageId, (int Order, SagaLogEntry Entry) entry)
        {
            if (!_saga.TryGetValue(messageId, out var list))
            {
                _saga[messageId] = list = [];
            }

            list.Add(entry);
        }

        Guid? ParentOf(FlowItem row)
        {
            if (row.CausationId is not { } cause)
            {
                return null;
            }

            // A row of the flow comes first; an id only the saga log names (a stand-in) stands under its anchor.
            var parent = _primary.ContainsKey(cause) ? cause : _aliases.GetValueOrDefault(cause, cause);
            return parent != row.MessageId && _primary.ContainsKey(parent) ? parent : null;
        }

        public List<FlowStep> Walk()
        {
            // Only a message's primary row takes part in the tree; its other rows are shown right after it.
            var children = new Dictionary<Guid, List<FlowItem>>();
            var others = new Dictionary<Guid, List<FlowItem>>();
            var roots = new List<FlowItem>();
            foreach (var row in _rows.Values)
            {
                var target = !ReferenceEquals(_primary[row.MessageId], row) ? ListOf(others, row.MessageId)
                    : ParentOf(row) is { } parent ? ListOf(children, parent)
                    : roots;
                target.Add(row);
            }

            foreach (var list in children.Values.Concat(others.Values))
            {
                list.Sort(Compare);
            }

            // Messages whose causes loop reach no root: each loop becomes a root at its earliest message.
            var reached = new HashSet<Guid>();
            foreach (var root in roots)
            {
                WalkFrom(root, reached, null);
            }

            if (reached.Count < _primary.Count)
            {
                var rest = _primary.Values.Where(r => !reached.Contains(r.MessageId)).ToList();
                rest.Sort(Compare);
                foreach (var row in rest.Where(r => !reached.Contains(r.MessageId)))
                {
                    roots.Add(row);
                    WalkFrom(row, reached, null);
                }
            }

            roots.Sort(Compare);
            var steps = new List<FlowStep>(_rows.Count);
            var visited = new HashSet<Guid>();
            foreach (var root in roots)
            {
                WalkFrom(root, visited, steps);
            }

            return steps;

            void WalkFrom(FlowItem root, HashSet<Guid> visited, List<FlowStep>? steps)
            {
                var stack = new Stack<(FlowItem Row, int Depth)>();
                stack.Push((root, 0));
                while (stack.Count > 0)
                {
                    var (row, depth) = stack.Pop();
                    if (!visited.Add(row.MessageId))
                    {
                        continue;
                    }

                    if (steps is not null)
                    {
                        IReadOnlyList<SagaLogEntry> saga = _saga.TryGetValue(row.MessageId, out var placed)
                            ? [.. placed.OrderBy(e => e.Order).Select(e => e.Entry)]
                            : [];
                        steps.Add(new FlowStep(depth, row, saga));
                        foreach (var other in others.GetValueOrDefault(row.MessageId) ?? [])
                        {
                            steps.Add(new FlowStep(depth, other, []));
                        }
                    }

                    if (children.TryGetValue(row.MessageId, out var below))
                    {
                        for (var i = below.Count - 1; i >= 0; i--)
                        {
                            stack.Push((below[i], depth + 1));
                        }
                    }
                }
            }
        }

        static List<FlowItem> ListOf(Dictionary<Guid, List<FlowItem>> lists, Guid key)
        {
            if (!lists.TryGetValue(key, out var list))
            {
                lists[key] = list = [];
            }

            return list;
        }
    }
}
