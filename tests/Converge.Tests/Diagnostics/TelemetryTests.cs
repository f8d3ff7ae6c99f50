using System.Collections.Concurrent;
using System.Diagnostics;
using Converge.Diagnostics;
using Converge.Hosting;
using Converge.Jobs;
using Converge.Runtime;
using Converge.Sagas;
using Converge.Sqlite;
using Converge.Storage;
using Converge.Testing;
using Converge.Tests.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace Converge.Tests.Diagnostics;

public sealed record Traced(string Text);

public sealed record TracedEvent(string Text);

public sealed record TracedJob(string Kind);

/// <summary>Handles <see cref="Traced"/>: "permanent" fails for good, "flaky" fails its first attempt only.</summary>
public sealed class TracedHandler : IHandler<Traced>
{
    public Task HandleAsync(Traced message, MessageContext context, CancellationToken cancellationToken) => message.Text switch
    {
        "permanent" => throw new HandlerFailureException("refused for good", nonRetryable: true),
        "flaky" when context.Attempt == 1 => throw new InvalidOperationException("first attempt fails"),
        _ => Task.CompletedTask,
    };
}

public sealed class TracedEventHandler : IHandler<TracedEvent>
{
    public Task HandleAsync(TracedEvent message, MessageContext context, CancellationToken cancellationToken) =>
        message.Text == "poison" ? throw new InvalidOperationException("this group cannot take it") : Task.CompletedTask;
}

public sealed class TracedJobHandler : IJobHandler<TracedJob>
{
    public Task ExecuteAsync(TracedJob job, JobContext context, CancellationToken cancellationToken) =>
        job.Kind == "fail" ? throw new HandlerFailureException("the job fails", nonRetryable: true) : Task.CompletedTask;
}

/// <summary>
/// Spans and metrics of the <c>Converge</c> source and meter, collected with OpenTelemetry's in-memory exporter. Every
/// provider sees every host of the process, so each test tells its own telemetry apart by queue, group or message id.
/// </summary>
public sealed class TelemetryTests : IDisposable
{
    readonly ConcurrentQueue<Activity> _spans = new();
    readonly List<MetricSnapshot> _metrics = [];
    readonly TracerProvider _tracing;
    readonly MeterProvider _meters;
    readonly string _folder = Path.Combine(Path.GetTempPath(), "converge-otel-" + Guid.NewGuid().ToString("N"));

    public TelemetryTests()
    {
        Directory.CreateDirectory(_folder);
        _tracing = Sdk.CreateTracerProviderBuilder().AddSource(ConvergeDiagnostics.Name, "Converge.Tests").AddInMemoryExporter(new SpanSink(_spans)).Build()!;
        _meters = Sdk.CreateMeterProviderBuilder().AddMeter(ConvergeDiagnostics.Name).AddInMemoryExporter(_metrics).Build()!;
    }

    static readonly ActivitySource Test = new("Converge.Tests");

    static void Register(ConvergeOptions o)
    {
        o.Messages.Register<Traced>("otel.traced").Register<TracedEvent>("otel.traced-event").Register<TracedJob>("otel.traced-job");
        o.Retry.InitialDelay = TimeSpan.Zero;
        o.Retry.MaxDelay = TimeSpan.Zero;
    }

    [Fact]
    public async Task A_message_sent_by_one_host_is_handled_in_another_in_a_span_whose_parent_is_the_send()
    {
        var path = Path.Combine(_folder, "shared.db");
        await using var receiver = await ConvergeTestHost.StartAsync(o =>
        {
            Register(o);
            o.UseSqlite(path);
            o.Handle<Traced, TracedHandler>("otel-orders");
        });
        await using var sender = await ConvergeTestHost.StartAsync(o =>
        {
            Register(o);
            o.UseSqlite(path);
            o.Route<Traced>("otel-orders");
            o.RunConsumers = false;
        });

        Guid id;
        ActivityContext request;
        using (var root = Test.StartActivity("place order"))
        {
            request = root!.Context;
            id = await sender.Bus.SendAsync(new Traced("hello"));
        }

        var handled = await SpanAsync(s => s.DisplayName == "process otel-orders" && Tag(s, "messaging.message.id") == id.ToString());
        var sent = Assert.Single(_spans, s => s.DisplayName == "send otel-orders" && Tag(s, "messaging.message.id") == id.ToString());
        Assert.Equal(ActivityKind.Producer, sent.Kind);
        Assert.Equal(request.SpanId, sent.ParentSpanId);
        Assert.Equal(ActivityKind.Consumer, handled.Kind);
        Assert.Equal((sent.TraceId, sent.SpanId), (handled.TraceId, handled.ParentSpanId));
        Assert.Equal(("converge", "otel-orders", "process", "otel.traced@1"), (Tag(handled, "messaging.system"), Tag(handled, "messaging.destination.name"), Tag(handled, "messaging.operation.type"), Tag(handled, "converge.message.type")));
        Assert.Equal(ActivityStatusCode.Unset, handled.Status);
    }

