using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Converge.RabbitMq.Tests;

/// <summary>
/// Keeps the last lines a host logged (information and above), so that a test that times out can say what the
/// transport went through: connections lost and opened, relays failed, consumers cancelled.
/// </summary>
internal sealed class RecentLog : ILoggerProvider
{
    readonly ConcurrentQueue<string> _lines = new();
    readonly int _capacity;
    readonly TimeProvider _time;

    public RecentLog(TimeProvider time, int capacity = 200)
    {
        _time = time;
        _capacity = capacity;
    }

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName[(categoryName.LastIndexOf('.') + 1)..]);

    /// <summary>The lines kept, oldest first, one per line.</summary>
    public override string ToString() => string.Join(Environment.NewLine, _lines);

    void Add(string line)
    {
        _lines.Enqueue(line);
        while (_lines.Count > _capacity && _lines.TryDequeue(out _))
        {
        }
    }

    public void Dispose()
    {
    }

    sealed class Logger(RecentLog log, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                log.Add($"{log._time.GetUtcNow():HH:mm:ss.fff} {logLevel} {category}: {formatter(state, exception)}{(exception is null ? "" : $" ({exception.GetType().Name}: {exception.Message})")}");
            }
        }
    }
}
