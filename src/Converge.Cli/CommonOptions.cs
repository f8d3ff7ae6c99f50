using System.CommandLine;
using Converge.Bench;
using System.Net.Sockets;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Converge.Cli;

/// <summary>Options shared by several commands, and the wrapper that turns failures into messages and exit codes.</summary>
internal static class CommonOptions
{
    /// <summary>
    /// <c>--db FILE</c>, required, for commands that only work on SQLite. Inspection commands take
    /// <see cref="StoreLocation"/> instead, which also accepts a PostgreSQL store.
    /// </summary>
    public static Option<string> Db(string description = "The store's SQLite file, as passed to options.UseSqlite(...).") => new("--db")
    {
        Description = description,
        HelpName = "FILE",
        Required = true,
    };

    /// <summary><c>--table-prefix</c> for commands that only work on SQLite; see <see cref="Db"/>.</summary>
    public static Option<string> TablePrefix() => new("--table-prefix")
    {
        Description = "The store's table prefix, if the application changed SqliteStoreOptions.TablePrefix.",
        HelpName = "PREFIX",
        DefaultValueFactory = _ => "converge_",
    };

    /// <summary><c>--isolation per-message|on-failure</c> for the benches: the queues' <see cref="Runtime.QueueOptions.Isolation"/>.</summary>
    public static Option<string> Isolation(string which)
    {
        var option = new Option<string>("--isolation")
        {
            Description = $"The Isolation of {which}: per-message (a savepoint per message) or on-failure (no savepoints unless a handler fails; then the batch runs again with them).",
            HelpName = "per-message|on-failure",
            DefaultValueFactory = _ => "per-message",
        };
        option.AcceptOnlyFromAmong("per-message", "on-failure");
        return option;
    }

    /// <summary>The <see cref="Runtime.BatchIsolation"/> an <see cref="Isolation"/> option's value names.</summary>
    public static Runtime.BatchIsolation IsolationOf(string? value) => value == "on-failure" ? Runtime.BatchIsolation.OnFailure : Runtime.BatchIsolation.PerMessage;

    /// <summary>A RabbitMQ address (<c>amqp://</c> or <c>amqps://</c>); <c>null</c> when <paramref name="text"/> is not one.</summary>
    public static Uri? Broker(string text) =>
        Uri.TryCreate(text, UriKind.Absolute, out var uri) && uri.Scheme is "amqp" or "amqps" ? uri : null;

    /// <summary><c>--rabbitmq URI</c>, described by <paramref name="description"/>; anything but an AMQP address is refused with an example.</summary>
    public static Option<string> RabbitMq(string description)
    {
        var option = new Option<string>("--rabbitmq") { Description = description, HelpName = "URI" };
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<string>() is { } text && Broker(text) is null)
            {
                result.AddError($"--rabbitmq needs an AMQP address such as amqp://user:password@host:5672/; got '{text}'.");
            }
        });
        return option;
    }

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
            catch (PostgresException exception)
            {
                // The server answered but refused: wrong password, unknown database, missing privilege.
                return await output.FailAsync(CliApp.Failure, $"PostgreSQL error {exception.SqlState}: {exception.MessageText}");
            }
            catch (NpgsqlException exception)
            {
                // Most often the server could not be reached; the inner exception says why (refused, timed out, unknown host).
                var cause = exception.InnerException is { } inner && inner.Message != exception.Message ? $" ({inner.Message})" : "";
                return await output.FailAsync(CliApp.Failure, $"PostgreSQL error: {exception.Message}{cause}. Check the --postgres connection string and that the server is running.");
            }
            catch (SocketException exception)
            {
                return await output.FailAsync(CliApp.Failure, $"cannot reach the PostgreSQL server: {exception.Message}. Check the --postgres connection string and that the server is running.");
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return await output.FailAsync(CliApp.Failure, "cancelled.");
            }
        });
}
