using Converge.Hosting;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.Extensions.Options;

namespace Converge.Tests;

public sealed class ConvergeOptionsTests
{
    sealed record Ping;

    sealed class PingHandler : IHandler<Ping>
    {
        public Task HandleAsync(Ping message, MessageContext context, CancellationToken cancellationToken) => Task.CompletedTask;
    }

    static ConvergeOptions WithStore() => new() { StoreFactory = _ => throw new NotSupportedException() };

    static List<string> Errors(ConvergeOptions options) =>
        Assert.Throws<OptionsValidationException>(() => ConvergeOptionsValidator.ThrowIfInvalid(options)).Failures.ToList();

    [Fact]
    public void Missing_store_names_the_method_to_call()
    {
        var errors = Errors(new ConvergeOptions());

        Assert.Contains(errors, e => e.Contains("UseSqlite", StringComparison.Ordinal));
    }

    [Fact]
    public void Handled_type_without_a_name_names_the_registration_to_add()
    {
        var options = WithStore().Handle<Ping, PingHandler>("pings");

        Assert.Contains(Errors(options), e => e.Contains("Messages.Register<Ping>", StringComparison.Ordinal));
    }

    [Fact]
    public void Two_handlers_for_one_command_on_one_queue_are_refused()
    {
        var options = WithStore();
        options.Messages.Register<Ping>("test.ping");
        options.Handle<Ping, PingHandler>("pings").Handle<Ping, PingHandler>("pings");

        Assert.Contains(Errors(options), e => e.Contains("one handler per queue", StringComparison.Ordinal));
    }

    [Fact]
    public void Subscribing_one_handler_twice_to_a_group_is_refused()
    {
        var options = WithStore();
        options.Messages.Register<Ping>("test.ping");
        options.Subscribe<Ping, PingHandler>("g").Subscribe<Ping, PingHandler>("g");

        Assert.Contains(Errors(options), e => e.Contains("ConsumerGroup(\"g\"", StringComparison.Ordinal));
    }

    [Fact]
    public void Out_of_range_settings_are_each_reported()
    {
        var options = WithStore();
        options.MaxMessageSize = 10;
        options.LeaseDuration = TimeSpan.FromMilliseconds(10);
        options.Retry.MaxAttempts = 0;
        options.InboxCleanupInterval = TimeSpan.FromDays(400);
        options.Queue("q", q => q.BatchSize = 0);

        var errors = Errors(options);

        Assert.Equal(5, errors.Count);
    }

    [Theory]
    [InlineData("has space")]
    [InlineData("")]
    [InlineData("-leading-dash")]
    [InlineData("orders\n")]
    public void Invalid_queue_names_are_refused_when_configured(string name) =>
        Assert.ThrowsAny<ArgumentException>(() => new ConvergeOptions().Route<Ping>(name));

    [Fact]
    public void A_valid_configuration_passes()
    {
        var options = WithStore();
        options.Messages.Register<Ping>("test.ping");
        options.Handle<Ping, PingHandler>("pings").Subscribe<Ping, PingHandler>("audit");

        ConvergeOptionsValidator.ThrowIfInvalid(options);
        Assert.Equal("pings", options.Routes[typeof(Ping)]);
    }
}
