using System.Data.Common;
using System.Text.Json;
using Converge.Runtime;

namespace Converge.Tests;

public sealed class RetryOptionsTests
{
    [Theory]
    [InlineData(2, 0.0, 100)]
    [InlineData(2, 1.0, 200)]
    [InlineData(3, 1.0, 400)]
    [InlineData(5, 0.5, 1200)]
    public void DelayBefore_grows_exponentially_with_equal_jitter(int nextAttempt, double random, double expectedMs)
    {
        var retry = new RetryOptions { InitialDelay = TimeSpan.FromMilliseconds(200) };

        Assert.Equal(expectedMs, retry.DelayBefore(nextAttempt, random).TotalMilliseconds, precision: 6);
    }

    [Fact]
    public void DelayBefore_never_exceeds_MaxDelay_even_for_huge_attempt_numbers()
    {
        var retry = new RetryOptions { InitialDelay = TimeSpan.FromSeconds(1), MaxDelay = TimeSpan.FromMinutes(5) };

        Assert.Equal(TimeSpan.FromMinutes(5), retry.DelayBefore(10_000, 1.0));
    }

    public static TheoryData<Exception, bool> Classifications => new()
    {
        { new TimeoutException(), true },
        { new HandlerFailureException("x", nonRetryable: true), false },
        { new HandlerFailureException("x"), true },
        { new ArgumentException("bad"), false },
        { new FormatException(), false },
        { new JsonException(), false },
        { new NotSupportedException(), false },
        { new InvalidOperationException(), true },
        { new FakeDbException(transient: false), false },
        { new FakeDbException(transient: true), true },
        { new InvalidOperationException("an ORM's wrapper", new FakeDbException(transient: false)), false },
    };

    [Theory]
    [MemberData(nameof(Classifications))]
    public void IsTransientByDefault_retries_what_can_heal_and_stops_what_cannot(Exception exception, bool transient) =>
        Assert.Equal(transient, RetryOptions.IsTransientByDefault(exception));

    [Fact]
    public void The_stores_judgement_of_database_errors_decides_before_the_providers_IsTransient()
    {
        var retry = new RetryOptions { DatabaseErrors = e => e.Message == "busy" };

        Assert.True(retry.IsTransient(new FakeDbException(transient: false, "busy")));
        Assert.False(retry.IsTransient(new FakeDbException(transient: true, "unique")));
        Assert.False(retry.IsTransient(new ArgumentException("bad")));
    }

    sealed class FakeDbException(bool transient, string message = "fake") : DbException(message)
    {
        public override bool IsTransient => transient;
    }
}
