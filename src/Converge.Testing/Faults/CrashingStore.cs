using System.Collections.Concurrent;
using System.Reflection;
using Castle.DynamicProxy;
using Converge.Storage;

namespace Converge.Testing.Faults;

/// <summary>
/// Where a host "dies": at its <see cref="At"/>th store operation (counted from 1 over the store and every transaction
/// it begins). From then on nothing more reaches the store from that host: the operation and every one after it throw
/// <see cref="SimulatedCrashException"/>, and the transactions it holds are rolled back, as a database does when the
/// connection of a killed process drops. What the host committed before stays; what it had in memory is gone with it.
/// </summary>
/// <param name="At">The operation that never happens; 0 or less: none (the plan only counts).</param>
public sealed class CrashPlan(int At)
{
    int _operations;
    string? _crashedAt;

    /// <summary>The operation that never happens.</summary>
    public int At { get; } = At;

    /// <summary>Store operations this host started, the crashed one included.</summary>
    public int Operations => Volatile.Read(ref _operations);

    /// <summary>Whether the host has died.</summary>
    public bool Crashed => Volatile.Read(ref _crashedAt) is not null;

    /// <summary>The operation the host died at (its contract and member, as <c>IQueueTransaction.CompleteAsync</c>), once it did.</summary>
    public string? CrashedAt => Volatile.Read(ref _crashedAt);

    /// <summary>Counts one operation of <paramref name="name"/>; throws when the host dies at it or died before.</summary>
    internal void Enter(string name)
    {
        if (Crashed)
        {
            throw new SimulatedCrashException($"The host died at operation {At} ({CrashedAt}); {name} never reached the store.");
        }

        if (Interlocked.Increment(ref _operations) == At)
        {
            Interlocked.CompareExchange(ref _crashedAt, name, null);
            throw new SimulatedCrashException($"The host died at operation {At}: {name}.");
        }
    }

    /// <summary>Throws when the host has died.</summary>
    internal void EnsureAlive(string name)
    {
        if (Crashed)
        {
            throw new SimulatedCrashException($"The host died at operation {At} ({CrashedAt}); {name} never reached the store.");
        }
    }
}

/// <summary>Thrown in a host that <see cref="CrashPlan"/> killed, for every store operation from the crash on.</summary>
public sealed class SimulatedCrashException(string message) : Exception(message);

/// <summary>
/// Puts a <see cref="CrashPlan"/> in front of a store: a proxy that offers every contract the store offers (the core,
/// sagas, jobs, queries, the database) and counts each asynchronous member of the store and of the transactions it
/// begins as one operation. Properties and synchronous members (a commit callback, the ADO.NET transaction) pass
/// through uncounted; the statements a handler runs on that ADO.NET transaction share the fate of its commit.
/// </summary>
public static class CrashingStore
{
    static readonly ProxyGenerator Generator = new();

    /// <summary>
    /// <paramref name="store"/> behind <paramref name="plan"/>. Disposing the proxy disposes <paramref name="store"/>
    /// only when <paramref name="ownsStore"/>; a store that stands for a database other hosts share (the in-memory one)
    /// outlives a host that dies.
    /// </summary>
    public static IMessageStore Wrap(IMessageStore store, CrashPlan plan, bool ownsStore)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(plan);
        return (IMessageStore)Proxy(typeof(IMessageStore), store, new Interceptor(plan, ownsStore));
    }

    /// <summary>The store behind a proxy of <see cref="Wrap"/>, or the object itself.</summary>
    public static object Unwrap(object maybeProxy) =>
        maybeProxy is IProxyTargetAccessor accessor ? accessor.DynProxyGetTarget() ?? maybeProxy : maybeProxy;

    /// <summary>An asynchronous member: one that reaches the store.</summary>
    internal static bool IsOperation(MethodInfo method)
    {
        var type = method.ReturnType;
        return type == typeof(Task) || type == typeof(ValueTask)
            || (type.IsGenericType && (type.GetGenericTypeDefinition() == typeof(Task<>) || type.GetGenericTypeDefinition() == typeof(ValueTask<>)));
    }

    internal static object Proxy(Type main, object target, IInterceptor interceptor)
    {
        var others = target.GetType().GetInterfaces()
            .Where(i => i != main && i.IsPublic && !i.IsGenericTypeDefinition && i != typeof(IDisposable))
            .ToArray();
        return Generator.CreateInterfaceProxyWithTargetInterface(main, others, target, interceptor);
    }

    sealed class Interceptor(CrashPlan plan, bool ownsStore) : IInterceptor
    {
        static readonly ConcurrentDictionary<MethodInfo, bool> Counted = new();

        public void Intercept(IInvocation invocation)
        {
            var method = invocation.Method;
            var name = method.DeclaringType?.Name + "." + method.Name;
            if (method.Name == nameof(IAsyncDisposable.DisposeAsync))
            {
                // A dead host's transactions are rolled back; a shared store outlives the host.
                if (invocation.Proxy is IStoreTransaction || ownsStore)
                {
                    invocation.Proceed();
                }
                else
                {
                    invocation.ReturnValue = ValueTask.CompletedTask;
                }

                return;
            }

            if (Counted.GetOrAdd(method, IsOperation))
            {
                plan.Enter(name);
            }
            else if (!method.IsSpecialName)
            {
                plan.EnsureAlive(name);
            }

            invocation.Proceed();
            if (method.Name == nameof(IStore.BeginAsync) && invocation.ReturnValue is ValueTask<IStoreTransaction>)
            {
#pragma warning disable CA2012 // Handed to the proxy's caller, who awaits it once, as it would the store's own.
                invocation.ReturnValue = WrapAsync((ValueTask<IStoreTransaction>)invocation.ReturnValue);
#pragma warning restore CA2012
            }
        }

        async ValueTask<IStoreTransaction> WrapAsync(ValueTask<IStoreTransaction> begun)
        {
            var transaction = await begun;
            return (IStoreTransaction)Proxy(typeof(IStoreTransaction), transaction, this);
        }
    }
}
