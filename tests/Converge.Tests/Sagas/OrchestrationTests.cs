using Converge.Sagas;
using Converge.Storage;

namespace Converge.Tests.Sagas;

public sealed class OrchestrationTests
{
    [Fact]
    public async Task A_saga_whose_steps_all_succeed_completes_and_logs_every_step()
    {
        var participants = new Participants();
        await using var host = await ShopSaga.StartAsync(participants);

        Assert.True(await host.Sagas.StartAsync("order", "tx-ok", new OrderData { Order = "o1", Amount = 10 }));
        var instance = await host.WaitForSagaAsync("tx-ok");

        Assert.Equal(SagaState.Completed, instance.State);
        Assert.Equal(["reserve", "charge", "ship", "notify"], participants.EffectsOf("o1"));
        var data = host.Sagas.ReadData<OrderData>(instance);
        Assert.Equal("pay-o1", data.PaymentId);
        Assert.Equal("track-o1", data.Tracking);
        Assert.Equal(
            ["started", "command-sent:reserve", "reply-received:reserve", "command-sent:charge", "reply-received:charge",
             "command-sent:ship", "reply-received:ship", "command-sent:notify", "reply-received:notify", "state-changed"],
            await ShopSaga.KindsAsync(host, "tx-ok"));
    }
}
