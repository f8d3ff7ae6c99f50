namespace Converge.Client;

/// <summary>
/// The wire format of the log over HTTP, shared by the server (<c>MapConvergeLog</c> in Converge.AspNetCore) and
/// <see cref="ConvergeLogClient"/>.
/// <para>NDJSON (<see cref="NdjsonMediaType"/>, the default): one event per line, a JSON object with the fields below; an
/// empty line is a heartbeat. Server-Sent Events (<see cref="EventStreamMediaType"/>, asked for with that
/// <c>Accept</c> header or <c>?format=sse</c>): each event is <c>id: CURSOR</c> and one <c>data:</c> line holding the same
/// object; a comment line (<c>: heartbeat</c>) is a heartbeat. The cursor is the event's position on the log route and
/// its stream version on a stream's route; a request resumes after <c>?after=CURSOR</c>, or after the
/// <c>Last-Event-ID</c> header, which wins.</para>
/// </summary>
public static class LogWire
{
    /// <summary>The media type of newline-delimited JSON.</summary>
    public const string NdjsonMediaType = "application/x-ndjson";

    /// <summary>The media type of Server-Sent Events.</summary>
    public const string EventStreamMediaType = "text/event-stream";

    /// <summary>The header a Server-Sent Events client sends when it reconnects.</summary>
    public const string LastEventIdHeader = "Last-Event-ID";

    /// <summary>The event's position on the log (from 1).</summary>
    public const string Position = "position";

    /// <summary>The stream the event belongs to.</summary>
    public const string Stream = "stream";

    /// <summary>The event's version in its stream (from 1).</summary>
    public const string Version = "version";

    /// <summary>The event's registered type with its version, such as <c>identity.ocr-read@1</c>.</summary>
    public const string Type = "type";

    /// <summary>The event's message id.</summary>
    public const string Id = "id";

    /// <summary>The business transaction it belongs to; absent when none.</summary>
    public const string CorrelationId = "correlation_id";

    /// <summary>The message whose handling caused it; absent when none.</summary>
    public const string CausationId = "causation_id";

    /// <summary>When it was published (ISO 8601).</summary>
    public const string SentAt = "sent_at";

    /// <summary>The time the event describes the world as of; absent when not given.</summary>
    public const string AsOf = "as_of";

    /// <summary>Its headers, an object of strings; absent when none.</summary>
    public const string Headers = "headers";

    /// <summary>Its body, as JSON, when the body is JSON.</summary>
    public const string Data = "data";

    /// <summary>Its body, in base 64, when the body is not JSON.</summary>
    public const string DataBase64 = "data_base64";
}
