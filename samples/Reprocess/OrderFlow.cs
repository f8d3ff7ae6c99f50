using System.Globalization;

namespace Converge.Samples.Reprocess;

/// <summary>
/// A seeded stream of order events as a shop produces them: new orders interleaved with the next step of orders
/// already open. Of the orders placed, about 80% are paid (of those about 15% later refunded, half of them in part),
/// 15% are cancelled before payment, and 5% stay unpaid. Customers buy with a skew: a few buy much more than most.
/// </summary>
public sealed class OrderFlow
{
    readonly Random _random;
    readonly int _customers;
    readonly List<OpenOrder> _open = [];

    public OrderFlow(int seed, int customers)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(customers, 1);
        _random = new Random(seed);
        _customers = customers;
    }

    /// <summary>Orders placed so far.</summary>
    public int Placed { get; private set; }

    /// <summary>The next event and the stream it belongs to.</summary>
    public (string Stream, object Event) Next()
    {
        if (_open.Count < 50 || _random.NextDouble() < 0.4)
        {
            return Place();
        }

        var index = _random.Next(_open.Count);
        var order = _open[index];
        var next = order.Steps.Dequeue();
        if (order.Steps.Count == 0)
        {
            _open[index] = _open[^1];
            _open.RemoveAt(_open.Count - 1);
        }

        return (OrderEvents.StreamOf(order.Id), next);
    }

    (string, object) Place()
    {
        Placed++;
        var id = "o-" + Placed.ToString("D7", CultureInfo.InvariantCulture);
        // Skewed: squaring a uniform number puts more orders on the low customer numbers.
        var u = _random.NextDouble();
        var customer = "c-" + ((int)(u * u * _customers)).ToString("D5", CultureInfo.InvariantCulture);
        var amount = 500 + (_random.Next(0, 49_500) / 5 * 5);
        var steps = new Queue<object>();
        var fate = _random.NextDouble();
        if (fate < 0.80)
        {
            steps.Enqueue(new OrderPaid(id, customer, amount));
            if (_random.NextDouble() < 0.15)
            {
                steps.Enqueue(new OrderRefunded(id, customer, _random.NextDouble() < 0.5 ? amount : amount / 2));
            }
        }
        else if (fate < 0.95)
        {
            steps.Enqueue(new OrderCancelled(id, customer));
        }

        if (steps.Count > 0)
        {
            _open.Add(new OpenOrder(id, steps));
        }

        return (OrderEvents.StreamOf(id), new OrderPlaced(id, customer, amount));
    }

    sealed record OpenOrder(string Id, Queue<object> Steps);
}
