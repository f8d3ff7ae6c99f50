using Microsoft.AspNetCore.Http;

namespace Converge.AspNetCore;

/// <summary>
/// Options of the log over HTTP (<see cref="ConvergeLogEndpoints.MapConvergeLog"/>). Access must be decided: name an
/// <see cref="AuthorizationPolicy"/>, or set <see cref="AllowAnonymous"/> on purpose; mapping refuses otherwise.
/// </summary>
public sealed class ConvergeLogOptions
{
    /// <summary>
    /// The ASP.NET Core authorization policy every route requires (registered with <c>AddAuthorization</c>); <c>null</c>
    /// (the default) means none is named, which mapping refuses unless <see cref="AllowAnonymous"/> is set.
    /// </summary>
    public string? AuthorizationPolicy { get; set; }

    /// <summary>Serves the log to anyone who can reach it (default <c>false</c>). For a trusted network or a demo only.</summary>
    public bool AllowAnonymous { get; set; }

    /// <summary>
    /// Decides per stream whether the caller may read it, after the policy admitted the caller; <c>null</c> (the default)
    /// allows every stream. A stream's route answers 403 when it says no; the log's route leaves that stream's events out.
    /// Asked once per stream per request.
    /// </summary>
    public Func<HttpContext, string, ValueTask<bool>>? AuthorizeStream { get; set; }

    /// <summary>The most clients served at once (default 256); one more is answered 503 with <c>Retry-After</c>.</summary>
    public int MaxClients { get; set; } = 256;

    /// <summary>
    /// How long an idle response waits before it sends a heartbeat (default 15 s), so proxies keep it open, clients notice
    /// a dead server, and the server notices a client that went away (its place under <see cref="MaxClients"/> is freed then
    /// at the latest).
    /// </summary>
    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// Events read from the store and written per flush (default 512). A response holds at most one batch: a slow client
    /// slows its own reads (the flush waits for it), it is never buffered for.
    /// </summary>
    public int BatchSize { get; set; } = 512;

    internal void Validate()
    {
        if (AuthorizationPolicy is null && !AllowAnonymous)
        {
            throw new InvalidOperationException(
                "MapConvergeLog serves every event of the log: name who may read it. Set options.AuthorizationPolicy to an authorization policy "
                + "(builder.Services.AddAuthorization(a => a.AddPolicy(\"log-readers\", p => p.RequireAuthenticatedUser()))), "
                + "or set options.AllowAnonymous = true to serve it to anyone on purpose.");
        }

        if (AuthorizationPolicy is not null && AllowAnonymous)
        {
            throw new InvalidOperationException("MapConvergeLog: set either AuthorizationPolicy or AllowAnonymous, not both.");
        }

        if (MaxClients < 1 || BatchSize < 1 || HeartbeatInterval <= TimeSpan.Zero)
        {
            throw new InvalidOperationException($"MapConvergeLog: MaxClients ({MaxClients}) and BatchSize ({BatchSize}) must be at least 1, and HeartbeatInterval ({HeartbeatInterval}) positive.");
        }
    }
}
