using System.CommandLine;
using Converge.Bench;
using Microsoft.Data.Sqlite;

namespace Converge.Cli;

/// <summary>Options shared by several commands, and the wrapper that turns failures into messages and exit codes.</summary>
internal static class CommonOptions
{
    public static Option<string> Db(string description = "The store's SQLite file, as passed to options.UseSqlite(...).") => new("--db")
    {
        Description = description,
        HelpName = "FILE",
        Required = true,
    };

    public static Option<string> TablePrefix() => new("--table-prefix")
    {
        Description = "The store's table prefix, if the application changed SqliteStoreOptions.TablePrefix.",
        HelpName = "PREFIX",
        DefaultValueFactory = _ => "converge_",
    };

    public static Option<bool> Json() => new("--json")
    {
        Description = "Print one JSON object (snake_case) instead of a table.",
    };

    public static void SetAction(this Command command, CliOutput output, Func<ParseResult, CancellationToken, Task<int>> action) =>
        command.SetAction(async (parsed, cancellationToken) =>
        {
            try
            {
                return await action(parsed, cancellationToken);
            }
            catch (CliException exception)
            {
                return await output.FailAsync(exception.ExitCode, exception.Message);
            }
            catch (BenchVerificationException exception)
            {
                return await output.FailAsync(CliApp.Failure, $"bench failed, figures withheld: {exception.Message}");
            }
            catch (SqliteException exception)
            {
                return await output.FailAsync(CliApp.Failure, $"SQLite error {exception.SqliteErrorCode}: {exception.Message}");
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return await output.FailAsync(CliApp.Failure, "cancelled.");
            }
        });
}
