using Converge.Hosting;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Sqlite;
using Microsoft.Extensions.Options;

namespace Converge.Tests.Sagas;

/// <summary>Definitions that cannot run are refused when they are registered, with a message that says what to change.</summary>
public sealed class SagaDefinitionTests
{
    sealed class NoSteps : SagaDefinition<OrderData>
    {
        public override string Name => "empty";

        protected override void Define(SagaBuilder<OrderData> saga) { }
    }

    sealed class DuplicateSteps : SagaDefinition<OrderData>
    {
        public override string Name => "twice";

        protected override void Define(SagaBuilder<OrderData> saga)
        {
            saga.Compensatable("reserve").Send(d => new Reserve(d.Order, d.Amount)).OnReply<Reserved>().CompensateWith(d => new Release(d.Order)).OnCompensated<Released>();
            saga.Compensatable("reserve").Send(d => new Reserve(d.Order, d.Amount)).OnReply<Reserved>().CompensateWith(d => new Release(d.Order)).OnCompensated<Released>();
        }
    }

    sealed class CompensatableAfterPivot : SagaDefinition<OrderData>
    {
        public override string Name => "late-undo";

        protected override void Define(SagaBuilder<OrderData> saga)
        {
            saga.Pivot("ship").Send(d => new Ship(d.Order)).OnReply<Shipped>();
            saga.Compensatable("charge").Send(d => new Charge(d.Order, d.Amount)).OnReply<Charged>().CompensateWith(d => new Refund(d.Order)).OnCompensated<Refunded>();
        }
    }

    sealed class TwoPivots : SagaDefinition<OrderData>
    {
        public override string Name => "two-pivots";

        protected override void Define(SagaBuilder<OrderData> saga)
        {
            saga.Pivot("ship").Send(d => new Ship(d.Order)).OnReply<Shipped>();
            saga.Pivot("notify").Send(d => new Notify(d.Order)).OnReply<Notified>();
        }
    }

    sealed class CompensatableWithoutCompensation : SagaDefinition<OrderData>
    {
        public override string Name => "no-undo";

        protected override void Define(SagaBuilder<OrderData> saga) =>
            saga.Compensatable("charge").Send(d => new Charge(d.Order, d.Amount)).OnReply<Charged>();
    }

    sealed class CompensationTimeoutWithoutCompensation : SagaDefinition<OrderData>
    {
        public override string Name => "no-undo-timeout";

        protected override void Define(SagaBuilder<OrderData> saga) =>
            saga.Compensatable("check").Send(d => new Charge(d.Order, d.Amount)).OnReply<Charged>().CompensationTimeout(TimeSpan.FromSeconds(5));
    }

    sealed class NoRetries : SagaDefinition<OrderData>
    {
        public override string Name => "no-retries";

        protected override void Define(SagaBuilder<OrderData> saga) =>
            saga.Retry(maxAttempts: 0).Compensatable("check").Send(d => new Charge(d.Order, d.Amount)).OnReply<Charged>();
    }

    sealed class CompensationWithoutConfirmation : SagaDefinition<OrderData>
    {
        public override string Name => "unconfirmed";

        protected override void Define(SagaBuilder<OrderData> saga) =>
            saga.Compensatable("charge").Send(d => new Charge(d.Order, d.Amount)).OnReply<Charged>().CompensateWith(d => new Refund(d.Order));
    }

    sealed class PivotWithCompensation : SagaDefinition<OrderData>
    {
        public override string Name => "undo-pivot";

        protected override void Define(SagaBuilder<OrderData> saga) =>
            saga.Pivot("ship").Send(d => new Ship(d.Order)).OnReply<Shipped>().CompensateWith(d => new Refund(d.Order)).OnCompensated<Refunded>();
    }

    sealed class StepWithoutCommand : SagaDefinition<OrderData>
    {
        public override string Name => "silent-step";

        protected override void Define(SagaBuilder<OrderData> saga) => saga.Retriable("notify").OnReply<Notified>();
    }

    sealed class StepWithoutSuccessReply : SagaDefinition<OrderData>
    {
        public override string Name => "no-success";

        protected override void Define(SagaBuilder<OrderData> saga) => saga.Retriable("notify").Send(d => new Notify(d.Order)).FailOn<Refused>();
    }

    sealed class VersionZero : SagaDefinition<OrderData>
    {
        public override string Name => "order";

        public override int Version => 0;

        protected override void Define(SagaBuilder<OrderData> saga) => saga.Retriable("notify").Send(d => new Notify(d.Order)).OnReply<Notified>();
    }

    sealed class BadName : SagaDefinition<OrderData>
    {
        public override string Name => "order saga!";

        protected override void Define(SagaBuilder<OrderData> saga) => saga.Retriable("notify").Send(d => new Notify(d.Order)).OnReply<Notified>();
    }

    /// <summary>Another class that claims version 1 of "order".</summary>
    sealed class OrderSagaCopy : SagaDefinition<OrderData>
    {
        public override string Name => "order";

        protected override void Define(SagaBuilder<OrderData> saga) => saga.Retriable("notify").Send(d => new Notify(d.Order)).OnReply<Notified>();
    }

    static ArgumentException Refused<TSaga>() where TSaga : ISagaDefinition, new() =>
        Assert.Throws<ArgumentException>(() => new ConvergeOptions().AddSaga<TSaga>());

