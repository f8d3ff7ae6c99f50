using Converge.Client;
using Converge.Consistency;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;

namespace Converge.AspNetCore;

/// <summary>
/// Read-your-writes over HTTP. A response that follows a write carries the write's token in the
/// <c>Converge-Consistency</c> header (<see cref="SetConsistencyToken"/>); a later request that sends it back to an
/// endpoint with <see cref="RequireConsistency"/> is served only once the projection or consumer group the endpoint
/// reads has reached it. <see cref="ConsistencySession"/> (Converge.Client) does the remembering and sending for an
/// <see cref="HttpClient"/>; a browser can keep the token in memory and send it as the header. The log's routes
/// (<see cref="ConvergeLogEndpoints.MapConvergeLog"/>) carry the log's head at the start of the response.
/// </summary>
public static class ConvergeConsistency
{
    /// <summary>The header: <c>Converge-Consistency: cv1.POSITION</c>.</summary>
    public const string HeaderName = ConsistencySession.HeaderName;

    /// <summary>How long <see cref="RequireConsistency"/> waits by default: 5 seconds.</summary>
    public static TimeSpan DefaultTimeout { get; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Sets the <c>Converge-Consistency</c> header of <paramref name="response"/> to <paramref name="token"/>, typically
    /// <c>ConsistencyToken.After(await bus.PublishAsync(...))</c> after a write committed. When the header is set already
    /// (two writes, or a required token echoed), the later token is kept. Call it before the response starts.
    /// </summary>
    public static void SetConsistencyToken(this HttpResponse response, ConsistencyToken token)
    {
        ArgumentNullException.ThrowIfNull(response);
        if (TryRead(response.Headers[HeaderName], out var current) && current > token)
        {
            token = current;
        }

        response.Headers[HeaderName] = token.ToString();
    }

    /// <summary>
    /// Makes the endpoint read-your-writes: when a request carries <c>Converge-Consistency: cv1.N</c>, the endpoint runs
    /// only once <paramref name="projection"/> (its live version) or <paramref name="group"/> has reached position N,
    /// waiting for at most <paramref name="timeout"/>. Name exactly one of the two. A request without the header runs at
    /// once. The response then carries the token too, so a session never steps back.
    /// <list type="bullet">
    /// <item>Not reached within the timeout: 503 with <c>Retry-After: 1</c> and a problem body naming what is behind
    /// and where (<c>projection</c> or <c>group</c>, <c>position</c>, <c>required</c>).</item>
    /// <item>A header that is not a token: 400 with a problem body showing the form expected.</item>
    /// </list>
    /// Needs <c>AddConverge</c> in the application (it uses <see cref="IConsistency"/>).
    /// </summary>
    /// <param name="builder">The endpoint (or group of endpoints).</param>
    /// <param name="projection">The projection the endpoint reads.</param>
    /// <param name="group">The consumer group whose writes the endpoint reads.</param>
    /// <param name="timeout">How long a request may wait (default <see cref="DefaultTimeout"/>, 5 s); zero answers at once.</param>
    /// <exception cref="ArgumentException">Neither or both of <paramref name="projection"/> and <paramref name="group"/> are named, or the timeout is negative.</exception>
    public static TBuilder RequireConsistency<TBuilder>(this TBuilder builder, string? projection = null, string? group = null, TimeSpan? timeout = null)
        where TBuilder : IEndpointConventionBuilder
    {
        ArgumentNullException.ThrowIfNull(builder);
        if (string.IsNullOrWhiteSpace(projection) == string.IsNullOrWhiteSpace(group))
        {
            throw new ArgumentException("RequireConsistency: name the projection the endpoint reads (projection: \"orders\") or the consumer group (group: \"billing\"), one of the two.");
        }

        var wait = timeout ?? DefaultTimeout;
        if (wait < TimeSpan.Zero)
        {
            throw new ArgumentException($"RequireConsistency: the timeout is {wait}; give zero or more (default {DefaultTimeout.TotalSeconds} s).", nameof(timeout));
        }

        return builder.AddEndpointFilter(new ConsistencyFilter(projection, group, wait));
    }

    /// <summary>Reads every token in <paramref name="values"/> (several headers, or one with commas) and keeps the latest.</summary>
    internal static bool TryRead(StringValues values, out ConsistencyToken token) => TryRead(values, out token, out _);

    static bool TryRead(StringValues values, out ConsistencyToken token, out string? malformed)
    {
        token = ConsistencyToken.None;
        malformed = null;
        var any = false;
        foreach (var value in values)
        {
            foreach (var part in (value ?? "").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                if (!ConsistencyToken.TryParse(part, out var one))
                {
                    malformed = part;
                    return false;
                }

                token = ConsistencyToken.Max(token, one);
                any = true;
            }
        }

        return any;
    }

    sealed class ConsistencyFilter(string? projection, string? group, TimeSpan timeout) : IEndpointFilter
    {
        public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
        {
            var http = context.HttpContext;
            var values = http.Request.Headers[HeaderName];
            if (StringValues.IsNullOrEmpty(values))
            {
                return await next(context);
            }

            if (!TryRead(values, out var token, out var malformed))
            {
                return TypedResults.Problem(
                    statusCode: StatusCodes.Status400BadRequest,
                    title: "Malformed consistency token",
                    detail: $"The {HeaderName} header holds '{Shorten(malformed)}', which is not a consistency token: send back the value a response's {HeaderName} header carried (for example '{ConsistencyToken.Prefix}42'), or leave the header out.");
            }

            var consistency = http.RequestServices.GetService(typeof(IConsistency)) as IConsistency
                ?? throw new InvalidOperationException("RequireConsistency needs Converge in the application: call builder.Services.AddConverge(...) with a store.");
            var result = projection is not null
                ? await consistency.WaitForProjectionAsync(projection, token, timeout, http.RequestAborted)
                : await consistency.WaitForGroupAsync(group!, token, timeout, http.RequestAborted);
            if (!result.Reached)
            {
                http.Response.Headers.RetryAfter = "1";
                var extensions = new Dictionary<string, object?>(StringComparer.Ordinal)
                {
                    [projection is not null ? "projection" : "group"] = result.Target,
                    ["position"] = result.Position,
                    ["required"] = token.ToString(),
                };
                return TypedResults.Problem(
                    statusCode: StatusCodes.Status503ServiceUnavailable,
                    title: "Not caught up yet",
                    detail: $"Waited {timeout.TotalSeconds:0.###} s for {token}: {result.Reason}. Try again shortly.",
                    extensions: extensions);
            }

            http.Response.SetConsistencyToken(token);
            return await next(context);
        }

        static string Shorten(string? text) => text is null ? "" : text.Length <= 40 ? text : text[..40] + "...";
    }
}
