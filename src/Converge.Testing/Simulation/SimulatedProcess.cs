using System.Collections.Concurrent;
using System.Reflection;
using Castle.DynamicProxy;
using Converge.Storage;
using Converge.Testing.Faults;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Converge.Testing.Simulation;

/// <summary>
/// One process of a simulation: a Converge host on its own <see cref="ProcessScheduler"/>, reaching the shared store
/// through a proxy that counts its operations, traces them, gives it the faults the seed draws (a lost commit
/// acknowledgement, a failed call) and kills it at <see cref="CrashAt"/>. When it dies, its queued work is dropped,
/// the store calls it was waiting in are cancelled and its open transactions are rolled back, as the database does when
/// a killed process's connections drop.
/// </summary>
public sealed class SimulatedProcess : IDisposable
{
    readonly SimulationWorld _world;
    readonly CancellationTokenSource _death = new();
    readonly List<IStoreTransaction> _open = [];
    readonly HashSet<object> _broken = [];
    readonly double _faultChance;

    internal SimulatedProcess(SimulationWorld world, string name, int crashAt, double faultChance)
    {
        _world = world;
        Name = name;
        CrashAt = crashAt;
        _faultChance = faultChance;
        Scheduler = world.NewScheduler(name);
    }

    /// <summary>The process's name: <c>p1</c>, <c>p2</c>, ... in the order they started.</summary>
    public string Name { get; }

    /// <summary>The store operation the process dies at (counted from 1); 0: it does not die.</summary>
    public int CrashAt { get; }

    /// <summary>Where the process's work runs.</summary>
    public ProcessScheduler Scheduler { get; }

    /// <summary>Store operations the process started.</summary>
    public int Operations { get; private set; }

    /// <summary>Faults the process met: lost acknowledgements and failed calls.</summary>
    public int Faults { get; private set; }

    /// <summary>The operation it died at (as <c>p1 #137 IQueueTransaction.CompleteAsync</c>), once it did.</summary>
    public string? DiedAt { get; private set; }

    /// <summary>When it died.</summary>
    public DateTimeOffset? DiedWhen { get; private set; }

    /// <summary>Cancelled when the process dies.</summary>
    public CancellationToken Death => _death.Token;

    /// <summary>The process's services, once started.</summary>
    public IServiceProvider? Services { get; internal set; }

    /// <summary><paramref name="store"/> as this process reaches it.</summary>
    public IMessageStore Reach(IMessageStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        return (IMessageStore)CrashingStore.Proxy(typeof(IMessageStore), store, new Interceptor(this));
    }