    [Fact]
    public async Task A_failed_attempt_is_a_span_with_the_error()
    {
        await using var host = await ConvergeTestHost.StartAsync(o =>
        {
            Register(o);
            o.UseSqlite(Path.Combine(_folder, "failed.db"));
            o.Handle<Traced, TracedHandler>("otel-failing");
        });

        var id = await host.Bus.SendAsync(new Traced("permanent"));

        var failed = await SpanAsync(s => s.DisplayName == "process otel-failing" && Tag(s, "messaging.message.id") == id.ToString());
        Assert.Equal((ActivityStatusCode.Error, "refused for good"), (failed.Status, failed.StatusDescription));
        Assert.Equal(typeof(HandlerFailureException).FullName, Tag(failed, "error.type"));
    }

    [Fact]
    public async Task A_job_run_is_a_span_whose_parent_is_the_enqueue_and_its_duration_is_measured_by_outcome()
    {
        await using var host = await ConvergeTestHost.StartAsync(o =>
        {
            Register(o);
            o.UseSqlite(Path.Combine(_folder, "jobs.db"));
            o.Job<TracedJob, TracedJobHandler>("otel-jobs");
        });

        var ok = await host.Jobs.EnqueueAsync(new TracedJob("ok"));
        var failing = await host.Jobs.EnqueueAsync(new TracedJob("fail"));

        var ran = await SpanAsync(s => s.DisplayName == "job otel-jobs" && Tag(s, "messaging.message.id") == ok.Id.ToString());
        var enqueued = Assert.Single(_spans, s => s.DisplayName == "send otel-jobs" && Tag(s, "messaging.message.id") == ok.Id.ToString());
        Assert.Equal((enqueued.TraceId, enqueued.SpanId), (ran.TraceId, ran.ParentSpanId));
        Assert.Equal("succeeded", Tag(ran, "converge.outcome"));
        var failed = await SpanAsync(s => s.DisplayName == "job otel-jobs" && Tag(s, "messaging.message.id") == failing.Id.ToString());
        Assert.Equal(("failed", ActivityStatusCode.Error), (Tag(failed, "converge.outcome"), failed.Status));

        await Eventually.UntilAsync(
            () => HistogramCount("converge.job.duration", ("queue", "otel-jobs"), ("outcome", "succeeded")) == 1
                && HistogramCount("converge.job.duration", ("queue", "otel-jobs"), ("outcome", "failed")) == 1,
            () => "converge.job.duration to count one succeeded and one failed run of otel-jobs");
    }

    [Fact]
    public async Task A_saga_transition_is_a_span_inside_the_span_of_the_message_that_caused_it()
    {
        var desk = new HoldDesk();
        await using var host = await ConvergeTestHost.StartAsync(
            o =>
            {
                Register(o);
                o.UseSqlite(Path.Combine(_folder, "sagas.db"));
                o.Messages.Register<Check>("test.check").Register<Checked>("test.checked").Register<Hold>("test.hold").Register<Held>("test.held")
                    .Register<Unhold>("test.unhold").Register<Unheld>("test.unheld").Register<Settle>("test.settle").Register<Settled>("test.settled")
                    .Register<SettleRefused>("test.settle-refused");
                o.Handle<Check, HoldParticipant>("desk").Handle<Hold, HoldParticipant>("desk").Handle<Unhold, HoldParticipant>("desk").Handle<Settle, HoldParticipant>("desk");
                o.AddSaga<HoldSaga>();
            },
            s => s.AddSingleton(desk).AddSingleton<HoldParticipant>());

        await host.Sagas.StartAsync("hold", "tx-otel", new OrderData { Order = "o-1" });
        await host.WaitForSagaAsync("tx-otel", s => s.State == SagaState.Completed);

        var transitions = await SpansAsync(s => s.DisplayName == "saga hold" && Tag(s, "converge.saga.transaction_id") == "tx-otel", 4);
        Assert.Equal(["start", "reply", "reply", "reply"], transitions.OrderBy(s => s.StartTimeUtc).Select(s => Tag(s, "converge.saga.trigger")));
        Assert.Equal("completed", Tag(transitions.MaxBy(s => s.StartTimeUtc)!, "converge.saga.state"));
        foreach (var reply in transitions.Where(s => Tag(s, "converge.saga.trigger") == "reply"))
        {
            var parent = Assert.Single(_spans, s => s.SpanId == reply.ParentSpanId);
            Assert.Equal(("process sagas.hold", reply.TraceId), (parent.DisplayName, parent.TraceId));
        }
    }

