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
        { new FakeDbException(), true },
    };

    [Theory]
    [MemberData(nameof(Classifications))]
    public void IsTransientByDefault_retries_what_can_heal_and_stops_what_cannot(Exception exception, bool transient) =>
        Assert.Equal(transient, RetryOptions.IsTransientByDefault(exception));

    sealed class FakeDbException : DbException;
}
