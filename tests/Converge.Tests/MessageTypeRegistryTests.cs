using Converge.Contracts;

namespace Converge.Tests;

public sealed class MessageTypeRegistryTests
{
    sealed record OrderPlaced;

    sealed record OrderPaid;

    [Fact]
    public void Registered_type_round_trips_through_its_versioned_name()
    {
        var registry = new MessageTypeRegistry().Register<OrderPlaced>("shop.order-placed", version: 2);

        Assert.Equal("shop.order-placed@2", registry.GetName(typeof(OrderPlaced)));
        Assert.True(registry.TryGetType("shop.order-placed@2", out var type));
        Assert.Equal(typeof(OrderPlaced), type);
        Assert.False(registry.TryGetType("shop.order-placed@1", out _));
    }

    [Fact]
    public void Unregistered_type_error_names_the_fix()
    {
        var error = Assert.Throws<InvalidOperationException>(() => new MessageTypeRegistry().GetName(typeof(OrderPlaced)));

        Assert.Contains("Messages.Register<OrderPlaced>", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void One_name_cannot_mean_two_types()
    {
        var registry = new MessageTypeRegistry().Register<OrderPlaced>("shop.order");

        Assert.Throws<InvalidOperationException>(() => registry.Register<OrderPaid>("shop.order"));
        Assert.Throws<InvalidOperationException>(() => registry.Register<OrderPlaced>("shop.other"));
    }

    [Theory]
    [InlineData("Shop.Order")]
    [InlineData("shop order")]
    [InlineData("shop@1")]
    [InlineData("")]
    [InlineData("shop.order\n")]
    public void Invalid_names_are_refused(string name) =>
        Assert.ThrowsAny<ArgumentException>(() => new MessageTypeRegistry().Register<OrderPlaced>(name));

    [Fact]
    public void Versions_start_at_one() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new MessageTypeRegistry().Register<OrderPlaced>("shop.order", version: 0));
}
