using System.Globalization;

namespace Converge.Client;

/// <summary>
/// Read-your-writes for an <see cref="HttpClient"/>, as Cosmos DB's session consistency: remembers the latest
/// consistency token its responses carried (the <see cref="HeaderName"/> header a Converge server sets after a write)
/// and sends it on every later request, so a read served by an endpoint that requires consistency (Converge.AspNetCore's
/// <c>RequireConsistency</c>) waits until it reflects this session's writes, on whichever server node it lands.
/// </summary>
/// <remarks>
/// One session per user or per logical conversation: its token only grows, so sharing one across unrelated users makes
/// each wait for the others' writes. Thread-safe: requests may run concurrently, and a token is never replaced by an
/// earlier one. A request that already carries the header keeps it. A response's token that is not of the form
/// <c>cv1.POSITION</c> is ignored. Add it to a client as any handler:
/// <c>new HttpClient(new ConsistencySession { InnerHandler = new SocketsHttpHandler() })</c>, or with
/// <c>IHttpClientFactory</c>'s <c>AddHttpMessageHandler</c> (then register it transient, one per client, or keep
/// your own per user).
/// </remarks>
public sealed class ConsistencySession : DelegatingHandler
{
    /// <summary>The header that carries a consistency token, in a response (after a write) and in a request (to demand it).</summary>
    public const string HeaderName = "Converge-Consistency";

    const string Prefix = "cv1.";

    long _position;

    /// <summary>A session with no token yet; set <see cref="DelegatingHandler.InnerHandler"/> before use.</summary>
    public ConsistencySession()
    {
    }

    /// <summary>A session with no token yet, sending through <paramref name="innerHandler"/>.</summary>
    public ConsistencySession(HttpMessageHandler innerHandler)
        : base(innerHandler)
    {
    }

    /// <summary>The latest token seen (<c>cv1.POSITION</c>); <c>null</c> before any.</summary>
    public string? Token
    {
        get
        {
            var position = Interlocked.Read(ref _position);
            return position == 0 ? null : Prefix + position.ToString(CultureInfo.InvariantCulture);
        }
    }

    /// <summary>
    /// Takes a token obtained elsewhere (another client's response, a cookie) into the session; it is kept when it is later
    /// than the session's. Returns whether <paramref name="token"/> is a token (of the form <c>cv1.POSITION</c>).
    /// </summary>
    public bool Observe(string? token)
    {
        if (!TryReadPosition(token, out var position))
        {
            return false;
        }

        var current = Interlocked.Read(ref _position);
        while (position > current)
        {
            var seen = Interlocked.CompareExchange(ref _position, position, current);
            if (seen == current)
            {
                break;
            }

            current = seen;
        }

        return true;
    }

    /// <inheritdoc />
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        Attach(request);
        var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        Remember(response);
        return response;
    }

    /// <inheritdoc />
    protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        Attach(request);
        var response = base.Send(request, cancellationToken);
        Remember(response);
        return response;
    }

    void Attach(HttpRequestMessage request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (Token is { } token && !request.Headers.Contains(HeaderName))
        {
            request.Headers.TryAddWithoutValidation(HeaderName, token);
        }
    }

    void Remember(HttpResponseMessage response)
    {
        if (response.Headers.TryGetValues(HeaderName, out var values))
        {
            foreach (var value in values)
            {
                Observe(value);
            }
        }
    }

    /// <summary>Reads the position of a token of the form <c>cv1.POSITION</c> (Converge's <c>ConsistencyToken</c>).</summary>
    internal static bool TryReadPosition(string? token, out long position)
    {
        position = 0;
        return token is not null
            && token.StartsWith(Prefix, StringComparison.Ordinal)
            && token.Length > Prefix.Length
            && long.TryParse(token.AsSpan(Prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out position);
    }
}
