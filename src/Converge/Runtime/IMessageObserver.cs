using Converge.Contracts;
using Converge.Storage;

namespace Converge.Runtime;

/// <summary>What became of a delivered message.</summary>
public enum HandlingOutcome
{
    /// <summary>Handled and removed from its queue.</summary>
    Completed,

    /// <summary>Already handled before (the inbox had it); acknowledged and removed.</summary>
    Duplicate,

    /// <summary>Failed; another attempt is scheduled.</summary>
    RetryScheduled,

    /// <summary>Moved to the dead letters.</summary>
    DeadLettered,
}

/// <summary>
/// Hears about messages after their transactions commit. Register any number as singletons. Calls arrive on
/// dispatcher threads and must be fast and must not throw; they must not write to the store.
/// </summary>
public interface IMessageObserver
{
    /// <summary>A message was committed to <paramref name="queue"/>.</summary>
    void OnSent(Envelope envelope, string queue) { }

    /// <summary>Events were committed to the log.</summary>
    void OnAppended(IReadOnlyList<LogEvent> events) { }

    /// <summary>A queue message's handling committed with <paramref name="outcome"/>.</summary>
    void OnHandled(Envelope envelope, string queue, HandlingOutcome outcome) { }

    /// <summary>A consumer group finished with an event (handled, skipped for want of a handler, or parked).</summary>
    void OnEventHandled(LogEvent logEvent, string group, HandlingOutcome outcome) { }

    /// <summary>
    /// A consumer group's runner found the group paused at <paramref name="position"/> and starts no batch until it is
    /// resumed; called once each time a runner finds it paused after it was running.
    /// </summary>
    void OnGroupPaused(string group, long position) { }
}