    [Fact]
    public async Task A_consumer_group_batch_is_a_span_linked_to_the_spans_that_appended_its_events()
    {
        await using var host = await ConvergeTestHost.StartAsync(o =>
        {
            Register(o);
            o.UseSqlite(Path.Combine(_folder, "groups.db"));
            o.Subscribe<TracedEvent, TracedEventHandler>("otel-group");
        });

        ActivityContext published;
        using (var root = Test.StartActivity("publish it"))
        {
            await host.Bus.PublishAsync("otel-stream", new TracedEvent("one"));
            published = root!.Context;
        }

        var batch = await SpanAsync(s => s.DisplayName == "process otel-group" && s.Links.Any(l => l.Context.TraceId == published.TraceId));
        var append = Assert.Single(_spans, s => s.DisplayName == "publish otel-stream" && s.TraceId == published.TraceId);
        Assert.Contains(batch.Links, l => l.Context.SpanId == append.SpanId);
        Assert.NotEqual(published.TraceId, batch.TraceId);
        Assert.Equal(("otel-group", "1"), (Tag(batch, "messaging.consumer.group.name"), Tag(batch, "messaging.batch.message_count")));
    }

    [Fact]
    public async Task Handled_retried_and_dead_lettered_messages_are_counted_by_queue_and_outcome()
    {
        await using var host = await ConvergeTestHost.StartAsync(o =>
        {
            Register(o);
            o.UseSqlite(Path.Combine(_folder, "counts.db"));
            o.Handle<Traced, TracedHandler>("otel-counted");
        });

        await host.SendAndWaitAsync(new Traced("fine"));
        await host.SendAndWaitAsync(new Traced("flaky"));
        await host.SendAndWaitAsync(new Traced("permanent"));

        await Eventually.UntilAsync(
            () => Sum("converge.messages.handled", ("queue", "otel-counted"), ("outcome", "completed")) == 2
                && Sum("converge.messages.handled", ("queue", "otel-counted"), ("outcome", "retryscheduled")) == 1
                && Sum("converge.messages.handled", ("queue", "otel-counted"), ("outcome", "deadlettered")) == 1,
            () => $"converge.messages.handled of otel-counted: {Describe("converge.messages.handled")}");

        // The dead-letter gauge reports the status the host last read.
        await host.Services.GetRequiredService<StatusMonitor>().ReadAsync(CancellationToken.None);
        await Eventually.UntilAsync(() => Gauge("converge.dead_letters", ("queue", "otel-counted")) == 1, () => $"converge.dead_letters: {Describe("converge.dead_letters")}");
    }

