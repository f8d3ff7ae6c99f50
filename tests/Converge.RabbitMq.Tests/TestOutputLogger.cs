using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Converge.RabbitMq.Tests;

/// <summary>Writes log messages to the test's output, so a failing test shows what the transport saw.</summary>
internal sealed class TestOutputLoggerProvider(ITestOutputHelper output) : ILoggerProvider
{
    public ILogger CreateLogger(string categoryName) => new Logger(output, categoryName);

    public void Dispose()
    {
    }

    sealed class Logger(ITestOutputHelper output, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Debug && (logLevel >= LogLevel.Information || category.StartsWith("Converge", StringComparison.Ordinal));

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            try
            {
                output.WriteLine($"{TimeProvider.System.GetUtcNow():HH:mm:ss.fff} {logLevel} {category} [{eventId.Id}] {formatter(state, exception)}{(exception is null ? "" : " " + exception.GetType().Name + ": " + exception.Message)}");
            }
            catch (InvalidOperationException)
            {
                // Logged after the test ended: xunit no longer takes output.
            }
        }
    }
}
