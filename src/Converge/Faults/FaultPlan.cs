using System.Text;

namespace Converge.Faults;

/// <summary>What a fault rule does to the step it matches.</summary>
public enum FaultAction
{
    /// <summary>The step fails with <see cref="FaultRule.Error"/> instead of running.</summary>
    Fail,

    /// <summary>The step's command is delivered <see cref="FaultRule.Delay"/> late.</summary>
    Delay,

    /// <summary>The participant's reply is delivered twice (the copy with a new message id).</summary>
    DuplicateReply,

    /// <summary>The participant's reply is dropped, so the step's timeout fires.</summary>
    DropReply,
}

/// <summary>
/// One rule of a fault plan: which business transactions and step it matches, and what it does. Bindable from
/// configuration (for example a <c>Converge:Faults</c> section) as well as set in code.
/// </summary>
public sealed class FaultRule
{
    /// <summary>
    /// Transaction ids the rule matches, with <c>*</c> for any run of characters and <c>?</c> for one character,
    /// for example <c>test-fail-ship-*</c>. Default <c>*</c> (every transaction).
    /// </summary>
    public string TransactionId { get; set; } = "*";

    /// <summary>
    /// Only messages carrying this header (<c>name</c> or <c>name=value</c>); default: no header condition. For
    /// <see cref="FaultAction.DuplicateReply"/> and <see cref="FaultAction.DropReply"/> it is the participant's command
    /// that must carry it; for <see cref="FaultAction.Fail"/> and <see cref="FaultAction.Delay"/>, the message whose
    /// handling sends the step (the previous reply), since a saga does not copy custom headers onto its commands.
    /// </summary>
    public string? Header { get; set; }

    /// <summary>The step the rule acts on; <c>null</c> or <c>*</c> matches every step.</summary>
    public string? Step { get; set; }

    /// <summary>What the rule does. Default <see cref="FaultAction.Fail"/>.</summary>
    public FaultAction Action { get; set; } = FaultAction.Fail;

    /// <summary>The error a failed step reports. Default <c>injected fault</c>.</summary>
    public string Error { get; set; } = "injected fault";

    /// <summary>How late a delayed command is delivered. Default 5 seconds.</summary>
    public TimeSpan Delay { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The share of matching transactions the rule acts on, from 0 to 1. Default 1. The choice is a hash of the
    /// plan's seed, the transaction id, the step and the rule, so it is the same every time a transaction is replayed.
    /// </summary>
    public double Probability { get; set; } = 1;

    /// <summary>
    /// Acts only on the first this-many sendings of the step (so a retried step can recover); default every one.
    /// Reply rules also act on the replies to the step's compensation, which counts its sendings afresh: a
    /// <see cref="FaultAction.DropReply"/> rule without a limit would drop every confirmation and the compensation
    /// would never finish, so give such rules a <see cref="Times"/>.
    /// </summary>
    public int? Times { get; set; }
}

/// <summary>
/// Fault injection for integration tests and production canaries: rules that fail, delay or disturb saga steps of
/// matching business transactions. Off unless <see cref="Enabled"/> is set.
/// </summary>
public sealed class FaultPlanOptions
{
    /// <summary>Whether rules act at all. Default <c>false</c>.</summary>
    public bool Enabled { get; set; }

    /// <summary>Seeds the probability hash; change it to pick other transactions. Default 0.</summary>
    public int Seed { get; set; }

    /// <summary>The rules, tried in order; the first that matches acts.</summary>
    public IList<FaultRule> Rules { get; } = new List<FaultRule>();