    /// <summary>Kills the process now: see the class summary.</summary>
    public void Kill(string at)
    {
        if (DiedAt is not null)
        {
            return;
        }

        DiedAt = at;
        DiedWhen = _world.Clock.GetUtcNow();
        _world.Kill(Scheduler);
        _death.Cancel();
        foreach (var transaction in _open.ToList())
        {
            // The in-memory store rolls back at once; nothing here waits.
            if (CrashingStore.Unwrap(transaction) is IAsyncDisposable target)
            {
                target.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }

        _open.Clear();
        ReleaseStatics();
    }

    /// <summary>
    /// Lets go of what the process registered process-wide (the status monitor the gauges read), as its death would
    /// in a real process: otherwise every simulated process stays reachable, and a long run of seeds runs out of memory.
    /// </summary>
    internal void ReleaseStatics()
    {
        if (Services is null)
        {
            return;
        }

        foreach (var hosted in Services.GetServices<IHostedService>())
        {
            if (hosted is IDisposable disposable and not IAsyncDisposable)
            {
                disposable.Dispose();
            }
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        ReleaseStatics();
        _death.Dispose();
    }

    sealed class Interceptor(SimulatedProcess process) : IInterceptor
    {
        static readonly ConcurrentDictionary<MethodInfo, bool> Operation = new();

        public void Intercept(IInvocation invocation)
        {
            var method = invocation.Method;
            if (method.Name == nameof(IAsyncDisposable.DisposeAsync))
            {
                // The shared store outlives the process; a transaction's dispose rolls it back, once.
                if (invocation.Proxy is IStoreTransaction transaction)
                {
                    process._open.Remove(transaction);
                    process._broken.Remove(transaction);
                    invocation.Proceed();
                }
                else
                {
                    invocation.ReturnValue = ValueTask.CompletedTask;
                }

                return;
            }

            if (!Operation.GetOrAdd(method, CrashingStore.IsOperation))
            {
                if (!method.IsSpecialName && process.DiedAt is { } died)
                {
                    throw new SimulatedCrashException($"{process.Name} died at {died}; {method.Name} never reached the store.");
                }

                invocation.Proceed();
                return;
            }

            var name = method.DeclaringType?.Name + "." + method.Name;
            var world = process._world;
            world.EnsureOnThread(name);
            if (process.DiedAt is { } dead)
            {
                throw new SimulatedCrashException($"{process.Name} died at {dead}; {name} never reached the store.");
            }

            var number = ++process.Operations;
            world.Trace($"{process.Name} #{number} {name}");
            if (world.Log is { } log)
            {
                log("    " + string.Join(", ", invocation.Arguments.Select(Describe)));
            }
            if (number == process.CrashAt)
            {
                process.Kill($"{process.Name} #{number} {name}");
                throw new SimulatedCrashException($"{process.Name} died at operation {number}: {name}.");
            }

            if (process._broken.Contains(invocation.Proxy))
            {
                throw new SimulatedStoreFaultException($"{name} failed: the transaction's connection was reset earlier.");
            }

            BindToDeath(invocation);
            var fault = process._faultChance > 0 && world.Random.NextDouble() < process._faultChance;
            if (fault && method.Name != nameof(IStoreTransaction.CommitAsync))
            {
                // The connection is gone, and with it the transaction: every later call on it fails, as on a database.
                process.Faults++;
                world.Log?.Invoke($"    {process.Name} #{number} failed: the connection was reset");
                if (invocation.Proxy is IStoreTransaction)
                {
                    process._broken.Add(invocation.Proxy);
                }

                throw new SimulatedStoreFaultException($"{name} failed: the connection was reset.");
            }

            invocation.Proceed();
            if (fault)
            {
                // The commit happened; its acknowledgement never reached the process.
                process.Faults++;
                world.Log?.Invoke($"    {process.Name} #{number} committed; its acknowledgement is lost");
#pragma warning disable CA2012 // Awaited once, by the proxy's caller.
                invocation.ReturnValue = LoseAcknowledgementAsync((ValueTask)invocation.ReturnValue!, name);
#pragma warning restore CA2012
            }
            else if (method.Name == nameof(IStore.BeginAsync) && invocation.ReturnValue is ValueTask<IStoreTransaction>)
            {
#pragma warning disable CA2012 // Handed to the proxy's caller, who awaits it once.
                invocation.ReturnValue = TrackAsync((ValueTask<IStoreTransaction>)invocation.ReturnValue);
#pragma warning restore CA2012
            }
        }

        /// <summary>Makes the call's token also cancel when the process dies, so a dead process never takes a turn it queued for.</summary>
        void BindToDeath(IInvocation invocation)
        {
            var parameters = invocation.Method.GetParameters();
            for (var i = 0; i < parameters.Length; i++)
            {
                if (parameters[i].ParameterType == typeof(CancellationToken))
                {
                    var token = (CancellationToken)invocation.Arguments[i]!;
                    invocation.SetArgumentValue(i, token.CanBeCanceled ? CancellationTokenSource.CreateLinkedTokenSource(token, process.Death).Token : process.Death);
                }
            }
        }

        static async ValueTask LoseAcknowledgementAsync(ValueTask commit, string name)
        {
            await commit;
            throw new SimulatedStoreFaultException($"{name} committed, but its acknowledgement was lost.");
        }

        async ValueTask<IStoreTransaction> TrackAsync(ValueTask<IStoreTransaction> begun)
        {
            var transaction = (IStoreTransaction)CrashingStore.Proxy(typeof(IStoreTransaction), await begun, this);
            if (process.DiedAt is not null)
            {
                await transaction.DisposeAsync();
                throw new SimulatedCrashException($"{process.Name} died while it began a transaction.");
            }

            process._open.Add(transaction);
            return transaction;
        }

        static string Describe(object? argument) => argument switch
        {
            null => "null",
            string text => text,
            System.Collections.IEnumerable items => "[" + string.Join(" ", items.Cast<object?>().Take(5).Select(Describe)) + "]",
            QueuedMessage message => $"{message.Envelope.MessageType} #{message.Id} attempt {message.Attempt}",
            CancellationToken => "",
            _ => argument.ToString() ?? "",
        };
    }
}

/// <summary>A store call that failed in a simulation, as a dropped connection fails one; the work retries it.</summary>
public sealed class SimulatedStoreFaultException(string message) : Exception(message);
