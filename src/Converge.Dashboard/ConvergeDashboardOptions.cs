namespace Converge.Dashboard;

/// <summary>
/// Options of the dashboard (<see cref="ConvergeDashboardEndpoints.MapConvergeDashboard"/>). Access must be decided:
/// name a <see cref="AuthorizationPolicy"/> for reading, or set <see cref="AllowAnonymous"/> on purpose; mapping refuses
/// otherwise. Operator actions (retry, discard, cancel, trigger, pause, resume, reset, switch, rebuild) are offered only
/// to callers who also satisfy <see cref="OperatorPolicy"/>.
/// </summary>
public sealed class ConvergeDashboardOptions
{
    /// <summary>
    /// The ASP.NET Core authorization policy every page requires (registered with <c>AddAuthorization</c>); <c>null</c>
    /// (the default) means none is named, which mapping refuses unless <see cref="AllowAnonymous"/> is set.
    /// </summary>
    public string? AuthorizationPolicy { get; set; }

    /// <summary>
    /// The policy an operator action requires on top of <see cref="AuthorizationPolicy"/>; <c>null</c> (the default) makes
    /// the dashboard read-only: no action is mapped, and no button is shown.
    /// </summary>
    public string? OperatorPolicy { get; set; }

    /// <summary>
    /// Serves the dashboard, actions included, to anyone who can reach it (default <c>false</c>). For a developer's own
    /// machine only; mapping logs a warning. Access is never granted by a request header or the caller's address.
    /// </summary>
    public bool AllowAnonymous { get; set; }

    /// <summary>Rows per page of every list (default 50, at most 500).</summary>
    public int PageSize { get; set; } = 50;

    /// <summary>How often open pages receive fresh figures over Server-Sent Events (default 2 s).</summary>
    public TimeSpan LiveInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>The name shown in the page titles (default <c>Converge</c>).</summary>
    public string Title { get; set; } = "Converge";

    internal bool HasOperators => OperatorPolicy is not null || AllowAnonymous;

    internal void Validate()
    {
        if (AuthorizationPolicy is null && !AllowAnonymous)
        {
            throw new InvalidOperationException(
                "MapConvergeDashboard shows every message, saga and job of the store and can act on them: name who may see it. Set options.AuthorizationPolicy "
                + "(builder.Services.AddAuthorization(a => a.AddPolicy(\"converge-readers\", p => p.RequireAuthenticatedUser()))) and, for actions, options.OperatorPolicy; "
                + "or set options.AllowAnonymous = true to open it to anyone on purpose.");
        }

        if (AuthorizationPolicy is not null && AllowAnonymous)
        {
            throw new InvalidOperationException("MapConvergeDashboard: set either AuthorizationPolicy or AllowAnonymous, not both.");
        }

        if (OperatorPolicy is not null && AllowAnonymous)
        {
            throw new InvalidOperationException("MapConvergeDashboard: AllowAnonymous lets anyone act already; leave OperatorPolicy unset, or name both policies instead.");
        }

        if (PageSize is < 1 or > 500 || LiveInterval <= TimeSpan.Zero || string.IsNullOrWhiteSpace(Title))
        {
            throw new InvalidOperationException($"MapConvergeDashboard: PageSize ({PageSize}) must be 1 to 500, LiveInterval ({LiveInterval}) positive, and Title not blank.");
        }
    }
}
