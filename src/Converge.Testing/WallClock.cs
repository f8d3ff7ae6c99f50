namespace Converge.Testing;

/// <summary>
/// The clock of a test's own deadlines ("fail after 30 s"), never of the code under test: that runs on the clock its
/// options were given, which may be a fake that stands still until the test advances it, so a deadline on it would
/// never pass.
/// </summary>
static class WallClock
{
#pragma warning disable RS0030 // The test harness's composition root: the only wall clock in the testing library.
    public static TimeProvider Instance { get; } = TimeProvider.System;
#pragma warning restore RS0030
}
