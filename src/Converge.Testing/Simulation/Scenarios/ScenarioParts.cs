using System.Text.Json;
using Converge.Runtime;
using Converge.Storage;

namespace Converge.Testing.Simulation.Scenarios;

/// <summary>What the scenarios share: deterministic ids, and reading the log back to judge it.</summary>
internal static class ScenarioParts
{
    static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>
    /// The scenarios' timings: a lease of 1 second (so a crash's leases run out soon), polls every 20 ms, and, with
    /// <paramref name="quickRetries"/>, a failed job retried after 50 ms up to 500 ms, ten attempts in all.
    /// </summary>
    public static void Timings(ConvergeOptions options, bool quickRetries)
    {
        options.LeaseDuration = TimeSpan.FromSeconds(1);
        options.PollInterval = TimeSpan.FromMilliseconds(20);
        if (quickRetries)
        {
            options.Retry.InitialDelay = TimeSpan.FromMilliseconds(50);
            options.Retry.MaxDelay = TimeSpan.FromMilliseconds(500);
            options.Retry.MaxAttempts = 10;
        }
    }

    /// <summary>A fixed id for job <paramref name="number"/> of <paramref name="kind"/>: enqueued again after a crash, it is the same job.</summary>
    public static Guid JobId(int kind, int number) => new(kind, 0, unchecked((short)0x8000), [0x80, 0, 0, 0, (byte)(number >> 24), (byte)(number >> 16), (byte)(number >> 8), (byte)number]);

    /// <summary>Every event on the log, in order.</summary>
    public static async Task<List<LogEvent>> ReadLogAsync(IMessageStore store, CancellationToken cancellationToken)
    {
        var events = new List<LogEvent>();
        while (true)
        {
            var page = await store.ReadLogAsync(events.Count == 0 ? 0 : events[^1].Position, 500, cancellationToken);
            if (page.Count == 0)
            {
                return events;
            }

            events.AddRange(page);
        }
    }

    /// <summary>The body of <paramref name="logEvent"/> as <typeparamref name="T"/>.</summary>
    public static T Body<T>(LogEvent logEvent) => JsonSerializer.Deserialize<T>(logEvent.Envelope.Body.Span, Json)!;
}
