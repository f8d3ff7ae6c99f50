using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;

namespace Converge.Client;

/// <summary>The format a <see cref="ConvergeLogClient"/> asks for.</summary>
public enum LogFormat
{
    /// <summary>Newline-delimited JSON; resumes with <c>?after=</c>.</summary>
    Ndjson,

    /// <summary>Server-Sent Events; resumes with the <c>Last-Event-ID</c> header, as a browser does.</summary>
    ServerSentEvents,
}

/// <summary>What to read from the log.</summary>
public sealed record LogQuery
{
    /// <summary>Start after this position (default 0: from the first event).</summary>
    public long After { get; init; }

    /// <summary>Only these event types (<c>name@version</c>, or <c>name</c> for every version); empty (the default) for all.</summary>
    public IReadOnlyList<string> Types { get; init; } = [];

    /// <summary>Only events of these streams; empty (the default) for all.</summary>
    public IReadOnlyList<string> Streams { get; init; } = [];

    /// <summary>Whether to keep following the log once caught up (default <c>true</c>); <c>false</c> ends at the head.</summary>
    public bool Follow { get; init; } = true;
}

/// <summary>Options of a <see cref="ConvergeLogClient"/>.</summary>
public sealed record ConvergeLogClientOptions
{
    /// <summary>The path the log is mapped at, relative to the client's base address (default <c>converge/log</c>).</summary>
    public string Path { get; init; } = "converge/log";

    /// <summary>The format to ask for (default <see cref="LogFormat.Ndjson"/>).</summary>
    public LogFormat Format { get; init; } = LogFormat.Ndjson;

    /// <summary>The first wait before reconnecting (default 100 ms); it doubles while connections keep failing.</summary>
    public TimeSpan ReconnectDelay { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>The longest wait before reconnecting (default 5 s).</summary>
    public TimeSpan MaxReconnectDelay { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>The clock of reconnect waits (default: the system clock).</summary>
#pragma warning disable RS0030 // A client library's default: callers pass their own clock.
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
#pragma warning restore RS0030

    /// <summary>Called before each reconnect with the failure that ended the previous connection; for logging.</summary>
    public Action<Exception>? OnReconnect { get; init; }
}

/// <summary>
/// Reads a Converge event log served by <c>MapConvergeLog</c> (Converge.AspNetCore). A read is an
/// <see cref="IAsyncEnumerable{T}"/> that survives cut connections: it reconnects on its own, backing off while the server
/// stays unreachable, and resumes after the last event it yielded, so the caller sees every event once and in order.
/// It ends when the caller stops enumerating, when a read with <see cref="LogQuery.Follow"/> <c>false</c> reaches the
/// head, or on an answer that retrying cannot change (400, 401, 403, 404), which it throws as an
/// <see cref="HttpRequestException"/> with the status.
/// </summary>
/// <param name="http">The client to send with, its <see cref="HttpClient.BaseAddress"/> the server's root, its default
/// headers the credentials. Its <see cref="HttpClient.Timeout"/> must allow a long read
/// (<see cref="Timeout.InfiniteTimeSpan"/>): the response of a followed read never ends. Its handler should not drain
/// an abandoned response (<see cref="CreateHandler"/>): by default .NET reads on for up to 2 s to keep the connection,
/// and the server counts such a reader against its limit of clients all that time.</param>
/// <param name="options">Options; defaults when <c>null</c>.</param>
public sealed class ConvergeLogClient(HttpClient http, ConvergeLogClientOptions? options = null)
{
    readonly ConvergeLogClientOptions _options = options ?? new ConvergeLogClientOptions();

    /// <summary>
    /// A handler suited to following the log: <see cref="SocketsHttpHandler.MaxResponseDrainSize"/> 0, so a response
    /// the reader abandons (it stopped enumerating, or a read was cut) closes its connection at once instead of being
    /// read on for up to 2 s; everything else as .NET's default. Give it to an <see cref="HttpClient"/> with
    /// <see cref="HttpClient.Timeout"/> <see cref="Timeout.InfiniteTimeSpan"/>.
    /// </summary>
    public static SocketsHttpHandler CreateHandler() => new() { MaxResponseDrainSize = 0 };

    /// <summary>Reads the whole log, or the part <paramref name="query"/> selects.</summary>
    public IAsyncEnumerable<LogEntry> ReadLogAsync(LogQuery? query = null, CancellationToken cancellationToken = default)
    {
        query ??= new LogQuery();
        return ReadAsync(_options.Path.TrimEnd('/'), query, static e => e.Position, cancellationToken);
    }

    /// <summary>Reads one stream after version <paramref name="afterVersion"/>; <see cref="LogQuery.After"/> is ignored.</summary>
    public IAsyncEnumerable<LogEntry> ReadStreamAsync(string stream, long afterVersion = 0, bool follow = true, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(stream);
        return ReadAsync(_options.Path.TrimEnd('/') + "/streams/" + Uri.EscapeDataString(stream), new LogQuery { After = afterVersion, Follow = follow }, static e => e.Version, cancellationToken);
    }

    async IAsyncEnumerable<LogEntry> ReadAsync(string path, LogQuery query, Func<LogEntry, long> cursorOf, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var cursor = query.After;
        var failures = 0;
        var resumed = false;
        HttpRequestException? finalFailure = null;
        while (true)
        {
            HttpResponseMessage? response = null;
            Exception? failure = null;
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, BuildUri(path, query, _options.Format == LogFormat.ServerSentEvents && resumed ? query.After : cursor));
                if (_options.Format == LogFormat.ServerSentEvents)
                {
                    request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(LogWire.EventStreamMediaType));
                    if (resumed)
                    {
                        // As a browser's EventSource does: the URL stays as first asked, the header says where to resume.
                        request.Headers.TryAddWithoutValidation(LogWire.LastEventIdHeader, cursor.ToString(CultureInfo.InvariantCulture));
                    }
                }
                else
                {
                    request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(LogWire.NdjsonMediaType));
                }

                response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
                if (!response.IsSuccessStatusCode)
                {
                    var status = response.StatusCode;
                    var text = await ReadErrorAsync(response, cancellationToken);
                    var answered = new HttpRequestException($"The log at '{path}' answered {(int)status} {status}: {text}", null, status);
                    if (IsFinal(status))
                    {
                        finalFailure = answered;
                        response.Dispose();
                        break;
                    }

                    failure = answered;
                }
            }
            catch (Exception exception) when (IsTransient(exception, cancellationToken))
            {
                failure = exception;
            }

