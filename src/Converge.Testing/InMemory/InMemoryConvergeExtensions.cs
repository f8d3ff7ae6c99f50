using Converge.Runtime;

namespace Converge.Testing.InMemory;

/// <summary>Chooses the in-memory store.</summary>
public static class InMemoryConvergeExtensions
{
    /// <summary>
    /// Keeps everything in a new <see cref="InMemoryMessageStore"/> of this host, on the options' clock
    /// (<see cref="ConvergeOptions.TimeProvider"/>): for unit tests of handlers, sagas and jobs. Nothing survives the
    /// host; handlers that write with SQL, or send through their own <c>DbTransaction</c>, need a database store.
    /// </summary>
    public static ConvergeOptions UseInMemory(this ConvergeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.StoreFactory = context => new InMemoryMessageStore(context.TimeProvider);
        return options;
    }

    /// <summary>
    /// Uses <paramref name="store"/>, which several hosts may share (as processes share a database): what one host
    /// commits the others see, and a host started after another stopped finds what it left. The store keeps the
    /// clock it was created with.
    /// </summary>
    public static ConvergeOptions UseInMemory(this ConvergeOptions options, InMemoryMessageStore store)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(store);
        options.StoreFactory = _ => store;
        return options;
    }
}
