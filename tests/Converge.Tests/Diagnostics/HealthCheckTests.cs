using Converge.Contracts;
using Converge.Hosting;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Testing;
using Converge.Transports;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Converge.Tests.Diagnostics;

public sealed class HealthCheckTests : IDisposable
{
    readonly string _folder = Path.Combine(Path.GetTempPath(), "converge-health-" + Guid.NewGuid().ToString("N"));
    readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 3, 1, 8, 0, 0, TimeSpan.Zero));

    public HealthCheckTests() => Directory.CreateDirectory(_folder);

    Task<ConvergeTestHost> StartAsync(Action<ConvergeOptions>? configure = null, Action<ConvergeHealthCheckOptions>? thresholds = null) =>
        ConvergeTestHost.StartAsync(
            o =>
            {
                o.Messages.Register<Traced>("otel.traced").Register<TracedEvent>("otel.traced-event");
                o.UseSqlite(Path.Combine(_folder, "health.db"));
                o.TimeProvider = _time;
                configure?.Invoke(o);
            },
            s => s.AddHealthChecks().AddConvergeHealthChecks(thresholds));

    static async Task<HealthReportEntry> CheckAsync(ConvergeTestHost host, string name)
    {
        var report = await host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync(r => r.Name == name);
        return report.Entries[name];
    }

    [Fact]
    public async Task Every_check_is_healthy_on_a_reachable_store_with_no_broker_no_lag_and_no_stuck_saga()
    {
        await using var host = await StartAsync();

        var report = await host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();

        Assert.Equal(["converge-broker", "converge-consumer-groups", "converge-sagas", "converge-store"], report.Entries.Keys.Order());
        Assert.All(report.Entries.Values, e => Assert.Equal(HealthStatus.Healthy, e.Status));
        Assert.All(report.Entries.Values, e => Assert.Equal(["converge"], e.Tags));
        Assert.Equal("No broker: the store carries the queues.", report.Entries["converge-broker"].Description);
    }

    [Fact]
    public async Task The_store_check_is_unhealthy_when_the_store_cannot_be_read()
    {
        await using var host = await StartAsync(o => o.RunConsumers = false);
        Assert.Equal(HealthStatus.Healthy, (await CheckAsync(host, "converge-store")).Status);

        // The database's folder goes away (a volume unmounted): once the store's open connections are closed, no new
        // one can open the file.
        await ((IAsyncDisposable)host.Store).DisposeAsync();
        Directory.Delete(_folder, recursive: true);

        var entry = await CheckAsync(host, "converge-store");
        Assert.Equal(HealthStatus.Unhealthy, entry.Status);
        Assert.StartsWith("The sqlite store is unreachable", entry.Description, StringComparison.Ordinal);
        Assert.NotNull(entry.Exception);
    }

    [Fact]
    public async Task The_consumer_group_check_is_degraded_once_a_group_is_more_events_behind_than_allowed()
    {
        await using var host = await StartAsync(o => o.Subscribe<TracedEvent, TracedEventHandler>("health-group"), t => t.MaxConsumerGroupLag = 2);
        await host.Bus.PublishAsync("health-stream", new TracedEvent("fine"));
        await Eventually.UntilAsync(async () => (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).ConsumerGroups.Any(g => g.Group == "health-group" && g.Position == 1), "the group to take the first event");
        _time.Advance(host.Options.StatusInterval);
        Assert.Equal(HealthStatus.Healthy, (await CheckAsync(host, "converge-consumer-groups")).Status);

        // The group stalls at the poison event (its retry waits on the manual clock), and the log grows past it.
        await host.Bus.PublishAsync("health-stream", new TracedEvent("poison"));
        await host.Bus.PublishAsync("health-stream", new TracedEvent("after"));
        await host.Bus.PublishAsync("health-stream", new TracedEvent("after"));
        await Eventually.UntilAsync(async () => (await host.Store.Queries().GetStatusAsync(CancellationToken.None)).ConsumerGroups.Any(g => g.Group == "health-group" && g.FailedAttempts > 0), "the group to fail at the poison event");

        // The last reading is younger than the status interval: it is reused.
        Assert.Equal(HealthStatus.Healthy, (await CheckAsync(host, "converge-consumer-groups")).Status);
        _time.Advance(host.Options.StatusInterval + TimeSpan.FromSeconds(1));
        var entry = await CheckAsync(host, "converge-consumer-groups");
        Assert.Equal(HealthStatus.Degraded, entry.Status);
        Assert.Contains("health-group is 3 events behind", entry.Description, StringComparison.Ordinal);
        Assert.Equal(3L, entry.Data["health-group"]);
    }

    [Fact]
    public async Task The_saga_check_is_degraded_then_unhealthy_as_stuck_instances_reach_the_thresholds()
    {
        await using var host = await StartAsync(o => o.RunConsumers = false, t => t.StuckSagasUnhealthy = 2);
        await InsertSagaAsync(host, "tx-running", SagaState.Running);
        Assert.Equal(HealthStatus.Healthy, (await CheckAsync(host, "converge-sagas")).Status);

        await InsertSagaAsync(host, "tx-stuck-1", SagaState.Stuck);
        _time.Advance(host.Options.StatusInterval + TimeSpan.FromSeconds(1));
        var degraded = await CheckAsync(host, "converge-sagas");
        Assert.Equal(HealthStatus.Degraded, degraded.Status);
        Assert.StartsWith("1 saga instance(s) stuck (hold: 1)", degraded.Description, StringComparison.Ordinal);

        await InsertSagaAsync(host, "tx-stuck-2", SagaState.Stuck);
        _time.Advance(host.Options.StatusInterval + TimeSpan.FromSeconds(1));
        Assert.Equal(HealthStatus.Unhealthy, (await CheckAsync(host, "converge-sagas")).Status);
    }

    [Fact]
    public async Task The_broker_check_follows_the_transport_connection()
    {
        var broker = new PluggedBroker();
        await using var host = await StartAsync(o => o.TransportFactory = _ => broker);
        Assert.Equal(HealthStatus.Healthy, (await CheckAsync(host, "converge-broker")).Status);

        broker.IsConnected = false;

        var entry = await CheckAsync(host, "converge-broker");
        Assert.Equal(HealthStatus.Unhealthy, entry.Status);
        Assert.StartsWith("Not connected to amqp://broker.test/", entry.Description, StringComparison.Ordinal);
    }

    [Fact]
    public void Invalid_thresholds_are_refused_with_the_fix()
    {
        var services = new ServiceCollection();
        var error = Assert.Throws<OptionsValidationException>(() => services.AddHealthChecks().AddConvergeHealthChecks(t => (t.StuckSagasDegraded, t.StuckSagasUnhealthy) = (3, 2)));
        Assert.Contains("StuckSagasUnhealthy is 2, below StuckSagasDegraded (3)", error.Message, StringComparison.Ordinal);
    }

    static async Task InsertSagaAsync(ConvergeTestHost host, string transactionId, SagaState state)
    {
        var now = host.Options.TimeProvider.GetUtcNow();
        await using var transaction = await host.Store.BeginAsync(CancellationToken.None);
        await transaction.Sagas().InsertSagaAsync(
            new SagaInstance
            {
                TransactionId = transactionId,
                Definition = "hold",
                Version = 1,
                State = state,
                StepIndex = 0,
                Steps = ["check"],
                Data = "{}"u8.ToArray(),
                StartedAt = now,
                UpdatedAt = now,
                Queue = "sagas.hold",
                StuckReason = state == SagaState.Stuck ? "planted" : null,
            },
            CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_folder, recursive: true);
        }
        catch (IOException)
        {
            // Still open on a slow machine; the temp folder is cleaned by the OS.
        }
    }

    /// <summary>A transport that carries no queue and reports a connection the test plugs and unplugs.</summary>
    sealed class PluggedBroker : IMessageTransport, ITransportConnection
    {
        IMessageStore? _store;

        public bool IsConnected { get; set; } = true;

        public string Broker => "amqp://broker.test/";

        public string Name => "plugged";

        public CommitSignals Signals => _store?.Signals ?? new CommitSignals();

        public ValueTask StartAsync(IMessageStore store, CancellationToken cancellationToken)
        {
            _store = store;
            return ValueTask.CompletedTask;
        }

        public bool Carries(string queue) => false;

        public void KeepInStore(string queue)
        {
        }

        public ValueTask<IReadOnlyList<QueuedMessage>> ReceiveAsync(string queue, int max, TimeSpan lease, CancellationToken cancellationToken) => throw new NotSupportedException();

        public bool Holds(QueuedMessage delivery) => false;

        public ValueTask<int> RenewAsync(IReadOnlyList<QueuedMessage> deliveries, TimeSpan lease, CancellationToken cancellationToken) => ValueTask.FromResult(0);

        public ValueTask ReleaseAsync(IReadOnlyList<QueuedMessage> deliveries, bool countAttempt, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public void Acknowledge(QueuedMessage delivery)
        {
        }

        public void Sent(string queue)
        {
        }

        public ValueTask<T> ReadSettledAsync<T>(Func<ValueTask<T>> read, CancellationToken cancellationToken) => read();

        public ValueTask<StoreStatus> AddStatusAsync(StoreStatus stored, CancellationToken cancellationToken) => ValueTask.FromResult(stored);

        public ValueTask<IReadOnlyList<LogEvent>> ReadLogAsync(long afterPosition, int max, CancellationToken cancellationToken) => _store!.ReadLogAsync(afterPosition, max, cancellationToken);

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
