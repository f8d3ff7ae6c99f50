using System.Text.Json;

namespace Converge.Client;

/// <summary>An event of the log, read over HTTP.</summary>
/// <param name="Position">Its position on the log (from 1): the cursor of the log route.</param>
/// <param name="Stream">The stream it belongs to.</param>
/// <param name="Version">Its version in the stream (from 1): the cursor of a stream's route.</param>
/// <param name="Type">Its registered type with its version, such as <c>identity.ocr-read@1</c>.</param>
/// <param name="Id">Its message id.</param>
/// <param name="SentAt">When it was published.</param>
public sealed record LogEntry(long Position, string Stream, long Version, string Type, Guid Id, DateTimeOffset SentAt)
{
    /// <summary>The business transaction it belongs to; <c>null</c> when none.</summary>
    public string? CorrelationId { get; init; }

    /// <summary>The message whose handling caused it; <c>null</c> when none.</summary>
    public Guid? CausationId { get; init; }

    /// <summary>The time the event describes the world as of; <c>null</c> when not given.</summary>
    public DateTimeOffset? AsOf { get; init; }

    /// <summary>Its headers; empty when none.</summary>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();

    /// <summary>Its body when the body is JSON; <c>null</c> otherwise (see <see cref="Body"/>).</summary>
    public JsonElement? Data { get; init; }

    /// <summary>Its body when it is not JSON; <c>null</c> when it is (see <see cref="Data"/>).</summary>
    public ReadOnlyMemory<byte>? Body { get; init; }

    /// <summary>Deserializes <see cref="Data"/> as <typeparamref name="T"/> (with web defaults unless <paramref name="options"/> says otherwise).</summary>
    /// <exception cref="InvalidOperationException">The body is not JSON.</exception>
    public T? Deserialize<T>(JsonSerializerOptions? options = null) =>
        Data is { } data
            ? data.Deserialize<T>(options ?? JsonSerializerOptions.Web)
            : throw new InvalidOperationException($"Event {Position} ({Type}) has a body that is not JSON; read Body instead.");
}
