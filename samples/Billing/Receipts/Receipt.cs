using System.Globalization;
using System.Text;

namespace Converge.Samples.Billing.Receipts;

/// <summary>What a receipt says.</summary>
/// <param name="AsOf">The moment the balance was read; shown in <paramref name="Zone"/>.</param>
public sealed record ReceiptData(
    string Name,
    string InvoiceId,
    string Period,
    long AmountCents,
    long CreditAppliedCents,
    long ChargedCents,
    string? CardLast4,
    long BalanceCents,
    DateTimeOffset AsOf,
    TimeZoneInfo Zone,
    string Currency);

/// <summary>
/// Renders receipts in English, German and French. The project runs with invariant globalization (no culture
/// data), so month names, number and date formats are spelled out here rather than taken from CultureInfo.
/// </summary>
public static class Receipt
{
    public static IReadOnlyList<string> Languages { get; } = ["en", "de", "fr"];

    static readonly Dictionary<string, Language> Texts = new(StringComparer.Ordinal)
    {
        ["en"] = new(
            Months: ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"],
            Subject: "Receipt for {0}, invoice {1}",
            Greeting: "Hello {0},",
            Thanks: "thank you. Here is the receipt for {0}.",
            Invoice: "Invoice {0}",
            Total: "Invoice total",
            Credit: "Credit applied",
            Card: "Charged to card ending {0}",
            Balance: "Your credit balance as of {0}: {1}",
            Signature: "Converge Billing",
            Date: (day, month, year, time, zone) => $"{day} {month} {year}, {time} ({zone})",
            Colon: ": ",
            Money: (amount, symbol) => symbol + amount,
            Group: ',',
            Decimal: '.'),
        ["de"] = new(
            Months: ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober", "November", "Dezember"],
            Subject: "Quittung für {0}, Rechnung {1}",
            Greeting: "Guten Tag {0},",
            Thanks: "vielen Dank. Hier ist Ihre Quittung für {0}.",
            Invoice: "Rechnung {0}",
            Total: "Rechnungsbetrag",
            Credit: "Angerechnetes Guthaben",
            Card: "Abgebucht von der Karte mit der Endung {0}",
            Balance: "Ihr Guthaben, Stand {0}: {1}",
            Signature: "Converge Billing",
            Date: (day, month, year, time, zone) => $"{day}. {month} {year}, {time} Uhr ({zone})",
            Colon: ": ",
            Money: (amount, symbol) => amount + " " + symbol.Trim(),
            Group: '.',
            Decimal: ','),
        ["fr"] = new(
            Months: ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre", "décembre"],
            Subject: "Reçu pour {0}, facture {1}",
            Greeting: "Bonjour {0},",
            Thanks: "merci. Voici votre reçu pour {0}.",
            Invoice: "Facture {0}",
            Total: "Montant de la facture",
            Credit: "Avoir déduit",
            Card: "Débité sur la carte se terminant par {0}",
            Balance: "Votre solde au {0}\u00A0: {1}",
            Signature: "Converge Billing",
            Date: (day, month, year, time, zone) => $"{(day == "1" ? "1er" : day)} {month} {year} à {time} ({zone})",
            Colon: "\u00A0: ",
            Money: (amount, symbol) => amount + "\u202F" + symbol.Trim(),
            Group: '\u202F',
            Decimal: ','),
    };

    /// <summary>The subject and body in <paramref name="language"/> (English when the language is not known).</summary>
    public static (string Subject, string Body) Render(string language, ReceiptData data)
    {
        ArgumentNullException.ThrowIfNull(data);
        var text = Texts.GetValueOrDefault(language) ?? Texts["en"];
        var (year, month) = BillingPeriod.Parse(data.Period);
        var period = text.Months[month - 1] + " " + year.ToString(CultureInfo.InvariantCulture);
        var symbol = data.Currency == "EUR" ? "€" : data.Currency + " ";

        string Money(long cents) => text.Money(Amount(cents, text.Group, text.Decimal), symbol);

        var body = new StringBuilder()
            .AppendLine(Format(text.Greeting, data.Name))
            .AppendLine()
            .AppendLine(Format(text.Thanks, period))
            .AppendLine()
            .AppendLine(Format(text.Invoice, data.InvoiceId))
            .AppendLine("  " + text.Total + text.Colon + Money(data.AmountCents));
        if (data.CreditAppliedCents > 0)
        {
            body.AppendLine("  " + text.Credit + text.Colon + Money(data.CreditAppliedCents));
        }

        if (data.ChargedCents > 0)
        {
            body.AppendLine("  " + Format(text.Card, data.CardLast4 ?? "----") + text.Colon + Money(data.ChargedCents));
        }

        body.AppendLine()
            .AppendLine(Format(text.Balance, When(text, data.AsOf, data.Zone), Money(data.BalanceCents)))
            .AppendLine()
            .AppendLine(text.Signature);
        return (Format(text.Subject, period, data.InvoiceId), body.ToString());
    }

    /// <summary>The moment in the zone, with its offset, in the language's date format.</summary>
    static string When(Language text, DateTimeOffset at, TimeZoneInfo zone)
    {
        var local = TimeZoneInfo.ConvertTime(at, zone);
        var offset = local.Offset == TimeSpan.Zero
            ? "UTC"
            : "UTC" + (local.Offset < TimeSpan.Zero ? "-" : "+") + local.Offset.ToString(@"hh\:mm", CultureInfo.InvariantCulture);
        return text.Date(
            local.Day.ToString(CultureInfo.InvariantCulture),
            text.Months[local.Month - 1],
            local.Year.ToString(CultureInfo.InvariantCulture),
            local.ToString("HH:mm", CultureInfo.InvariantCulture),
            offset);
    }

    /// <summary>1234567 cents as "12,345.67" with the language's separators.</summary>
    static string Amount(long cents, char group, char separator)
    {
        var negative = cents < 0;
        var units = Math.Abs(cents) / 100;
        var digits = units.ToString(CultureInfo.InvariantCulture);
        var grouped = new StringBuilder();
        for (var i = 0; i < digits.Length; i++)
        {
            if (i > 0 && (digits.Length - i) % 3 == 0)
            {
                grouped.Append(group);
            }

            grouped.Append(digits[i]);
        }

        return (negative ? "-" : "") + grouped + separator + (Math.Abs(cents) % 100).ToString("D2", CultureInfo.InvariantCulture);
    }

    static string Format(string template, params object[] values) => string.Format(CultureInfo.InvariantCulture, template, values);

    sealed record Language(
        string[] Months,
        string Subject,
        string Greeting,
        string Thanks,
        string Invoice,
        string Total,
        string Credit,
        string Card,
        string Balance,
        string Signature,
        Func<string, string, string, string, string, string> Date,
        string Colon,
        Func<string, string, string> Money,
        char Group,
        char Decimal);
}
