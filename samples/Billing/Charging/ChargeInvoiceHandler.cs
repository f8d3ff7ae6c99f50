using System.Data.Common;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Samples.Billing.Simulation;

namespace Converge.Samples.Billing.Charging;

/// <summary>What the charge job re-read about an invoice and its account, just before charging.</summary>
public sealed record ChargeState(
    string InvoiceId,
    long AccountId,
    string Status,
    long AmountCents,
    long PaidCents,
    long CreditCents,
    string? CardToken,
    string AccountStatus,
    long AccountUpdatedAt,
    long? PaidAt);

/// <summary>What to do with an open invoice.</summary>
public enum ChargeAction
{
    /// <summary>Settled already: nothing to do.</summary>
    AlreadySettled,

    /// <summary>Paid by other means since the invoice was computed: mark it and charge nothing.</summary>
    SkipAlreadyPaid,

    /// <summary>Nothing is due after credit (or the invoice is zero): settle without calling the provider.</summary>
    NothingToCharge,

    /// <summary>It cannot be charged (no card, account on hold): hold the account.</summary>
    Hold,

    /// <summary>Charge <see cref="ChargeDecision.ToChargeCents"/> to the card.</summary>
    Charge,
}

/// <summary>The decision and its figures: due = amount - paid; credit applied first; the rest goes to the card.</summary>
public readonly record struct ChargeDecision(ChargeAction Action, long DueCents, long CreditAppliedCents, long ToChargeCents, string? HoldReason)
{
    /// <summary>Decides from the state as re-read now; never from what the invoice saw at its "as of".</summary>
    public static ChargeDecision Decide(ChargeState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.Status != InvoiceStatus.Open)
        {
            return new(ChargeAction.AlreadySettled, 0, 0, 0, null);
        }

        var due = state.AmountCents - state.PaidCents;
        if (state.PaidCents > 0 && due <= 0)
        {
            return new(ChargeAction.SkipAlreadyPaid, 0, 0, 0, null);
        }

        var credit = Math.Clamp(state.CreditCents, 0, Math.Max(due, 0));
        var rest = due - credit;
        if (rest <= 0)
        {
            return new(ChargeAction.NothingToCharge, due, credit, 0, null);
        }

        if (state.AccountStatus == "on_hold")
        {
            return new(ChargeAction.Hold, due, 0, 0, HoldReasons.AccountOnHold);
        }

        return state.CardToken is null
            ? new(ChargeAction.Hold, due, 0, 0, HoldReasons.NoPaymentMethod)
            : new(ChargeAction.Charge, due, credit, rest, null);
    }
}

/// <summary>Why an account was put on hold.</summary>
public static class HoldReasons
{
    public const string NoPaymentMethod = "no_payment_method";
    public const string CardDeclined = "card_declined";
    public const string ProviderUnavailable = "provider_unavailable";
    public const string AccountOnHold = "account_on_hold";
}

/// <summary>
/// Charges one invoice. The invoice was computed at its "as of"; by the time this job runs the customer may have
/// paid by bank transfer, support may have granted a credit, the card may be gone. So the job re-reads the invoice
/// and the account first (<see cref="JobContext.OpenReadConnectionAsync"/>) and decides from what it finds now:
/// skip, charge the remainder after credit, hold, or charge. The provider call is made idempotent with the invoice
/// id as its key, and what it answers is recorded with <see cref="JobContext.Execute"/>, which commits with the
/// job's completion, once.
/// </summary>
public sealed class ChargeInvoiceHandler(PaymentProvider provider, BillingOptions billing, TimeProvider clock) : IJobHandler<ChargeInvoiceJob>
{
    public async Task ExecuteAsync(ChargeInvoiceJob job, JobContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(job);
        ArgumentNullException.ThrowIfNull(context);
        var invoiceId = BillingPeriod.InvoiceId(job.Period, job.AccountId);

        // The "as of" rule: re-read the world now; what the invoice saw at context.AsOf is history.
        var readAt = clock.GetUtcNow();
        ChargeState? state;
        await using (var connection = await context.OpenReadConnectionAsync(cancellationToken))
        {
            state = await ReadAsync(connection, invoiceId, cancellationToken);
        }

        if (state is null)
        {
            throw new HandlerFailureException($"Invoice {invoiceId} does not exist; the charge job has nothing to charge.", nonRetryable: true);
        }

        var asOf = context.AsOf?.ToUnixTimeMilliseconds() ?? long.MaxValue;
        var outcome = new Outcome(state, readAt, clock.GetUtcNow(), ChangedSinceAsOf: state.AccountUpdatedAt > asOf || state.PaidAt > asOf);
        var decision = ChargeDecision.Decide(state);
        switch (decision.Action)
        {
            case ChargeAction.AlreadySettled:
                return;
            case ChargeAction.SkipAlreadyPaid:
                Settle(context, outcome, InvoiceStatus.SkippedAlreadyPaid, creditApplied: 0, charged: 0, chargeId: null);
                return;
            case ChargeAction.NothingToCharge:
                Settle(context, outcome, decision.CreditAppliedCents > 0 ? InvoiceStatus.Credited : InvoiceStatus.Charged, decision.CreditAppliedCents, charged: 0, chargeId: null);
                EnqueueReceipt(context, job, readAt);
                return;
            case ChargeAction.Hold:
                Hold(context, outcome, decision.HoldReason!);
                return;
        }

        Charge charge;
        try
        {
            charge = await provider.ChargeAsync(new ChargeRequest(invoiceId, state.CardToken!, decision.ToChargeCents, billing.Currency, invoiceId, state.AccountId, job.Period), cancellationToken);
        }
        catch (ProviderThrottledException throttled) when (context.Attempt < billing.ChargeAttempts)
        {
            // 429: come back when the provider says, not on the usual backoff.
            throw new HandlerFailureException(throttled.Message, nextRetryDelay: throttled.RetryAfter, innerException: throttled);
        }
        catch (ProviderUnavailableException unavailable) when (context.Attempt < billing.ChargeAttempts)
        {
            throw new HandlerFailureException(unavailable.Message, unavailable);
        }
        catch (Exception exception) when (exception is ProviderThrottledException or ProviderUnavailableException)
        {
            // Retries exhausted. Both answers mean nothing was charged, so holding the account is safe; support
            // charges it later, and the same idempotency key makes that safe too.
            Hold(context, outcome, HoldReasons.ProviderUnavailable);
            return;
        }

        if (!charge.Succeeded)
        {
            Hold(context, outcome, HoldReasons.CardDeclined);
            return;
        }

        // Record what the provider charged, not what was asked: if this job charged, was killed before its commit,
        // and runs again after a credit was granted, the provider replays the first charge for the same key.
        var creditApplied = Math.Clamp(decision.DueCents - charge.AmountCents, 0, Math.Max(state.CreditCents, 0));
        Settle(context, outcome, creditApplied > 0 ? InvoiceStatus.Credited : InvoiceStatus.Charged, creditApplied, charge.AmountCents, charge.Id);
        EnqueueReceipt(context, job, readAt);
    }

