using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Converge.Client;
using Converge.Consistency;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Primitives;

namespace Converge.AspNetCore;

/// <summary>
/// Writes the log, or one stream, to a response: a batch read from the store, written and flushed, then the next. The
/// flush waits for the client, so a slow client holds one batch, never a backlog. Caught up, the response waits for the
/// store's next commit to the log, or sends a heartbeat when none comes within the interval.
/// </summary>
internal sealed class LogFeed(ConvergeLogOptions options)
{
    readonly ConditionalWeakTable<IMessageStore, LogTail> _tails = new();
    int _clients;

    public async Task ServeAsync(HttpContext context, string? stream)
    {
        var request = ReadRequest(context, stream, out var error);
        if (request is null)
        {
            await WriteProblemAsync(context, StatusCodes.Status400BadRequest, error!);
            return;
        }

        var store = ConvergeLogEndpoints.Store(context);
        var time = (context.RequestServices.GetService(typeof(ConvergeOptions)) as ConvergeOptions)?.TimeProvider
            ?? throw new InvalidOperationException("MapConvergeLog needs Converge in the application: call builder.Services.AddConverge(...).");
        var aborted = context.RequestAborted;
        if (stream is not null && options.AuthorizeStream is { } authorize && !await authorize(context, stream))
        {
            await WriteProblemAsync(context, StatusCodes.Status403Forbidden, $"You may not read the stream '{stream}'.");
            return;
        }

        if (Interlocked.Increment(ref _clients) > options.MaxClients)
        {
            Interlocked.Decrement(ref _clients);
            context.Response.Headers.RetryAfter = "1";
            await WriteProblemAsync(context, StatusCodes.Status503ServiceUnavailable, $"The log serves at most {options.MaxClients} clients at once; try again shortly.");
            return;
        }

        // A followed response never ends by itself: it ends when the client goes, or when the application stops (the
        // client then resumes elsewhere), so that a stop does not wait out the server's shutdown timeout.
        var stopping = (context.RequestServices.GetService(typeof(IHostApplicationLifetime)) as IHostApplicationLifetime)?.ApplicationStopping ?? CancellationToken.None;
        using var ended = CancellationTokenSource.CreateLinkedTokenSource(aborted, stopping);
        try
        {
            var response = context.Response;
            response.ContentType = request.Sse ? LogWire.EventStreamMediaType : LogWire.NdjsonMediaType;
            response.Headers.CacheControl = "no-cache";
            response.Headers["X-Accel-Buffering"] = "no";
            response.SetConsistencyToken(new ConsistencyToken(await store.GetLogHeadAsync(ended.Token)));
            await response.StartAsync(ended.Token);
            await WriteAsync(response.BodyWriter, store, time, request, context, ended.Token);
        }
        catch (OperationCanceledException) when (ended.IsCancellationRequested)
        {
            // The client went away, or the application is stopping.
        }
        catch (IOException) when (ended.IsCancellationRequested)
        {
            // The client went away mid-write.
        }
        finally
        {
            Interlocked.Decrement(ref _clients);
        }
    }

    async Task WriteAsync(PipeWriter pipe, IMessageStore store, TimeProvider time, LogRequest request, HttpContext context, CancellationToken aborted)
    {
        var tail = _tails.GetValue(store, s => new LogTail(s.Signals.Log));
        using var writer = new EventWriter(pipe, request.Sse);
        Dictionary<string, bool>? allowed = options.AuthorizeStream is null || request.Stream is not null ? null : new(StringComparer.Ordinal);
        var after = request.After;
        var lastWrite = time.GetTimestamp();
        while (!aborted.IsCancellationRequested)
        {
            // Taken before the read: a commit between the read and the wait still wakes it.
            var next = tail.Next;
            var events = request.Stream is null
                ? await store.ReadLogAsync(after, options.BatchSize, aborted)
                : await store.ReadStreamAsync(request.Stream, after + 1, options.BatchSize, aborted);
            if (events.Count > 0)
            {
                var wrote = false;
                foreach (var logEvent in events)
                {
                    after = request.Stream is null ? logEvent.Position : logEvent.StreamVersion;
                    if (!request.Matches(logEvent) || (allowed is not null && !await AllowedAsync(allowed, context, logEvent.Stream)))
                    {
                        continue;
                    }

                    writer.Write(logEvent, after);
                    wrote = true;
                }

                if (!wrote)
                {
                    if (time.GetElapsedTime(lastWrite) < options.HeartbeatInterval)
                    {
                        continue;
                    }

                    writer.Heartbeat();
                }

                if (!await FlushAsync(pipe, aborted))
                {
                    return;
                }

                lastWrite = time.GetTimestamp();
                continue;
            }

            if (!request.Follow)
            {
                return;
            }

            var idle = options.HeartbeatInterval - time.GetElapsedTime(lastWrite);
            if (idle > TimeSpan.Zero)
            {
                using var stopWaiting = CancellationTokenSource.CreateLinkedTokenSource(aborted);
                var delay = Task.Delay(idle, time, stopWaiting.Token);
                var first = await Task.WhenAny(next, delay);
                await stopWaiting.CancelAsync();
                if (first == next)
                {
                    continue;
                }

                aborted.ThrowIfCancellationRequested();
            }

            writer.Heartbeat();
            if (!await FlushAsync(pipe, aborted))
            {
                return;
            }

            lastWrite = time.GetTimestamp();
        }
    }

