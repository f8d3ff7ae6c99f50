using Converge.Jobs;

namespace Converge.Samples.Identity;

/// <summary>
/// The checks, one job each, running concurrently outside any transaction while they wait on their service. A check
/// publishes its partial result to the request's stream when its job completes, in the transaction that records the
/// job as done, so a result is on the log exactly once. A transient failure throws and the job is retried with backoff.
/// </summary>
public sealed class CheckHandlers(IdentitySimulation simulation)
    : IJobHandler<ReadLicence>, IJobHandler<ExtractFace>, IJobHandler<DetectTampering>, IJobHandler<CheckRegister>, IJobHandler<MatchFace>
{
    /// <summary>How long a register check waits before asking again while the register is down.</summary>
    public static readonly TimeSpan RegisterPollInterval = TimeSpan.FromMilliseconds(250);

    public async Task ExecuteAsync(ReadLicence job, JobContext context, CancellationToken cancellationToken)
    {
        var passed = await simulation.CallAsync(Checks.Ocr, job.Number, context.Attempt, cancellationToken);
        Publish(context, job.RequestId, Checks.Ocr, passed, passed ? "licence read: name, date of birth, licence number" : "licence unreadable");
    }

    public async Task ExecuteAsync(ExtractFace job, JobContext context, CancellationToken cancellationToken)
    {
        var found = await simulation.CallAsync(Checks.FaceExtraction, job.Number, context.Attempt, cancellationToken);
        Publish(context, job.RequestId, Checks.FaceExtraction, found, found ? "face extracted from the video" : "no usable face in the video");
        context.Enqueue(new MatchFace(job.RequestId, job.Number, found));
    }

    public async Task ExecuteAsync(DetectTampering job, JobContext context, CancellationToken cancellationToken)
    {
        var clean = await simulation.CallAsync(Checks.Tamper, job.Number, context.Attempt, cancellationToken);
        Publish(context, job.RequestId, Checks.Tamper, clean, clean ? "no sign of tampering" : "licence picture edited");
    }

    public async Task ExecuteAsync(CheckRegister job, JobContext context, CancellationToken cancellationToken)
    {
        if (simulation.RegisterIsDown)
        {
            await Task.Delay(IdentitySimulation.RegisterTimeout, simulation.Clock, cancellationToken);
            if (job.Poll == 0)
            {
                // Said once, so the verification can decide what to grant meanwhile; the answer follows when the register is back.
                context.Publish(IdentityEvents.StreamOf(job.RequestId), new PartialResult(job.RequestId, Checks.Register, Outcomes.Unavailable, "licence register not answering"));
            }

            context.Enqueue(job with { Poll = job.Poll + 1 }, new JobOptions { Delay = RegisterPollInterval });
            return;
        }

        var valid = await simulation.CallAsync(Checks.Register, job.Number, context.Attempt, cancellationToken);
        Publish(context, job.RequestId, Checks.Register, valid, valid ? "licence valid on the register" : "licence not valid on the register");
    }

    public async Task ExecuteAsync(MatchFace job, JobContext context, CancellationToken cancellationToken)
    {
        if (!job.FaceFound)
        {
            Publish(context, job.RequestId, Checks.FaceMatch, false, "no face to match");
            return;
        }

        var match = await simulation.CallAsync(Checks.FaceMatch, job.Number, context.Attempt, cancellationToken);
        Publish(context, job.RequestId, Checks.FaceMatch, match, match ? "face matches the licence photo" : "face does not match the licence photo");
    }

    static void Publish(JobContext context, string requestId, string check, bool passed, string detail) =>
        context.Publish(IdentityEvents.StreamOf(requestId), new PartialResult(requestId, check, passed ? Outcomes.Passed : Outcomes.Failed, detail));
}
