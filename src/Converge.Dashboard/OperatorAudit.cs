using Converge.Storage;
using Microsoft.Extensions.Logging;

namespace Converge.Dashboard;

/// <summary>
/// Records every operator action in the store's operator log (who, what, on what, when), in the action's own
/// transaction where it has one, and reports it to the application's log (event 1701).
/// </summary>
internal static class OperatorAudit
{
    /// <summary>The signed-in user's name, or <c>anonymous</c>.</summary>
    public static string Who(DashboardRequest request) =>
        request.Http.User.Identity is { IsAuthenticated: true, Name: { Length: > 0 } name } ? name : "anonymous";

    /// <summary>Records an action that committed on its own (a store call with a transaction of its own).</summary>
    public static async Task RecordAsync(DashboardRequest request, string action, string target, string? detail)
    {
        if (StoreContracts.Find<IOperatorLog>(request.Store) is { } log)
        {
            await log.RecordAsync(Entry(request, action, target, detail), request.Aborted);
        }

        Report(request, action, target, detail);
    }

    /// <summary>Records an action in <paramref name="transaction"/>, so that it is recorded if and only if it commits.</summary>
    public static async Task RecordAsync(DashboardRequest request, IStoreTransaction transaction, string action, string target, string? detail)
    {
        if (StoreContracts.Find<IOperatorLogTransaction>(transaction) is { } log)
        {
            await log.RecordOperatorActionAsync(Entry(request, action, target, detail), request.Aborted);
        }

        Report(request, action, target, detail);
    }

    static OperatorAction Entry(DashboardRequest request, string action, string target, string? detail) => new()
    {
        At = request.Time.GetUtcNow(),
        Actor = Who(request),
        Action = action,
        Target = target,
        Detail = detail,
    };

    static void Report(DashboardRequest request, string action, string target, string? detail)
    {
        if (request.Http.RequestServices.GetService(typeof(ILoggerFactory)) is ILoggerFactory loggers
            && loggers.CreateLogger("Converge.Dashboard") is var logger && logger.IsEnabled(LogLevel.Information))
        {
            var who = Who(request);
            DashboardLog.OperatorAction(logger, who, action, target, detail ?? "-");
        }
    }
}
