namespace Converge.Testing.Simulation;

/// <summary>
/// The clock of a simulation: time stands still while work runs and moves only when the simulation moves it, to the
/// next timer when nothing is ready or by a jump it draws from its seed. A timer's callback does not run inside the
/// move: it is handed to the scheduler that created the timer, as one more piece of work to choose from, so a timer of
/// a process that died never fires. Not thread-safe: a simulation runs on one thread.
/// </summary>
public sealed class SimulatedClock : TimeProvider
{
    readonly SortedSet<SimulatedTimer> _timers = new(SimulatedTimer.ByDue);
    readonly DateTimeOffset _epoch;
    DateTimeOffset _now;
    long _created;

    /// <summary>A clock that reads <paramref name="start"/> until it is moved.</summary>
    public SimulatedClock(DateTimeOffset start) => (_epoch, _now) = (start, start);

    /// <inheritdoc />
    public override DateTimeOffset GetUtcNow() => _now;

    /// <inheritdoc />
    public override TimeZoneInfo LocalTimeZone => TimeZoneInfo.Utc;

    /// <inheritdoc />
    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    /// <inheritdoc />
    public override long GetTimestamp() => (_now - _epoch).Ticks;

    /// <summary>When the earliest live timer is due; <c>null</c> when none is set.</summary>
    public DateTimeOffset? NextDue
    {
        get
        {
            while (_timers.Count > 0)
            {
                var first = _timers.Min!;
                if (first.Owner is not { IsDead: true })
                {
                    return first.Due;
                }

                _timers.Remove(first);
            }

            return null;
        }
    }

    /// <summary>The timers set and not yet due or disposed.</summary>
    public int PendingTimers => _timers.Count;

    /// <inheritdoc />
    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        ArgumentNullException.ThrowIfNull(callback);
        var timer = new SimulatedTimer(this, callback, state, TaskScheduler.Current as ProcessScheduler);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>
    /// Moves the clock to <paramref name="when"/> (never back), handing every timer due by then to its scheduler in the
    /// order they fall due, a periodic one as often as its period fits.
    /// </summary>
    public void AdvanceTo(DateTimeOffset when)
    {
        while (_timers.Count > 0 && _timers.Min!.Due <= when)
        {
            var timer = _timers.Min!;
            _timers.Remove(timer);
            if (timer.Due > _now)
            {
                _now = timer.Due;
            }

            if (timer.Period > TimeSpan.Zero)
            {
                Set(timer, timer.Due + timer.Period);
            }

            timer.Fire();
        }

        if (when > _now)
        {
            _now = when;
        }
    }

    void Set(SimulatedTimer timer, DateTimeOffset due)
    {
        timer.Due = due;
        timer.Sequence = ++_created;
        _timers.Add(timer);
    }

    /// <summary>One timer: a callback, when it is due next, and the scheduler its callback runs on.</summary>
    sealed class SimulatedTimer(SimulatedClock clock, TimerCallback callback, object? state, ProcessScheduler? owner) : ITimer
    {
        public static readonly IComparer<SimulatedTimer> ByDue = Comparer<SimulatedTimer>.Create(static (a, b) =>
            a.Due != b.Due ? a.Due.CompareTo(b.Due) : a.Sequence.CompareTo(b.Sequence));

        bool _disposed;

        public DateTimeOffset Due { get; set; }

        public long Sequence { get; set; }

        public TimeSpan Period { get; private set; }

        public ProcessScheduler? Owner => owner;

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            if (_disposed)
            {
                return false;
            }

            clock._timers.Remove(this);
            Period = period == Timeout.InfiniteTimeSpan ? TimeSpan.Zero : period;
            if (dueTime != Timeout.InfiniteTimeSpan)
            {
                clock.Set(this, clock._now + (dueTime < TimeSpan.Zero ? TimeSpan.Zero : dueTime));
            }

            return true;
        }

        public void Fire()
        {
            if (owner is null)
            {
                callback(state);
            }
            else
            {
                owner.Post(() => callback(state));
            }
        }

        public void Dispose()
        {
            _disposed = true;
            clock._timers.Remove(this);
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
