using System.CommandLine;
using Converge.Samples.Shop;

namespace Converge.Cli;

/// <summary><c>converge demo shop</c>: the Shop sample end to end, with faults injected, and its outcome checked.</summary>
internal static class DemoCommands
{
    public static Command Create(CliOutput output) => new("demo", "Run a sample end to end on the embedded SQLite store and check its outcome.")
    {
        Shop(output),
    };

    static Command Shop(CliOutput output)
    {
        var orders = new Option<int>("--orders") { Description = "Orders to place.", HelpName = "N", DefaultValueFactory = _ => 2000 };
        var failRate = new Option<double>("--fail-rate") { Description = "Share of orders that meet an injected fault (a failed, delayed, duplicated or dropped step) through the fault plan, 0 to 1.", HelpName = "P", DefaultValueFactory = _ => 0.2 };
        var style = new Option<string>("--style") { Description = "orchestrated (the place-order saga) or choreographed (events on the log).", HelpName = "orchestrated|choreographed", DefaultValueFactory = _ => "orchestrated" };
        style.AcceptOnlyFromAmong("orchestrated", "choreographed");
        var db = new Option<string>("--db") { Description = "The database to create (a new file; kept, so converge sagas and flow can inspect it). Default: a new temporary file.", HelpName = "FILE" };
        var seed = new Option<int>("--seed") { Description = "Seeds the orders and which of them meet faults.", HelpName = "N", DefaultValueFactory = _ => 42 };
        var processes = new Option<bool>("--processes") { Description = "Run Customers, Payments and Shipping in a process each (this one keeps Orders), all on the same database file." };
        var kills = new Option<int>("--kill") { Description = "With --processes: kill a worker process this many times with SIGKILL at random moments, starting it again each time.", HelpName = "N" };
        var json = CommonOptions.Json();
        orders.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int>() < 1)
            {
                r.AddError("--orders must be at least 1.");
            }
        });
        failRate.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<double>() is < 0 or > 1)
            {
                r.AddError("--fail-rate must be between 0 and 1, for example 0.2.");
            }
        });
        var command = new Command("shop", "Place orders through the Shop (orders, customer credit, payments with a simulated provider, shipping) with faults injected at every step, wait until every order has settled, and check: every saga ended, completed orders charged and shipped once, compensated orders hold no credit and no net charge, credit reserved equals the open orders.")
        {
            orders, failRate, style, db, seed, processes, kills, json,
        };
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            var path = parsed.GetValue(db);
            if (path is not null && File.Exists(path))
            {
                throw new CliException(CliApp.Usage, $"{path} already exists. Pass a path for a new file, or omit --db for a temporary one.");
            }

            if (parsed.GetValue(kills) is var killCount && (killCount < 0 || (killCount > 0 && !parsed.GetValue(processes))))
            {
                throw new CliException(CliApp.Usage, "--kill needs --processes (the workers it kills are processes of their own) and a count of 0 or more.");
            }

            var report = await ShopDemo.RunAsync(
                new ShopDemoSettings
                {
                    Orders = parsed.GetValue(orders),
                    FailRate = parsed.GetValue(failRate),
                    Style = parsed.GetValue(style) == "choreographed" ? ShopStyle.Choreographed : ShopStyle.Orchestrated,
                    DbPath = path is null ? null : Path.GetFullPath(path),
                    Seed = parsed.GetValue(seed),
                    Processes = parsed.GetValue(processes),
                    Kills = parsed.GetValue(kills),
                },
                output.Error,
                cancellationToken);
            var outcome = report.Violations == 0 && report.InFlight == 0 ? CliApp.Success : CliApp.Failure;
            if (parsed.GetValue(json))
            {
                await output.WriteJsonAsync(report);
                return outcome;
            }

            var table = CliOutput.Table("Figure", "Value");
            CliOutput.AddRow(table, "style", report.Style);
            CliOutput.AddRow(table, "orders", report.Orders);
            CliOutput.AddRow(table, "completed", report.Completed);
            CliOutput.AddRow(table, "compensated", report.Compensated);
            CliOutput.AddRow(table, "rejected", report.Rejected);
            CliOutput.AddRow(table, "in flight", report.InFlight);
            CliOutput.AddRow(table, "violations", report.Violations);
            CliOutput.AddRow(table, "faults injected", report.FaultsInjected);
            CliOutput.AddRow(table, "replies ignored (duplicate or late)", report.RepliesIgnored);
            CliOutput.AddRow(table, "timeouts fired", report.TimeoutsFired);
            CliOutput.AddRow(table, "seconds", report.Seconds);
            CliOutput.AddRow(table, "sagas per second", report.SagasPerSecond);
            CliOutput.AddRow(table, "worker processes killed", report.Kills);
            CliOutput.AddRow(table, "database", report.Db);
            output.Console().Write(table);
            foreach (var example in report.ViolationExamples)
            {
                await output.Error.WriteLineAsync("violation: " + example);
            }

            return outcome;
        });
        return command;
    }
}