    [Fact]
    public void A_saga_without_steps_is_refused() =>
        Assert.Equal(
            "Saga 'empty' version 1 declares no steps. Declare them in Define, in order: saga.Compensatable(\"name\"), saga.Pivot(\"name\") or saga.Retriable(\"name\").",
            Refused<NoSteps>().Message);

    [Fact]
    public void Duplicate_step_names_are_refused() =>
        Assert.Equal("Saga 'twice' version 1 declares step 'reserve' 2 times; step names must be unique.", Refused<DuplicateSteps>().Message);

    [Fact]
    public void A_compensatable_step_after_the_pivot_is_refused()
    {
        var message = Refused<CompensatableAfterPivot>().Message;

        Assert.Contains("step 'charge' (Compensatable) is out of order", message, StringComparison.Ordinal);
        Assert.Contains("Declare compensatable steps first, then at most one pivot, then retriable steps.", message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_second_pivot_is_refused() =>
        Assert.Contains("step 'notify' (Pivot) is out of order", Refused<TwoPivots>().Message, StringComparison.Ordinal);

    [Fact]
    public void A_compensatable_step_may_have_no_compensation() =>
        new ConvergeOptions().AddSaga<CompensatableWithoutCompensation>();

    [Fact]
    public void A_compensation_timeout_without_compensation_is_refused() =>
        Assert.Contains("sets a compensation timeout but has no compensation", Refused<CompensationTimeoutWithoutCompensation>().Message, StringComparison.Ordinal);

    [Fact]
    public void A_saga_retry_without_attempts_is_refused() =>
        Assert.Contains("MaxAttempts is 0", Refused<NoRetries>().Message, StringComparison.Ordinal);

    [Fact]
    public void A_compensation_without_confirmation_is_refused() =>
        Assert.Contains("Call .OnCompensated<TReply>()", Refused<CompensationWithoutConfirmation>().Message, StringComparison.Ordinal);

    [Fact]
    public void A_compensation_on_a_pivot_is_refused() =>
        Assert.Contains("remove .CompensateWith or make it compensatable", Refused<PivotWithCompensation>().Message, StringComparison.Ordinal);

    [Fact]
    public void A_step_that_sends_nothing_is_refused() =>
        Assert.Contains("step 'notify' sends nothing. Call .Send(", Refused<StepWithoutCommand>().Message, StringComparison.Ordinal);

    [Fact]
    public void A_step_without_a_success_reply_is_refused() =>
        Assert.Contains("step 'notify' has no success reply. Call .OnReply<TReply>()", Refused<StepWithoutSuccessReply>().Message, StringComparison.Ordinal);

    [Fact]
    public void Version_zero_and_invalid_names_are_refused()
    {
        Assert.Contains("versions start at 1", Refused<VersionZero>().Message, StringComparison.Ordinal);
        Assert.Contains("use letters, digits, '.', '-', '_' and ':'", Refused<BadName>().Message, StringComparison.Ordinal);
    }

    static ConvergeOptions WithStore()
    {
        var options = new ConvergeOptions();
        options.UseSqlite(Path.Combine(Path.GetTempPath(), "never-opened.db"));
        ShopSaga.Configure(options);
        return options;
    }

    [Fact]
    public void A_saga_version_registered_twice_fails_validation_with_the_fix()
    {
        var sameClass = WithStore().AddSaga<OrderSaga>().AddSaga<OrderSaga>();
        var otherClass = WithStore().AddSaga<OrderSaga>().AddSaga<OrderSagaCopy>();
        var twoVersions = WithStore().AddSaga<OrderSaga>().AddSaga<OrderSagaV2>();

        var error = Assert.Throws<OptionsValidationException>(() => ConvergeOptionsValidator.ThrowIfInvalid(sameClass));
        var other = Assert.Throws<OptionsValidationException>(() => ConvergeOptionsValidator.ThrowIfInvalid(otherClass));

        Assert.Equal(["Saga 'order' version 1 is registered twice (OrderSaga); give the new definition a higher Version."], error.Failures);
        Assert.Equal(["Saga 'order' version 1 is registered twice (OrderSagaCopy); give the new definition a higher Version."], other.Failures);
        ConvergeOptionsValidator.ThrowIfInvalid(twoVersions);
    }

    [Fact]
    public async Task A_host_with_a_saga_registered_twice_does_not_start()
    {
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() =>
            ShopSaga.StartAsync(new Participants(), sagas: o => o.AddSaga<OrderSaga>().AddSaga<OrderSaga>()));

        Assert.Contains("registered twice", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_reply_type_without_a_type_name_fails_validation_with_the_fix()
    {
        var options = new ConvergeOptions();
        options.UseSqlite(Path.Combine(Path.GetTempPath(), "never-opened.db"));
        options.Handle<Reserve, Participant>("credit").Handle<Release, Participant>("credit")
            .Handle<Charge, Participant>("payments").Handle<Refund, Participant>("payments")
            .Handle<Ship, Participant>("shipping").Handle<Notify, Participant>("notify");
        options.Messages.Register<Reserve>("test.reserve").Register<Release>("test.release").Register<Charge>("test.charge")
            .Register<Refund>("test.refund").Register<Ship>("test.ship").Register<Notify>("test.notify");
        options.AddSaga<OrderSaga>();

        var error = Assert.Throws<OptionsValidationException>(() => ConvergeOptionsValidator.ThrowIfInvalid(options));

        Assert.Contains("Reserved is handled by SagaEngine but has no type name. Call options.Messages.Register<Reserved>(\"name\", version: 1).", error.Failures);
    }
}