    readonly record struct Outcome(ChargeState State, DateTimeOffset ReadAt, DateTimeOffset Now, bool ChangedSinceAsOf);

    static void Settle(JobContext context, Outcome outcome, string status, long creditApplied, long charged, string? chargeId)
    {
        var state = outcome.State;
        context.Execute(
            """
            UPDATE billing_invoices
            SET status = @status, credit_applied_cents = @credit, charged_cents = @charged, charge_id = @chargeId,
                balance_cents = @balance, changed_after_as_of = @changed, charged_as_of = @readAt, settled_at = @now
            WHERE id = @id AND status = 'open'
            """,
            ("@id", state.InvoiceId), ("@status", status), ("@credit", creditApplied), ("@charged", charged), ("@chargeId", chargeId),
            ("@balance", state.CreditCents - creditApplied), ("@changed", outcome.ChangedSinceAsOf ? 1 : 0),
            ("@readAt", outcome.ReadAt.ToUnixTimeMilliseconds()), ("@now", outcome.Now.ToUnixTimeMilliseconds()));
        if (creditApplied > 0)
        {
            context.Execute("UPDATE billing_accounts SET credit_cents = credit_cents - @credit WHERE id = @account", ("@account", state.AccountId), ("@credit", creditApplied));
        }
    }

    static void Hold(JobContext context, Outcome outcome, string reason)
    {
        var state = outcome.State;
        var now = outcome.Now.ToUnixTimeMilliseconds();
        context.Execute(
            """
            UPDATE billing_invoices
            SET status = 'held', hold_reason = @reason, changed_after_as_of = @changed, charged_as_of = @readAt, settled_at = @now
            WHERE id = @id AND status = 'open'
            """,
            ("@id", state.InvoiceId), ("@reason", reason), ("@changed", outcome.ChangedSinceAsOf ? 1 : 0), ("@readAt", outcome.ReadAt.ToUnixTimeMilliseconds()), ("@now", now));
        context.Execute("UPDATE billing_accounts SET status = 'on_hold', updated_at = @now WHERE id = @account", ("@account", state.AccountId), ("@now", now));
        context.Execute(
            "INSERT INTO billing_holds (invoice_id, account_id, reason, held_at) VALUES (@id, @account, @reason, @now) ON CONFLICT (invoice_id) DO NOTHING",
            ("@id", state.InvoiceId), ("@account", state.AccountId), ("@reason", reason), ("@now", now));
    }

    /// <summary>The receipt states the balance as of the moment this job read it.</summary>
    static void EnqueueReceipt(JobContext context, ChargeInvoiceJob job, DateTimeOffset readAt) =>
        context.Enqueue(
            new SendReceiptJob(job.Period, job.AccountId),
            new JobOptions { BatchId = context.BatchId, AsOf = readAt, JobId = JobIds.For("receipt", job.Period, job.AccountId) });

    static Task<ChargeState?> ReadAsync(DbConnection connection, string invoiceId, CancellationToken cancellationToken) =>
        connection.ReadOneAsync<ChargeState?>(
            """
            SELECT i.id, i.account_id, i.status, i.amount_cents, i.paid_cents, a.credit_cents, a.card_token, a.status, a.updated_at,
                   (SELECT p.paid_at FROM billing_payments p WHERE p.invoice_id = i.id)
            FROM billing_invoices i JOIN billing_accounts a ON a.id = i.account_id
            WHERE i.id = @id
            """,
            r => new ChargeState(r.GetString(0), r.GetInt64(1), r.GetString(2), r.GetInt64(3), r.GetInt64(4), r.GetInt64(5), r.NullableString(6), r.GetString(7), r.GetInt64(8), r.NullableInt64(9)),
            cancellationToken,
            ("@id", invoiceId));
}
