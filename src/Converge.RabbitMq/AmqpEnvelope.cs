using System.Globalization;
using System.Text;
using System.Text.Json;
using Converge.Contracts;
using Converge.Storage;
using RabbitMQ.Client;

namespace Converge.RabbitMq;

/// <summary>Maps envelopes and log events to AMQP messages and back, as <see cref="RabbitMqHeaders"/> describes.</summary>
internal static class AmqpEnvelope
{
    static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>The properties of a queue message that already had <paramref name="attemptsMade"/> delivery attempts.</summary>
    public static BasicProperties ForMessage(Envelope envelope, int attemptsMade, IReadOnlyList<AttemptRecord> history, int priority)
    {
        var properties = ForEnvelope(envelope);
        var headers = properties.Headers!;
        if (attemptsMade > 0)
        {
            headers[RabbitMqHeaders.Attempts] = (long)attemptsMade;
        }

        if (history.Count > 0)
        {
            headers[RabbitMqHeaders.History] = JsonSerializer.Serialize(history, Json);
        }

        if (priority != 0)
        {
            headers[RabbitMqHeaders.Priority] = (long)priority;
        }

        return properties;
    }

    /// <summary>The properties of a log event on the stream.</summary>
    public static BasicProperties ForEvent(LogEvent logEvent)
    {
        var properties = ForEnvelope(logEvent.Envelope);
        var headers = properties.Headers!;
        headers[RabbitMqHeaders.Position] = logEvent.Position;
        headers[RabbitMqHeaders.Stream] = logEvent.Stream;
        headers[RabbitMqHeaders.StreamVersion] = logEvent.StreamVersion;
        return properties;
    }

    static BasicProperties ForEnvelope(Envelope envelope)
    {
        var headers = new Dictionary<string, object?>(envelope.Headers.Count + 6, StringComparer.Ordinal)
        {
            [RabbitMqHeaders.SentAt] = envelope.SentAt.ToString("O", CultureInfo.InvariantCulture),
        };
        if (envelope.CausationId is { } causation)
        {
            headers[RabbitMqHeaders.CausationId] = causation.ToString("D");
        }

        if (envelope.AsOf is { } asOf)
        {
            headers[RabbitMqHeaders.AsOf] = asOf.ToString("O", CultureInfo.InvariantCulture);
        }

        foreach (var (name, value) in envelope.Headers)
        {
            headers[name.StartsWith("x-", StringComparison.Ordinal) ? RabbitMqHeaders.EscapedHeaderPrefix + name : name] = value;
        }

        return new BasicProperties
        {
            Persistent = true,
            MessageId = envelope.MessageId.ToString("D"),
            Type = envelope.MessageType,
            CorrelationId = envelope.CorrelationId,
            Timestamp = new AmqpTimestamp(envelope.SentAt.ToUnixTimeSeconds()),
            Headers = headers,
        };
    }

    /// <summary>Reads the envelope of a delivery; <c>false</c> with the reason when it is not a Converge envelope.</summary>
    public static bool TryRead(IReadOnlyBasicProperties properties, byte[] body, out Envelope envelope, out string? error)
    {
        envelope = null!;
        if (!Guid.TryParse(properties.MessageId, out var messageId))
        {
            error = properties.MessageId is null
                ? "The message has no message id; Converge needs a GUID in the AMQP message-id property."
                : $"The message id '{properties.MessageId}' is not a GUID.";
            return false;
        }

        if (string.IsNullOrEmpty(properties.Type))
        {
            error = "The message has no type; Converge needs the registered type name (for example shop.place-order@1) in the AMQP type property.";
            return false;
        }

        var source = properties.Headers;
        DateTimeOffset sentAt;
        if (Text(source, RabbitMqHeaders.SentAt) is { } sentText)
        {
            if (!DateTimeOffset.TryParse(sentText, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out sentAt))
            {
                error = $"The header {RabbitMqHeaders.SentAt} '{sentText}' is not an ISO 8601 time.";
                return false;
            }
        }
        else
        {
            sentAt = properties.IsTimestampPresent() ? DateTimeOffset.FromUnixTimeSeconds(properties.Timestamp.UnixTime) : DateTimeOffset.UnixEpoch;
        }

        Guid? causation = null;
        if (Text(source, RabbitMqHeaders.CausationId) is { } causationText)
        {
            if (!Guid.TryParse(causationText, out var parsed))
            {
                error = $"The header {RabbitMqHeaders.CausationId} '{causationText}' is not a GUID.";
                return false;
            }

            causation = parsed;
        }

        DateTimeOffset? asOf = null;
        if (Text(source, RabbitMqHeaders.AsOf) is { } asOfText)
        {
            if (!DateTimeOffset.TryParse(asOfText, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var parsed))
            {
                error = $"The header {RabbitMqHeaders.AsOf} '{asOfText}' is not an ISO 8601 time.";
                return false;
            }

            asOf = parsed;
        }

        Dictionary<string, string>? headers = null;
        if (source is not null)
        {
            foreach (var (name, value) in source)
            {
                string key;
                if (name.StartsWith(RabbitMqHeaders.EscapedHeaderPrefix, StringComparison.Ordinal))
                {
                    key = name[RabbitMqHeaders.EscapedHeaderPrefix.Length..];
                }
                else if (name.StartsWith("x-", StringComparison.Ordinal))
                {
                    // The broker's, the client library's or the transport's own.
                    continue;
                }
                else
                {
                    key = name;
                }

                (headers ??= new Dictionary<string, string>(StringComparer.Ordinal))[key] = AsText(value) ?? "";
            }
        }

        envelope = new Envelope
        {
            MessageId = messageId,
            MessageType = properties.Type,
            CorrelationId = properties.CorrelationId,
            CausationId = causation,
            SentAt = sentAt,
            AsOf = asOf,
            Headers = headers ?? (IReadOnlyDictionary<string, string>)new Dictionary<string, string>(),
            Body = body,
        };
        error = null;
        return true;
    }

