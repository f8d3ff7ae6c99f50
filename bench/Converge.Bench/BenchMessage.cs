using System.Diagnostics;
using System.Text.Json;
using Converge.Contracts;
using Converge.Runtime;

namespace Converge.Bench;

/// <summary>The message the bench sends: only its sequence number, which indexes the latency arrays.</summary>
public sealed record BenchMessage(int Seq);

/// <summary>
/// The handler under test: writes one effect row in the message's transaction, so the row commits together with
/// the inbox record and the queue deletion, as a real handler's effects would. It records the statement
/// (<see cref="MessageContext.Execute"/>) rather than awaiting it, as a handler that does not read the rows
/// affected should: PostgreSQL may then send the statements of a batch together.
/// </summary>
internal sealed class BenchHandler : IHandler<BenchMessage>
{
    public Task HandleAsync(BenchMessage message, MessageContext context, CancellationToken cancellationToken)
    {
        context.Execute("INSERT INTO bench_effects (seq, message_id) VALUES (@seq, @message_id)", ("@seq", message.Seq), ("@message_id", context.MessageId));
        return Task.CompletedTask;
    }
}

/// <summary>
/// Records when each message's handling committed (<see cref="IMessageObserver.OnHandled"/> runs after the
/// batch commit), in a preallocated array indexed by the message's sequence number. Any outcome other than
/// a first completion fails the run: the bench must not hide retries, dead letters or duplicates.
/// </summary>
internal sealed class CompletionObserver : IMessageObserver
{
    readonly long[] _completedAt;
    readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    int _completed;

    public CompletionObserver(int count) => _completedAt = new long[count];

    /// <summary>Stopwatch timestamps of each message's committed handling; 0 while pending.</summary>
    public long[] CompletedAt => _completedAt;

    /// <summary>Completes when every message completed; faults at the first unexpected outcome.</summary>
    public Task Done => _done.Task;

    public int Completed => Volatile.Read(ref _completed);

    public void OnHandled(Envelope envelope, string queue, HandlingOutcome outcome)
    {
        var now = Stopwatch.GetTimestamp();
        if (outcome != HandlingOutcome.Completed)
        {
            Fail($"message {envelope.MessageId} on '{queue}' ended {outcome}, not Completed");
            return;
        }

        int seq;
        try
        {
            seq = JsonSerializer.Deserialize<BenchMessage>(envelope.Body.Span, JsonSerializerOptions.Web)!.Seq;
        }
        catch (JsonException exception)
        {
            Fail($"message {envelope.MessageId} has an unreadable body: {exception.Message}");
            return;
        }

        if ((uint)seq >= (uint)_completedAt.Length)
        {
            Fail($"message {envelope.MessageId} has seq {seq}, outside 0..{_completedAt.Length - 1}");
            return;
        }

        if (Interlocked.CompareExchange(ref _completedAt[seq], now, 0) != 0)
        {
            Fail($"seq {seq} completed twice");
            return;
        }

        if (Interlocked.Increment(ref _completed) == _completedAt.Length)
        {
            _done.TrySetResult();
        }
    }

    void Fail(string what) => _done.TrySetException(new BenchVerificationException(what));
}

/// <summary>A bench run lost, duplicated or failed messages, or stalled: its figures must not be reported.</summary>
public sealed class BenchVerificationException : Exception
{
    public BenchVerificationException() { }

    public BenchVerificationException(string message) : base(message) { }

    public BenchVerificationException(string message, Exception innerException) : base(message, innerException) { }
}
