using Converge.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Converge.AspNetCore;

/// <summary>Maps the event log over HTTP.</summary>
public static class ConvergeLogEndpoints
{
    /// <summary>
    /// Serves the store's event log under <paramref name="pattern"/> (default <c>/converge/log</c>):
    /// <list type="bullet">
    /// <item><c>GET {pattern}</c>: the log, each event with its position. Query: <c>after</c> (a position, default 0),
    /// <c>type</c> (repeatable; <c>name@version</c>, or <c>name</c> for every version), <c>stream</c> (repeatable),
    /// <c>follow</c> (default <c>true</c>; <c>false</c> ends at the head).</item>
    /// <item><c>GET {pattern}/streams/{stream}</c>: one stream; <c>after</c> is a stream version.</item>
    /// </list>
    /// As NDJSON (the default) or as Server-Sent Events (<c>Accept: text/event-stream</c> or <c>?format=sse</c>); the
    /// <c>Last-Event-ID</c> header resumes a read and wins over <c>after</c>. A followed response stays open: events are
    /// pushed as they commit (the store's wake-ups), and a heartbeat is sent when it idles. The wire format is described
    /// on <see cref="Converge.Client.LogWire"/>; <see cref="Converge.Client.ConvergeLogClient"/> reads it and resumes on
    /// its own. Each response carries the log's head at its start as a read-your-writes token (the
    /// <c>Converge-Consistency</c> header, see <see cref="ConvergeConsistency"/>). Needs <c>AddConverge</c> in the same application, and <c>UseAuthentication</c>/<c>UseAuthorization</c>
    /// when a policy is named.
    /// </summary>
    /// <param name="endpoints">The application's routes.</param>
    /// <param name="pattern">Where to map the log.</param>
    /// <param name="configure">Sets <see cref="ConvergeLogOptions"/>: an authorization policy, or anonymous access on purpose.</param>
    /// <returns>The routes' group, for further conventions (CORS, rate limiting).</returns>
    /// <exception cref="InvalidOperationException">Neither a policy nor anonymous access was chosen, or the options are out of range.</exception>
    public static RouteGroupBuilder MapConvergeLog(this IEndpointRouteBuilder endpoints, string pattern = "/converge/log", Action<ConvergeLogOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentException.ThrowIfNullOrWhiteSpace(pattern);
        var options = new ConvergeLogOptions();
        configure?.Invoke(options);
        options.Validate();

        var feed = new LogFeed(options);
        var group = endpoints.MapGroup(pattern);
        if (options.AllowAnonymous)
        {
            group.AllowAnonymous();
        }
        else
        {
            group.RequireAuthorization(options.AuthorizationPolicy!);
        }

        group.MapGet(string.Empty, (HttpContext context) => feed.ServeAsync(context, stream: null)).WithName("converge-log");
        group.MapGet("/streams/{stream}", (HttpContext context, string stream) => feed.ServeAsync(context, stream)).WithName("converge-log-stream");
        return group;
    }

    /// <summary>The store the log is read from: the application's Converge store.</summary>
    internal static IMessageStore Store(HttpContext context) =>
        context.RequestServices.GetService(typeof(IMessageStore)) as IMessageStore
        ?? throw new InvalidOperationException("MapConvergeLog needs Converge in the application: call builder.Services.AddConverge(...) with a store.");
}