    [Fact]
    public async Task Queue_depth_and_the_oldest_message_age_are_read_every_status_interval_not_at_each_collection()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 3, 1, 8, 0, 0, TimeSpan.Zero));
        await using var host = await ConvergeTestHost.StartAsync(o =>
        {
            Register(o);
            o.UseSqlite(Path.Combine(_folder, "depth.db"));
            o.TimeProvider = time;
            o.RunConsumers = false;
            o.Route<Traced>("otel-depth");
        });
        var monitor = host.Services.GetRequiredService<StatusMonitor>();
        await Eventually.UntilAsync(() => monitor.Last is not null, () => "the reading at start-up");
        var atStart = monitor.Last;

        await host.Bus.SendAsync(new Traced("a"));
        await host.Bus.SendAsync(new Traced("b"));
        await host.Bus.SendAsync(new Traced("later"), new SendOptions { Delay = TimeSpan.FromHours(1) });
        time.Advance(TimeSpan.FromSeconds(4));
        _meters.ForceFlush();
        Assert.Same(atStart, monitor.Last);
        Assert.Null(Gauge("converge.queue.depth", ("queue", "otel-depth"), ("state", "ready")));

        time.Advance(host.Options.StatusInterval - TimeSpan.FromSeconds(4));
        await Eventually.UntilAsync(
            () => Gauge("converge.queue.depth", ("queue", "otel-depth"), ("state", "ready")) == 2,
            () => $"converge.queue.depth: {Describe("converge.queue.depth")}");
        Assert.Equal(1, Gauge("converge.queue.depth", ("queue", "otel-depth"), ("state", "scheduled")));
        Assert.Equal(0, Gauge("converge.queue.depth", ("queue", "otel-depth"), ("state", "in_flight")));
        Assert.Equal(10.0, GaugeDouble("converge.queue.oldest_ready.age", ("queue", "otel-depth")));
        Assert.Equal(TimeSpan.FromSeconds(10), host.Options.StatusInterval);
    }

    // --- helpers ---

    async Task<Activity> SpanAsync(Func<Activity, bool> match) => (await SpansAsync(match, 1))[0];

    async Task<IReadOnlyList<Activity>> SpansAsync(Func<Activity, bool> match, int count)
    {
        await Eventually.UntilAsync(() => _spans.Count(match) >= count, () => $"{count} matching span(s) among {string.Join(", ", _spans.Select(s => s.DisplayName).Distinct())}");
        return [.. _spans.Where(match)];
    }

    static string? Tag(Activity span, string name) => span.GetTagItem(name) switch
    {
        null => null,
        string text => text,
        var value => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture),
    };

    List<MetricPoint> Points(string metric, params (string Key, string Value)[] tags)
    {
        lock (_metrics)
        {
            _metrics.Clear();
            _meters.ForceFlush();
            var points = new List<MetricPoint>();
            foreach (var snapshot in _metrics.Where(m => m.Name == metric))
            {
                foreach (var point in snapshot.MetricPoints)
                {
                    var have = new Dictionary<string, string?>();
                    foreach (var tag in point.Tags)
                    {
                        have[tag.Key] = tag.Value?.ToString();
                    }

                    if (tags.All(t => have.TryGetValue(t.Key, out var value) && value == t.Value))
                    {
                        points.Add(point);
                    }
                }
            }

            return points;
        }
    }

    long Sum(string metric, params (string, string)[] tags) => Points(metric, tags).Sum(p => p.GetSumLong());

    long HistogramCount(string metric, params (string, string)[] tags) => Points(metric, tags).Sum(p => p.GetHistogramCount());

    long? Gauge(string metric, params (string, string)[] tags) => Points(metric, tags) is { Count: > 0 } points ? points[^1].GetGaugeLastValueLong() : null;

    double? GaugeDouble(string metric, params (string, string)[] tags) => Points(metric, tags) is { Count: > 0 } points ? points[^1].GetGaugeLastValueDouble() : null;

    string Describe(string metric) => string.Join("; ", Points(metric).Select(p => string.Join(",", EnumerateTags(p)) + "=" + (metric.StartsWith("converge.messages", StringComparison.Ordinal) ? p.GetSumLong() : p.GetGaugeLastValueLong())));

    static List<string> EnumerateTags(MetricPoint point)
    {
        var list = new List<string>();
        foreach (var tag in point.Tags)
        {
            list.Add($"{tag.Key}:{tag.Value}");
        }

        return list;
    }

    public void Dispose()
    {
        _tracing.Dispose();
        _meters.Dispose();
        try
        {
            Directory.Delete(_folder, recursive: true);
        }
        catch (IOException)
        {
            // A file still open on a slow machine; the temp folder is cleaned by the OS.
        }
    }

    /// <summary>The in-memory exporter's collection, thread-safe: spans end on many threads.</summary>
    sealed class SpanSink(ConcurrentQueue<Activity> spans) : ICollection<Activity>
    {
        public int Count => spans.Count;
        public bool IsReadOnly => false;
        public void Add(Activity item) => spans.Enqueue(item);
        public void Clear() => spans.Clear();
        public bool Contains(Activity item) => spans.Contains(item);
        public void CopyTo(Activity[] array, int arrayIndex) => spans.CopyTo(array, arrayIndex);
        public bool Remove(Activity item) => throw new NotSupportedException();
        public IEnumerator<Activity> GetEnumerator() => spans.GetEnumerator();
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }
}
