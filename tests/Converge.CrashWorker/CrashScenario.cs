using Converge.Runtime;
using Converge.Sqlite;

namespace Converge.CrashWorker;

/// <summary>The message of the crash test: <see cref="Seq"/> numbers it from 0.</summary>
public sealed record CrashMessage(int Seq);

/// <summary>Writes one effect row per message, in the transaction that records the message as handled.</summary>
public sealed class EffectHandler : IHandler<CrashMessage>
{
    static readonly TaskCompletionSource Never = new();

    public async Task HandleAsync(CrashMessage message, MessageContext context, CancellationToken cancellationToken)
    {
        if (CrashScenario.Hang)
        {
            // A handler that never returns and ignores its token, as a hung call to an outside service would.
            await Console.Error.WriteLineAsync($"{CrashScenario.HangingLine} {message.Seq}");
            await Never.Task;
        }

        await context.ExecuteAsync(
            $"INSERT INTO {CrashScenario.EffectsTable} (message_id, seq) VALUES (@message_id, @seq)",
            [("@message_id", context.MessageId), ("@seq", message.Seq)],
            cancellationToken);
    }
}

/// <summary>
/// What the crash worker and the crash test share: one configuration, so the test's send-only host and the
/// worker agree on the type name, the queue and the store. This file is compiled into both.
/// </summary>
public static class CrashScenario
{
    public const string MessageTypeName = "crash.message";
    public const string Queue = "crash";
    public const string EffectsTable = "effects";

    /// <summary>No unique constraint on purpose: an effect applied twice shows as a second row.</summary>
    public const string CreateEffectsTable = $"CREATE TABLE IF NOT EXISTS {EffectsTable} (message_id BLOB NOT NULL, seq INTEGER NOT NULL)";

    /// <summary>A short lease, so that messages claimed by a killed worker come back quickly.</summary>
    public static readonly TimeSpan LeaseDuration = TimeSpan.FromSeconds(2);

    /// <summary>Set in a worker started with <c>hang</c>: every handler call hangs (see <see cref="EffectHandler"/>).</summary>
    public static bool Hang { get; set; }

    /// <summary>What a hanging handler writes to standard error, followed by the message's seq.</summary>
    public const string HangingLine = "hanging on seq";

    /// <summary>A hanging worker's host shutdown timeout, which its stop must honour.</summary>
    public static readonly TimeSpan HangingShutdownTimeout = TimeSpan.FromSeconds(2);

    public static void Configure(ConvergeOptions options, string databasePath, bool runConsumers)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.UseSqlite(databasePath);
        options.Messages.Register<CrashMessage>(MessageTypeName);
        options.Handle<CrashMessage, EffectHandler>(Queue);
        options.LeaseDuration = LeaseDuration;
        options.RunConsumers = runConsumers;
    }
}