    internal IEnumerable<string> Validate()
    {
        for (var i = 0; i < Rules.Count; i++)
        {
            var rule = Rules[i];
            if (rule.Probability is < 0 or > 1 || double.IsNaN(rule.Probability))
            {
                yield return $"Faults.Rules[{i}]: Probability is {rule.Probability}; use 0 to 1.";
            }

            if (string.IsNullOrEmpty(rule.TransactionId))
            {
                yield return $"Faults.Rules[{i}]: TransactionId is empty; use '*' to match every transaction.";
            }

            if (rule.Times is < 1)
            {
                yield return $"Faults.Rules[{i}]: Times is {rule.Times}; use at least 1, or leave it unset for every attempt.";
            }

            if (rule.Action == FaultAction.Delay && rule.Delay <= TimeSpan.Zero)
            {
                yield return $"Faults.Rules[{i}]: a Delay rule needs a positive Delay.";
            }
        }
    }
}

/// <summary>
/// Decides which fault, if any, applies to a step of a business transaction. Sagas and reply sending consult it;
/// handlers of choreographed flows can too (inject it from dependency injection).
/// </summary>
public sealed class FaultInjector
{
    readonly FaultPlanOptions _plan;

    /// <summary>Creates the injector over <paramref name="plan"/>.</summary>
    public FaultInjector(FaultPlanOptions plan) => _plan = plan ?? throw new ArgumentNullException(nameof(plan));

    /// <summary>Whether any rule can act.</summary>
    public bool Enabled => _plan.Enabled && _plan.Rules.Count > 0;

    /// <summary>
    /// The first rule of kind <paramref name="action"/> that matches the transaction, step, attempt and headers;
    /// <c>null</c> when none does or the plan is off.
    /// </summary>
    public FaultRule? Find(FaultAction action, string? transactionId, string step, int attempt = 1, IReadOnlyDictionary<string, string>? headers = null)
    {
        if (!Enabled || transactionId is null)
        {
            return null;
        }

        for (var i = 0; i < _plan.Rules.Count; i++)
        {
            var rule = _plan.Rules[i];
            if (rule.Action == action
                && (rule.Step is null or "*" || string.Equals(rule.Step, step, StringComparison.Ordinal))
                && (rule.Times is not { } times || attempt <= times)
                && HeaderMatches(rule.Header, headers)
                && Glob(rule.TransactionId, transactionId)
                && Chosen(rule.Probability, transactionId, step, i))
            {
                return rule;
            }
        }

        return null;
    }

    static bool HeaderMatches(string? condition, IReadOnlyDictionary<string, string>? headers)
    {
        if (string.IsNullOrEmpty(condition))
        {
            return true;
        }

        if (headers is null)
        {
            return false;
        }

        var equals = condition.IndexOf('=', StringComparison.Ordinal);
        return equals < 0
            ? headers.ContainsKey(condition)
            : headers.TryGetValue(condition[..equals], out var value) && string.Equals(value, condition[(equals + 1)..], StringComparison.Ordinal);
    }

    bool Chosen(double probability, string transactionId, string step, int rule)
    {
        if (probability >= 1)
        {
            return true;
        }

        if (probability <= 0)
        {
            return false;
        }

        // FNV-1a: a stable hash (string.GetHashCode differs per process), so every process and every replay agrees.
        var hash = 14695981039346656037UL ^ (ulong)(uint)_plan.Seed;
        foreach (var b in Encoding.UTF8.GetBytes($"{transactionId}\n{step}\n{rule}"))
        {
            hash = (hash ^ b) * 1099511628211UL;
        }

        hash ^= hash >> 33;
        hash *= 0xff51afd7ed558ccdUL;
        hash ^= hash >> 33;
        return (hash >> 11) * (1.0 / (1UL << 53)) < probability;
    }

    /// <summary>Matches <paramref name="text"/> against a pattern with <c>*</c> and <c>?</c>.</summary>
    internal static bool Glob(string pattern, string text)
    {
        int p = 0, t = 0, star = -1, mark = 0;
        while (t < text.Length)
        {
            if (p < pattern.Length && (pattern[p] == '?' || pattern[p] == text[t]))
            {
                p++;
                t++;
            }
            else if (p < pattern.Length && pattern[p] == '*')
            {
                star = p++;
                mark = t;
            }
            else if (star >= 0)
            {
                p = star + 1;
                t = ++mark;
            }
            else
            {
                return false;
            }
        }

        while (p < pattern.Length && pattern[p] == '*')
        {
            p++;
        }

        return p == pattern.Length;
    }
}