    /// <summary>
    /// What can be made of a message that is not a Converge envelope, for its dead letter: the fields that are there,
    /// a fresh id when it has none that is a GUID.
    /// </summary>
    public static Envelope BestEffort(IReadOnlyBasicProperties properties, byte[] body, DateTimeOffset now) => new()
    {
        MessageId = Guid.TryParse(properties.MessageId, out var id) ? id : Guid.NewGuid(),
        MessageType = string.IsNullOrEmpty(properties.Type) ? "(none)" : properties.Type,
        CorrelationId = properties.CorrelationId,
        SentAt = properties.IsTimestampPresent() ? DateTimeOffset.FromUnixTimeSeconds(properties.Timestamp.UnixTime) : now,
        Body = body,
    };

    /// <summary>Delivery attempts made before the message reached the broker.</summary>
    public static int AttemptsMade(IReadOnlyBasicProperties properties) => (int)Math.Clamp(Number(properties.Headers, RabbitMqHeaders.Attempts) ?? 0, 0, int.MaxValue / 2);

    /// <summary>How often the broker delivered this message before and got it back (<c>x-delivery-count</c>; absent on the first delivery).</summary>
    public static int DeliveryCount(IReadOnlyBasicProperties properties) => (int)Math.Clamp(Number(properties.Headers, "x-delivery-count") ?? 0, 0, int.MaxValue / 2);

    /// <summary>The priority the message was sent with.</summary>
    public static int Priority(IReadOnlyBasicProperties properties) => (int)Math.Clamp(Number(properties.Headers, RabbitMqHeaders.Priority) ?? 0, int.MinValue, int.MaxValue);

    /// <summary>The earlier failed attempts; empty when absent or unreadable (the history is informative, never a reason to refuse a message).</summary>
    public static IReadOnlyList<AttemptRecord> History(IReadOnlyBasicProperties properties)
    {
        if (Text(properties.Headers, RabbitMqHeaders.History) is not { } json)
        {
            return [];
        }

        try
        {
            return JsonSerializer.Deserialize<List<AttemptRecord>>(json, Json) ?? [];
        }
        catch (JsonException)
        {
            return [];
        }
    }

    /// <summary>Reads a log event from the stream; <c>null</c> when the message is not one.</summary>
    public static LogEvent? TryReadEvent(IReadOnlyBasicProperties properties, byte[] body)
    {
        if (Number(properties.Headers, RabbitMqHeaders.Position) is not { } position
            || Text(properties.Headers, RabbitMqHeaders.Stream) is not { } stream
            || Number(properties.Headers, RabbitMqHeaders.StreamVersion) is not { } version
            || !TryRead(properties, body, out var envelope, out _))
        {
            return null;
        }

        return new LogEvent(position, stream, version, envelope);
    }

    /// <summary>A header as text: strings arrive as bytes.</summary>
    public static string? Text(IDictionary<string, object?>? headers, string name) =>
        headers is not null && headers.TryGetValue(name, out var value) ? AsText(value) : null;

    /// <summary>A header as a number, whichever integer type (or text) it arrived as.</summary>
    public static long? Number(IDictionary<string, object?>? headers, string name)
    {
        if (headers is null || !headers.TryGetValue(name, out var value))
        {
            return null;
        }

        return value switch
        {
            long l => l,
            int i => i,
            short s => s,
            byte b => b,
            sbyte sb => sb,
            uint ui => ui,
            ushort us => us,
            ulong ul when ul <= long.MaxValue => (long)ul,
            _ => long.TryParse(AsText(value), NumberStyles.Integer, CultureInfo.InvariantCulture, out var parsed) ? parsed : null,
        };
    }

    static string? AsText(object? value) => value switch
    {
        null => null,
        byte[] bytes => Encoding.UTF8.GetString(bytes),
        string text => text,
        IFormattable formattable => formattable.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString(),
    };
}
