using Converge.Runtime;
using Converge.Sagas;
using Converge.Storage;
using Converge.Testing;
using Xunit.Abstractions;

namespace Converge.RabbitMq.Tests;

/// <summary>An orchestrated saga whose commands and replies all travel through RabbitMQ, with the runtime unchanged.</summary>
public sealed class SagaTests(ITestOutputHelper output) : BrokerTestBase(output)
{
    public sealed record Hold(string Order);
    public sealed record Held(string Order);
    public sealed record Unhold(string Order);
    public sealed record Unheld(string Order);
    public sealed record Pay(string Order);
    public sealed record Paid(string Order);
    public sealed record Declined(string Order, string Reason);

    public sealed class PaymentData
    {
        public string Order { get; set; } = "";
    }

    /// <summary>Hold the stock, then pay (the pivot); a declined payment releases the hold.</summary>
    public sealed class PaymentSaga : SagaDefinition<PaymentData>
    {
        public override string Name => "payment";

        protected override void Define(SagaBuilder<PaymentData> saga)
        {
            saga.Compensatable("hold")
                .Send(d => new Hold(d.Order))
                .OnReply<Held>()
                .CompensateWith(d => new Unhold(d.Order))
                .OnCompensated<Unheld>();
            saga.Pivot("pay")
                .Send(d => new Pay(d.Order))
                .OnReply<Paid>()
                .FailOn<Declined>(r => r.Reason);
        }
    }

    /// <summary>Answers every command; payments of orders starting with "poor" are declined.</summary>
    public sealed class Participant : IHandler<Hold>, IHandler<Unhold>, IHandler<Pay>
    {
        public async Task HandleAsync(Hold message, MessageContext context, CancellationToken cancellationToken) => await context.ReplyAsync(new Held(message.Order), cancellationToken);

        public async Task HandleAsync(Unhold message, MessageContext context, CancellationToken cancellationToken) => await context.ReplyAsync(new Unheld(message.Order), cancellationToken);

        public async Task HandleAsync(Pay message, MessageContext context, CancellationToken cancellationToken)
        {
            if (message.Order.StartsWith("poor", StringComparison.Ordinal))
            {
                await context.ReplyAsync(new Declined(message.Order, "insufficient funds"), cancellationToken);
            }
            else
            {
                await context.ReplyAsync(new Paid(message.Order), cancellationToken);
            }
        }
    }

    [Fact]
    public async Task A_saga_completes_or_compensates_with_every_command_and_reply_on_the_broker()
    {
        await using var host = await StartAsync(configure: o =>
        {
            o.Messages.Register<Hold>("test.hold").Register<Held>("test.held").Register<Unhold>("test.unhold").Register<Unheld>("test.unheld")
                .Register<Pay>("test.pay").Register<Paid>("test.paid").Register<Declined>("test.declined");
            o.Handle<Hold, Participant>("stock").Handle<Unhold, Participant>("stock").Handle<Pay, Participant>("payments");
            o.AddSaga<PaymentSaga>();
        });

        await host.Sagas.StartAsync("payment", "rich-1", new PaymentData { Order = "rich-1" });
        await host.Sagas.StartAsync("payment", "poor-1", new PaymentData { Order = "poor-1" });
        var completed = await host.WaitForSagaAsync("rich-1");
        var compensated = await host.WaitForSagaAsync("poor-1");

        Assert.Equal(SagaState.Completed, completed.State);
        Assert.Equal(SagaState.Compensated, compensated.State);
        Assert.Contains("insufficient funds", compensated.Failure, StringComparison.Ordinal);
        var log = await host.Store.SagaQueries().ReadSagaLogAsync("poor-1", CancellationToken.None);
        Assert.Contains(log, e => e.Kind == SagaLogKinds.CompensationSent && e.Step == "hold");
        foreach (var queue in new[] { "stock", "payments", "sagas.payment" })
        {
            Assert.Equal(RouteMode.Broker, Transport(host).Route(queue).Mode);
        }

        await Eventually.UntilAsync(async () => (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).Queues.All(q => q.Ready + q.InFlight == 0), "every queue empty");
    }
}
