using Converge.Dashboard.Pages;
using Converge.Dashboard.Rendering;
using Converge.Storage;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;

namespace Converge.Dashboard;

/// <summary>Maps the Converge dashboard into an ASP.NET Core application.</summary>
public static class ConvergeDashboardEndpoints
{
    /// <summary>
    /// Registers what the dashboard needs besides Converge itself: antiforgery (every action is a POST that carries a
    /// token) and a <see cref="TimeProvider"/> when the application has none. Call it before <c>Build()</c>, beside
    /// <c>AddConverge</c>, <c>AddAuthentication</c> and <c>AddAuthorization</c>.
    /// </summary>
    /// <param name="services">The application's services.</param>
    /// <returns>The same services.</returns>
    public static IServiceCollection AddConvergeDashboard(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddAntiforgery();
#pragma warning disable RS0030 // A composition root: the application's own TimeProvider wins when it registered one.
        services.TryAddSingleton(TimeProvider.System);
#pragma warning restore RS0030
        return services;
    }

    /// <summary>
    /// Serves the dashboard under <paramref name="pattern"/> (default <c>/converge</c>): the overview, sagas and their
    /// timelines, the flow of a transaction id, jobs, batches and recurring jobs, dead letters grouped by reason and
    /// source, the log with its consumer groups and projections, and the record of operator actions. Pages are rendered
    /// on the server and refresh their figures over Server-Sent Events; they need no JavaScript build. Every route needs
    /// <see cref="ConvergeDashboardOptions.AuthorizationPolicy"/>; actions are POSTs that need
    /// <see cref="ConvergeDashboardOptions.OperatorPolicy"/> and a valid antiforgery token (400 without one), and each is
    /// recorded in the store with who did it. Needs <c>AddConverge</c> (or an <see cref="IMessageStore"/> service),
    /// <see cref="AddConvergeDashboard"/>, and <c>UseAuthentication</c>/<c>UseAuthorization</c> when a policy is named.
    /// </summary>
    /// <param name="endpoints">The application's routes.</param>
    /// <param name="pattern">Where to map the dashboard.</param>
    /// <param name="configure">Sets <see cref="ConvergeDashboardOptions"/>: the policies, or anonymous access on purpose.</param>
    /// <returns>The routes' group, for further conventions.</returns>
    /// <exception cref="InvalidOperationException">Neither a policy nor anonymous access was chosen, or the options are out of range.</exception>
    public static RouteGroupBuilder MapConvergeDashboard(this IEndpointRouteBuilder endpoints, string pattern = "/converge", Action<ConvergeDashboardOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentException.ThrowIfNullOrWhiteSpace(pattern);
        var options = new ConvergeDashboardOptions();
        configure?.Invoke(options);
        options.Validate();
        if (endpoints.ServiceProvider.GetService<IAntiforgery>() is null)
        {
            throw new InvalidOperationException("MapConvergeDashboard needs its services: call builder.Services.AddConvergeDashboard() before Build().");
        }

        pattern = "/" + pattern.Trim('/');
        var group = endpoints.MapGroup(pattern);
        if (options.AllowAnonymous)
        {
            if (endpoints.ServiceProvider.GetService<ILoggerFactory>()?.CreateLogger("Converge.Dashboard") is { } logger)
            {
                DashboardLog.OpenToAnyone(logger, pattern);
            }

            group.AllowAnonymous();
        }
        else
        {
            group.RequireAuthorization(options.AuthorizationPolicy!);
        }

        var site = new DashboardSite(options, pattern);
        site.MapPages(group);
        if (options.HasOperators)
        {
            var actions = group.MapGroup(string.Empty);
            if (options.OperatorPolicy is { } operators)
            {
                actions.RequireAuthorization(operators);
            }

            site.MapActions(actions);
        }

        return group;
    }

    /// <summary>The store the dashboard shows: the application's Converge store.</summary>
    internal static IMessageStore Store(HttpContext context) =>
        context.RequestServices.GetService(typeof(IMessageStore)) as IMessageStore
        ?? throw new InvalidOperationException("MapConvergeDashboard needs Converge in the application: call builder.Services.AddConverge(...) with a store.");
}

/// <summary>The dashboard's log events.</summary>
internal static partial class DashboardLog
{
    [LoggerMessage(EventId = 1700, Level = LogLevel.Warning, Message = "The Converge dashboard at {Pattern} is open to anyone who can reach it, actions included (AllowAnonymous). Name an authorization policy outside a developer's machine")]
    public static partial void OpenToAnyone(ILogger logger, string pattern);

    [LoggerMessage(EventId = 1701, Level = LogLevel.Information, Message = "Operator {Who} did {Action} on {Target}: {Detail}")]
    public static partial void OperatorAction(ILogger logger, string who, string action, string target, string detail);
}
