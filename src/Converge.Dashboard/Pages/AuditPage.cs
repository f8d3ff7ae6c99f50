using Converge.Dashboard.Rendering;
using Converge.Storage;

namespace Converge.Dashboard.Pages;

/// <summary>Every operator action recorded in the store, newest first: who, what, on what, when.</summary>
internal static class AuditPage
{
    public static async Task<Html> RenderAsync(DashboardRequest request)
    {
        var log = StoreContracts.Find<IOperatorLog>(request.Store)
            ?? throw new DashboardNotFoundException($"The {request.Store.Name} store keeps no operator log.");
        var after = request.Query("after");
        Page<OperatorAction> page;
        try
        {
            page = await log.ListAsync(after, request.Options.PageSize, request.Aborted);
        }
        catch (FormatException)
        {
            throw new DashboardNotFoundException($"'{after}' is not a position in this list; start again from the first page.");
        }

        var table = Layout.Table(
            ["When", "Who", "Action", "On", "Detail"],
            page.Items.Select(a => Layout.Row(DashboardRequest.Stamp(a.At), a.Actor, a.Action, a.Target, a.Detail ?? "-")),
            "No operator action yet.",
            "operator-actions");
        return Layout.Page(request, "/audit", "Operator actions", Html.Of($"""
            {table}
            {Layout.Next(request, page.Next is not null, "/audit", ("after", page.Next))}
            """));
    }
}