            // A caller that stops enumerating leaves through this finally: the response (and its connection) goes with it.
            try
            {
                if (failure is null)
                {
                    var stream = await response!.Content.ReadAsStreamAsync(cancellationToken);
                    var reader = PipeReader.Create(stream);
                    var entries = _options.Format == LogFormat.ServerSentEvents ? ReadEventStreamAsync(reader, cancellationToken) : ReadNdjsonAsync(reader, cancellationToken);
                    await using var enumerator = entries.GetAsyncEnumerator(cancellationToken);
                    while (true)
                    {
                        LogEntry entry;
                        try
                        {
                            if (!await enumerator.MoveNextAsync())
                            {
                                break;
                            }

                            entry = enumerator.Current;
                        }
                        catch (Exception exception) when (IsTransient(exception, cancellationToken))
                        {
                            failure = exception;
                            break;
                        }

                        var at = cursorOf(entry);
                        if (at <= cursor)
                        {
                            // Never yield twice: a server resuming from an older cursor repeats what was seen.
                            continue;
                        }

                        cursor = at;
                        resumed = true;
                        failures = 0;
                        yield return entry;
                    }

                    await reader.CompleteAsync();
                    if (failure is null)
                    {
                        if (!query.Follow)
                        {
                            yield break;
                        }

                        // A followed read the server ended (it was stopping, or dropped this client): connect again.
                        failure = new IOException("The server ended the log's response.");
                    }
                }
            }
            finally
            {
                response?.Dispose();
            }

