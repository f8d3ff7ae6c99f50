using System.Text.Json;
using Converge.Storage;

namespace Converge.Testing.Simulation.Scenarios;

/// <summary>What the scenarios share: deterministic ids, and reading the log back to judge it.</summary>
internal static class ScenarioParts
{
    static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

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
