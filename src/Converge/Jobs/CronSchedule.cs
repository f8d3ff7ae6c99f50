using Cronos;

namespace Converge.Jobs;

/// <summary>
/// A cron expression read in a time zone. Cronos parses and steps it: it takes the five-field form users write
/// for Sidekiq, Hangfire or crontab, and handles daylight-saving gaps and overlaps in the zone.
/// </summary>
internal sealed class CronSchedule
{
    readonly CronExpression _expression;
    readonly TimeZoneInfo _zone;

    CronSchedule(CronExpression expression, TimeZoneInfo zone)
    {
        _expression = expression;
        _zone = zone;
    }

    /// <summary>Parses <paramref name="cron"/> in <paramref name="timeZone"/>; returns the error, or <c>null</c> with the schedule.</summary>
    public static string? TryParse(string cron, string timeZone, out CronSchedule? schedule)
    {
        schedule = null;
        if (string.IsNullOrWhiteSpace(cron))
        {
            return "the cron expression is empty; write five fields (minute hour day-of-month month day-of-week), for example \"0 0 1 * *\".";
        }

        var fields = cron.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length;
        CronExpression expression;
        try
        {
            expression = CronExpression.Parse(cron, fields == 6 ? CronFormat.IncludeSeconds : CronFormat.Standard);
        }
        catch (CronFormatException exception)
        {
            return $"'{cron}' is not a cron expression ({exception.Message}); write five fields (minute hour day-of-month month day-of-week) or six with seconds first.";
        }

        TimeZoneInfo zone;
        try
        {
            zone = TimeZoneInfo.FindSystemTimeZoneById(timeZone);
        }
        catch (Exception exception) when (exception is TimeZoneNotFoundException or InvalidTimeZoneException)
        {
            return $"time zone '{timeZone}' is not known on this machine; use an IANA id such as \"Europe/Berlin\" or \"UTC\".";
        }

        schedule = new CronSchedule(expression, zone);
        return null;
    }

    public static CronSchedule Parse(string cron, string timeZone) =>
        TryParse(cron, timeZone, out var schedule) is { } error ? throw new FormatException(error) : schedule!;

    /// <summary>The first occurrence after <paramref name="from"/> (or at it, when <paramref name="inclusive"/>); <c>null</c> when there is none.</summary>
    public DateTimeOffset? Next(DateTimeOffset from, bool inclusive = false) => _expression.GetNextOccurrence(from, _zone, inclusive);

    /// <summary>
    /// The latest occurrence before <paramref name="before"/> and not before <paramref name="floor"/>; <c>null</c> when
    /// there is none. Searched in widening windows back from <paramref name="before"/>, so a long gap costs a few
    /// steps, not one per occurrence.
    /// </summary>
    public DateTimeOffset? LatestBefore(DateTimeOffset before, DateTimeOffset floor)
    {
        for (var window = TimeSpan.FromMinutes(1); ; window *= 8)
        {
            var from = before - window < floor ? floor : before - window;
            DateTimeOffset? latest = null;
            foreach (var occurrence in _expression.GetOccurrences(from, before, _zone, fromInclusive: true, toInclusive: false))
            {
                latest = occurrence;
            }

            if (latest is not null || from == floor)
            {
                return latest;
            }
        }
    }

    /// <summary>Occurrences from <paramref name="from"/> (inclusive) to <paramref name="to"/> (inclusive), at most <paramref name="max"/>.</summary>
    public IEnumerable<DateTimeOffset> Between(DateTimeOffset from, DateTimeOffset to, int max) =>
        _expression.GetOccurrences(from, to, _zone, fromInclusive: true, toInclusive: true).Take(max);
}