            _options.OnReconnect?.Invoke(failure);
            var delay = _options.ReconnectDelay * Math.Pow(2, Math.Min(failures++, 16));
            await Task.Delay(delay < _options.MaxReconnectDelay ? delay : _options.MaxReconnectDelay, _options.TimeProvider, cancellationToken);
        }

        // Only an answer that retrying cannot change leaves the loop.
        throw finalFailure!;
    }

    static bool IsFinal(HttpStatusCode status) =>
        status is HttpStatusCode.BadRequest or HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden or HttpStatusCode.NotFound or HttpStatusCode.NotAcceptable;

    static bool IsTransient(Exception exception, CancellationToken cancellationToken) =>
        !cancellationToken.IsCancellationRequested && exception is HttpRequestException or IOException or OperationCanceledException or ObjectDisposedException;

    static async Task<string> ReadErrorAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        return text.Length > 500 ? text[..500] : text;
    }

    static string BuildUri(string path, LogQuery query, long after)
    {
        var uri = new StringBuilder(path).Append("?after=").Append(after.ToString(CultureInfo.InvariantCulture));
        foreach (var type in query.Types)
        {
            uri.Append("&type=").Append(Uri.EscapeDataString(type));
        }

        foreach (var stream in query.Streams)
        {
            uri.Append("&stream=").Append(Uri.EscapeDataString(stream));
        }

        if (!query.Follow)
        {
            uri.Append("&follow=false");
        }

        return uri.ToString();
    }

    /// <summary>One event per line; empty lines are heartbeats. A line cut short by a broken connection is never yielded.</summary>
    static async IAsyncEnumerable<LogEntry> ReadNdjsonAsync(PipeReader reader, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        while (true)
        {
            var result = await reader.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            var entries = new List<LogEntry>();
            while (TryReadLine(ref buffer, out var line))
            {
                if (!line.IsEmpty)
                {
                    entries.Add(Parse(line));
                }
            }

            reader.AdvanceTo(buffer.Start, buffer.End);
            foreach (var entry in entries)
            {
                yield return entry;
            }

            if (result.IsCompleted)
            {
                yield break;
            }
        }
    }

    /// <summary>Server-Sent Events: an event ends at an empty line; comments (heartbeats) and fields other than data are skipped.</summary>
    static async IAsyncEnumerable<LogEntry> ReadEventStreamAsync(PipeReader reader, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        byte[]? data = null;
        while (true)
        {
            var result = await reader.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            var entries = new List<LogEntry>();
            while (TryReadLine(ref buffer, out var line))
            {
                if (line.IsEmpty)
                {
                    if (data is not null)
                    {
                        entries.Add(Parse(new ReadOnlySequence<byte>(data)));
                        data = null;
                    }
                }
                else if (StartsWith(line, "data:"u8))
                {
                    var value = line.Slice(5);
                    if (StartsWith(value, " "u8))
                    {
                        value = value.Slice(1);
                    }

                    data = value.ToArray();
                }
            }

            reader.AdvanceTo(buffer.Start, buffer.End);
            foreach (var entry in entries)
            {
                yield return entry;
            }

            if (result.IsCompleted)
            {
                yield break;
            }
        }
    }

    static bool StartsWith(ReadOnlySequence<byte> line, ReadOnlySpan<byte> prefix)
    {
        if (line.Length < prefix.Length)
        {
            return false;
        }

        Span<byte> head = stackalloc byte[prefix.Length];
        line.Slice(0, prefix.Length).CopyTo(head);
        return head.SequenceEqual(prefix);
    }

    static bool TryReadLine(ref ReadOnlySequence<byte> buffer, out ReadOnlySequence<byte> line)
    {
        if (buffer.PositionOf((byte)'\n') is not { } end)
        {
            line = default;
            return false;
        }

        line = buffer.Slice(0, end);
        if (!line.IsEmpty && line.Slice(line.Length - 1).FirstSpan[0] == (byte)'\r')
        {
            line = line.Slice(0, line.Length - 1);
        }

        buffer = buffer.Slice(buffer.GetPosition(1, end));
        return true;
    }

    /// <summary>Reads one event object in a single pass; the body is kept as a <see cref="JsonElement"/> of its own.</summary>
    internal static LogEntry Parse(ReadOnlySequence<byte> line)
    {
        var reader = new Utf8JsonReader(line);
        long? position = null, version = null;
        string? stream = null, type = null, correlationId = null;
        Guid? id = null, causationId = null;
        DateTimeOffset? sentAt = null, asOf = null;
        Dictionary<string, string>? headers = null;
        JsonElement? data = null;
        byte[]? body = null;
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                throw new InvalidDataException("A log event over HTTP is not a JSON object.");
            }

            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var name = reader.GetString();
                reader.Read();
                switch (name)
                {
                    case LogWire.Position: position = reader.GetInt64(); break;
                    case LogWire.Stream: stream = reader.GetString(); break;
                    case LogWire.Version: version = reader.GetInt64(); break;
                    case LogWire.Type: type = reader.GetString(); break;
                    case LogWire.Id: id = reader.GetGuid(); break;
                    case LogWire.CorrelationId: correlationId = reader.GetString(); break;
                    case LogWire.CausationId: causationId = reader.GetGuid(); break;
                    case LogWire.SentAt: sentAt = reader.GetDateTimeOffset(); break;
                    case LogWire.AsOf: asOf = reader.GetDateTimeOffset(); break;
                    case LogWire.Data: data = JsonElement.ParseValue(ref reader); break;
                    case LogWire.DataBase64: body = reader.GetBytesFromBase64(); break;
                    case LogWire.Headers:
                        headers = new Dictionary<string, string>(StringComparer.Ordinal);
                        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                        {
                            var header = reader.GetString()!;
                            reader.Read();
                            headers[header] = reader.GetString() ?? string.Empty;
                        }

                        break;
                    default: reader.Skip(); break;
                }
            }
        }
        catch (Exception exception) when (exception is InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"A log event over HTTP has a field of the wrong type: {exception.Message}", exception);
        }

        if (position is null || stream is null || version is null || type is null || id is null || sentAt is null)
        {
            throw new InvalidDataException($"A log event over HTTP lacks one of {LogWire.Position}, {LogWire.Stream}, {LogWire.Version}, {LogWire.Type}, {LogWire.Id}, {LogWire.SentAt}.");
        }

        return new LogEntry(position.Value, stream, version.Value, type, id.Value, sentAt.Value)
        {
            CorrelationId = correlationId,
            CausationId = causationId,
            AsOf = asOf,
            Headers = headers ?? (IReadOnlyDictionary<string, string>)System.Collections.ObjectModel.ReadOnlyDictionary<string, string>.Empty,
            Data = data,
            Body = body,
        };
    }
}
