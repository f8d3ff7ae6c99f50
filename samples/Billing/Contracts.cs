namespace Converge.Samples.Billing;

/// <summary>
/// Closes a billing period: invoices every account, charges what is due, sends receipts and writes the finance
/// report. <paramref name="Period"/> is "yyyy-MM"; <c>null</c> (the recurring schedule) closes the month that
/// ended before the job was enqueued, in the billing time zone.
/// </summary>
public sealed record MonthCloseJob(string? Period);

/// <summary>Fans the accounts with ids <paramref name="FromId"/> to <paramref name="ToId"/> out into smaller ranges or invoice jobs.</summary>
public sealed record FanOutJob(string Period, long FromId, long ToId);

/// <summary>Creates the invoice of one account for the period, then hands it on to be charged.</summary>
public sealed record InvoiceAccountJob(string Period, long AccountId);

/// <summary>
/// Simulation only: the customer or support acting on an account after its invoice was computed and before it is
/// charged (paid by bank transfer, a goodwill credit, the card removed). Applies the change, then enqueues the charge.
/// </summary>
public sealed record CustomerActivityJob(string Period, long AccountId, WorldChange Change);

/// <summary>Charges the invoice of one account for the period, after re-reading the invoice and the account.</summary>
public sealed record ChargeInvoiceJob(string Period, long AccountId);

/// <summary>Sends the receipt of a charged or credited invoice in the account's language.</summary>
public sealed record SendReceiptJob(string Period, long AccountId);

/// <summary>The batch's completion callback: totals of the period into billing_finance_reports.</summary>
public sealed record FinanceReportJob(string Period);

/// <summary>What happened to an account between its invoice and its charge (simulated).</summary>
public enum WorldChange
{
    /// <summary>Nothing.</summary>
    None,

    /// <summary>The customer paid the invoice by bank transfer.</summary>
    PaidManually,

    /// <summary>Support granted a credit smaller than the invoice: only the remainder is charged.</summary>
    PartialCredit,

    /// <summary>Support granted a credit larger than the invoice: nothing is charged, a balance remains.</summary>
    FullCredit,

    /// <summary>The customer removed their card: the account goes on hold.</summary>
    CardRemoved,
}

/// <summary>The queues of the month close.</summary>
public static class BillingQueues
{
    /// <summary>The month-close job and the fan-out chunks.</summary>
    public const string Close = "billing.close";

    /// <summary>One invoice per account.</summary>
    public const string Invoices = "billing.invoices";

    /// <summary>Simulated customer and support activity.</summary>
    public const string Customers = "billing.customers";

    /// <summary>Charges through the payment provider: concurrent, rate-limited to what the provider allows.</summary>
    public const string Charges = "billing.charges";

    /// <summary>Receipts through the email service.</summary>
    public const string Emails = "billing.emails";

    /// <summary>The finance report.</summary>
    public const string Reports = "billing.reports";
}

/// <summary>Invoice statuses. An invoice is open until the charge job settles it in one of the final four.</summary>
public static class InvoiceStatus
{
    public const string Open = "open";

    /// <summary>The full amount was charged to the card.</summary>
    public const string Charged = "charged";

    /// <summary>A credit covered part (the remainder was charged) or all of it.</summary>
    public const string Credited = "credited";

    /// <summary>Paid by other means after the invoice was computed: not charged.</summary>
    public const string SkippedAlreadyPaid = "skipped_already_paid";

    /// <summary>Could not be charged (no card, declined, provider unreachable): the account is on hold.</summary>
    public const string Held = "held";

    public static bool IsFinal(string status) => status is Charged or Credited or SkippedAlreadyPaid or Held;
}
