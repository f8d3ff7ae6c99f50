using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Converge.RabbitMq.Tests;

/// <summary>Writes each log message the filter lets through as one line (time, level, category, event id) to a sink.</summary>
internal sealed class LineLoggerProvider(Func<string, LogLevel, bool> enabled, Action<string> write) : ILoggerProvider
{
    public ILogger CreateLogger(string categoryName) => new Logger(enabled, write, categoryName);

    public void Dispose()
    {
    }

    sealed class Logger(Func<string, LogLevel, bool> enabled, Action<string> write, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => enabled(category, logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                write($"{TimeProvider.System.GetUtcNow():HH:mm:ss.fff} {logLevel} {category} [{eventId.Id}] {formatter(state, exception)}{(exception is null ? "" : " " + exception.GetType().Name + ": " + exception.Message)}");
            }
        }
    }
}

/// <summary>Log lines for the test's output, so a failing test shows what the transport saw (Converge's at debug level).</summary>
internal static class TestOutputLogger
{
    public static ILoggerProvider Provider(ITestOutputHelper output) => new LineLoggerProvider(
        (category, level) => level >= LogLevel.Information || (level >= LogLevel.Debug && category.StartsWith("Converge", StringComparison.Ordinal)),
        line =>
        {
            try
            {
                output.WriteLine(line);
            }
            catch (InvalidOperationException)
            {
                // Logged after the test ended: xunit no longer takes output.
            }
        });
}

/// <summary>
/// The last lines a host logged (information and above), so that a test that times out can say in its failure what the
/// transport went through: connections lost and opened, relays failed, consumers cancelled.
/// </summary>
internal sealed class RecentLog(int capacity = 200)
{
    readonly ConcurrentQueue<string> _lines = new();

    /// <summary>The provider to add to the host's logging.</summary>
    public ILoggerProvider Provider => new LineLoggerProvider((_, level) => level >= LogLevel.Information, Add);

    /// <summary>The lines kept, oldest first, one per line.</summary>
    public override string ToString() => string.Join(Environment.NewLine, _lines);

    void Add(string line)
    {
        _lines.Enqueue(line);
        while (_lines.Count > capacity && _lines.TryDequeue(out _))
        {
        }
    }
}