    async ValueTask<bool> AllowedAsync(Dictionary<string, bool> allowed, HttpContext context, string stream)
    {
        if (!allowed.TryGetValue(stream, out var verdict))
        {
            verdict = await options.AuthorizeStream!(context, stream);
            allowed[stream] = verdict;
        }

        return verdict;
    }

    /// <summary>Flushes to the client, waiting while it is slow; <c>false</c> when it is gone.</summary>
    static async ValueTask<bool> FlushAsync(PipeWriter pipe, CancellationToken aborted)
    {
        var result = await pipe.FlushAsync(aborted);
        return !result.IsCompleted && !result.IsCanceled;
    }

    static async Task WriteProblemAsync(HttpContext context, int status, string detail)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain; charset=utf-8";
        await context.Response.WriteAsync(detail + "\n", context.RequestAborted);
    }

    static LogRequest? ReadRequest(HttpContext context, string? stream, out string? error)
    {
        error = null;
        var query = context.Request.Query;
        long after = 0;
        var lastEventId = context.Request.Headers[LogWire.LastEventIdHeader];
        var cursorText = !StringValues.IsNullOrEmpty(lastEventId) ? lastEventId.ToString() : query["after"].ToString();
        if (cursorText.Length > 0 && (!long.TryParse(cursorText, NumberStyles.None, CultureInfo.InvariantCulture, out after) || after < 0))
        {
            error = $"'{cursorText}' is not a position: give after (or Last-Event-ID) as a whole number of 0 or more.";
            return null;
        }

        var followText = query["follow"].ToString();
        var follow = true;
        if (followText.Length > 0 && !bool.TryParse(followText, out follow))
        {
            error = $"follow is 'true' or 'false', not '{followText}'.";
            return null;
        }

        var format = query["format"].ToString();
        bool sse;
        if (format.Length > 0)
        {
            if (format is not ("sse" or "ndjson"))
            {
                error = $"format is 'ndjson' or 'sse', not '{format}'.";
                return null;
            }

            sse = format == "sse";
        }
        else
        {
            sse = context.Request.Headers.Accept.ToString().Contains(LogWire.EventStreamMediaType, StringComparison.OrdinalIgnoreCase);
        }

        if (stream is not null && query["stream"].Count > 0)
        {
            error = "A stream's route reads that stream: leave out the stream filter.";
            return null;
        }

        string[] types = [.. query["type"].Where(t => !string.IsNullOrWhiteSpace(t)).Select(t => t!)];
        string[] streams = [.. query["stream"].Where(s => !string.IsNullOrWhiteSpace(s)).Select(s => s!)];
        return new LogRequest(stream, after, follow, sse, types, streams);
    }

    sealed record LogRequest(string? Stream, long After, bool Follow, bool Sse, string[] Types, string[] Streams)
    {
        public bool Matches(LogEvent logEvent) =>
            (Streams.Length == 0 || Array.IndexOf(Streams, logEvent.Stream) >= 0)
            && (Types.Length == 0 || Types.Any(t => TypeMatches(t, logEvent.Envelope.MessageType)));

        /// <summary><c>name@version</c> matches that version only; <c>name</c> matches every version.</summary>
        static bool TypeMatches(string wanted, string type) =>
            wanted.Contains('@', StringComparison.Ordinal)
                ? string.Equals(wanted, type, StringComparison.Ordinal)
                : type.Length > wanted.Length && type[wanted.Length] == '@' && type.StartsWith(wanted, StringComparison.Ordinal);
    }

    /// <summary>
    /// Every response of one store waits on this: a ring of the store's log bell completes the current task and starts
    /// the next, so each waiting response hears each commit (the bell itself wakes one waiter).
    /// </summary>
    sealed class LogTail
    {
        TaskCompletionSource _next = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public LogTail(Doorbell bell) => bell.Rung += () => Interlocked.Exchange(ref _next, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

        public Task Next => Volatile.Read(ref _next).Task;
    }

    /// <summary>Writes events and heartbeats in the wire format (see <see cref="LogWire"/>) straight into the response.</summary>
    sealed class EventWriter(PipeWriter pipe, bool sse) : IDisposable
    {
        readonly Utf8JsonWriter _json = new(pipe, new JsonWriterOptions { SkipValidation = true });

        public void Dispose() => _json.Dispose();

        public void Write(LogEvent logEvent, long cursor)
        {
            if (sse)
            {
                pipe.Write("id: "u8);
                WriteNumber(cursor);
                pipe.Write("\ndata: "u8);
            }

            var envelope = logEvent.Envelope;
            _json.Reset(pipe);
            _json.WriteStartObject();
            _json.WriteNumber(LogWire.Position, logEvent.Position);
            _json.WriteString(LogWire.Stream, logEvent.Stream);
            _json.WriteNumber(LogWire.Version, logEvent.StreamVersion);
            _json.WriteString(LogWire.Type, envelope.MessageType);
            _json.WriteString(LogWire.Id, envelope.MessageId);
            if (envelope.CorrelationId is { } correlation)
            {
                _json.WriteString(LogWire.CorrelationId, correlation);
            }

            if (envelope.CausationId is { } causation)
            {
                _json.WriteString(LogWire.CausationId, causation);
            }

            _json.WriteString(LogWire.SentAt, envelope.SentAt);
            if (envelope.AsOf is { } asOf)
            {
                _json.WriteString(LogWire.AsOf, asOf);
            }

            if (envelope.Headers.Count > 0)
            {
                _json.WriteStartObject(LogWire.Headers);
                foreach (var (name, value) in envelope.Headers)
                {
                    _json.WriteString(name, value);
                }

                _json.WriteEndObject();
            }

            WriteBody(envelope.Body);
            _json.WriteEndObject();
            _json.Flush();
            pipe.Write(sse ? "\n\n"u8 : "\n"u8);
        }

        public void Heartbeat() => pipe.Write(sse ? ": heartbeat\n\n"u8 : "\n"u8);

        void WriteNumber(long value)
        {
            var span = pipe.GetSpan(20);
            value.TryFormat(span, out var written, default, CultureInfo.InvariantCulture);
            pipe.Advance(written);
        }

        /// <summary>
        /// A JSON body is written as it is when it is one line, and re-written on one line when it spans several (a line
        /// break would end the event); any other body is written in base 64.
        /// </summary>
        void WriteBody(ReadOnlyMemory<byte> body)
        {
            var span = body.Span;
            if (IsJson(span))
            {
                _json.WritePropertyName(LogWire.Data);
                if (span.IndexOfAny((byte)'\n', (byte)'\r') < 0)
                {
                    _json.WriteRawValue(span, skipInputValidation: true);
                }
                else
                {
                    using var document = JsonDocument.Parse(body);
                    document.RootElement.WriteTo(_json);
                }

                return;
            }

            _json.WriteBase64String(LogWire.DataBase64, span);
        }

        static bool IsJson(ReadOnlySpan<byte> body)
        {
            if (body.IsEmpty)
            {
                return false;
            }

            var reader = new Utf8JsonReader(body);
            try
            {
                while (reader.Read())
                {
                }

                return reader.BytesConsumed == body.Length || body[(int)reader.BytesConsumed..].Trim(" \t\r\n"u8).IsEmpty;
            }
            catch (JsonException)
            {
                return false;
            }
        }
    }
}
