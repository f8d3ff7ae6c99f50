using System.Globalization;

namespace Converge.Samples.Billing;

/// <summary>Settings of the month close and of the simulated outside world; the same in every process.</summary>
public sealed class BillingOptions
{
    /// <summary>The time zone the month is closed in (IANA id): the schedule and the "as of" on receipts use it.</summary>
    public string TimeZone { get; set; } = "Europe/Berlin";

    /// <summary>The currency of every amount.</summary>
    public string Currency { get; set; } = "EUR";

    /// <summary>Accounts per fan-out chunk: one chunk job enqueues this many invoice jobs in one commit.</summary>
    public int ChunkSize { get; set; } = 1000;

    /// <summary>The most chunk jobs one fan-out job enqueues; larger ranges are split in levels.</summary>
    public int MaxFanOut { get; set; } = 1000;

    /// <summary>Attempts of a charge before the provider is given up on and the account is held instead.</summary>
    public int ChargeAttempts { get; set; } = 10;

    /// <summary>Charge jobs running at once in one process (each mostly waits on the provider).</summary>
    public int ChargeConcurrency { get; set; } = 128;

    /// <summary>Calls per second the provider accepts before it throttles (its documented limit).</summary>
    public int ProviderCallsPerSecond { get; set; } = 4000;

    /// <summary>The provider's latency per call (jitter of up to half of it either way comes from <see cref="Seed"/>).</summary>
    public TimeSpan ProviderLatency { get; set; } = TimeSpan.FromMilliseconds(20);

    /// <summary>The email service's latency per call.</summary>
    public TimeSpan EmailLatency { get; set; } = TimeSpan.FromMilliseconds(5);

    /// <summary>How often the provider has a short outage, and how long each lasts.</summary>
    public TimeSpan ProviderOutageEvery { get; set; } = TimeSpan.FromSeconds(15);

    /// <inheritdoc cref="ProviderOutageEvery"/>
    public TimeSpan ProviderOutageLength { get; set; } = TimeSpan.FromMilliseconds(300);

    /// <summary>Seeds the accounts, the provider's jitter and outages, and which accounts change between invoice and charge.</summary>
    public int Seed { get; set; } = 42;

    /// <summary>Whether some accounts change between their invoice and their charge (the demo); off in production.</summary>
    public bool InjectWorldChanges { get; set; } = true;

    /// <summary>Whether the close is scheduled on the first of each month at 00:00 in <see cref="TimeZone"/>.</summary>
    public bool ScheduleMonthly { get; set; } = true;

    /// <summary>The <see cref="TimeZone"/>; throws <see cref="TimeZoneNotFoundException"/> when this machine does not know it.</summary>
    public TimeZoneInfo Zone() => TimeZoneInfo.FindSystemTimeZoneById(TimeZone);
}

/// <summary>Billing periods: calendar months named "yyyy-MM".</summary>
public static class BillingPeriod
{
    /// <summary>The month before the one <paramref name="at"/> falls in, in <paramref name="zone"/>.</summary>
    public static string Previous(DateTimeOffset at, TimeZoneInfo zone)
    {
        ArgumentNullException.ThrowIfNull(zone);
        var local = TimeZoneInfo.ConvertTime(at, zone);
        return new DateTime(local.Year, local.Month, 1, 0, 0, 0, DateTimeKind.Unspecified).AddMonths(-1).ToString("yyyy-MM", CultureInfo.InvariantCulture);
    }

    /// <summary>Parses "yyyy-MM"; throws <see cref="FormatException"/> with the expected form otherwise.</summary>
    public static (int Year, int Month) Parse(string period)
    {
        if (period is { Length: 7 } && period[4] == '-'
            && int.TryParse(period.AsSpan(0, 4), NumberStyles.None, CultureInfo.InvariantCulture, out var year)
            && int.TryParse(period.AsSpan(5, 2), NumberStyles.None, CultureInfo.InvariantCulture, out var month)
            && year is >= 2000 and <= 9999 && month is >= 1 and <= 12)
        {
            return (year, month);
        }

        throw new FormatException($"'{period}' is not a billing period; write year and month as yyyy-MM, for example 2026-11.");
    }

    /// <summary>The batch that holds every job of the close of <paramref name="period"/>; a restarted process finds it by this id.</summary>
    public static string BatchId(string period) => "month-close:" + period;

    /// <summary>The invoice id of an account for a period; also the idempotency key of its charge at the provider.</summary>
    public static string InvoiceId(string period, long accountId) =>
        "INV-" + period + "-" + accountId.ToString("D8", CultureInfo.InvariantCulture);
}
