using Microsoft.Extensions.Logging;

namespace Converge.Dashboard;

/// <summary>Reports every operator action with who did it, what, and on what, to the application's log (event 1701).</summary>
internal static class OperatorAudit
{
    /// <summary>The signed-in user's name, or <c>anonymous</c>.</summary>
    public static string Who(DashboardRequest request) =>
        request.Http.User.Identity is { IsAuthenticated: true, Name: { Length: > 0 } name } ? name : "anonymous";

    public static Task RecordAsync(DashboardRequest request, string action, string target, string? detail)
    {
        if (request.Http.RequestServices.GetService(typeof(ILoggerFactory)) is ILoggerFactory loggers
            && loggers.CreateLogger("Converge.Dashboard") is var logger && logger.IsEnabled(LogLevel.Information))
        {
            var who = Who(request);
            DashboardLog.OperatorAction(logger, who, action, target, detail ?? "-");
        }

        return Task.CompletedTask;
    }
}
