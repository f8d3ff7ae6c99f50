using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Threading.Channels;
using Converge.Client;
using Converge.Consistency;
using Converge.Projections;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Converge.AspNetCore.Tests;

/// <summary>
/// Read-your-writes over HTTP on a SQLite store served by Kestrel on loopback: a write answers its token in the
/// <c>Converge-Consistency</c> header, a client's <see cref="ConsistencySession"/> sends it back, and a read endpoint
/// with <c>RequireConsistency</c> waits for its projection, answers 503 while it stays behind, and serves the written
/// row once it has caught up.
/// </summary>
public sealed class ReadYourWritesTests : IDisposable
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    readonly string _folder = Path.Combine(Path.GetTempPath(), "converge-ryw-http-" + Guid.NewGuid().ToString("N"));

    public ReadYourWritesTests() => Directory.CreateDirectory(_folder);

    string DatabasePath => Path.Combine(_folder, "orders.db");

    [Fact]
    public async Task A_read_that_demands_a_write_a_paused_projection_has_not_applied_is_503_and_once_resumed_200_with_the_row()
    {
        // Built and live first; then paused while no runner runs, so the next application's runner never applies a batch.
        await using (var first = await OrdersApp.StartAsync(DatabasePath))
        {
            var live = await first.Consistency.WaitForProjectionAsync(OrdersApp.Projection, ConsistencyToken.None, Patience);
            Assert.True(live.Reached, live.Reason);
        }

        var waits = Channel.CreateUnbounded<ConsistencyToken>();
        await using var app = await OrdersApp.StartAsync(DatabasePath, waits, beforeStart: store => SetPausedAsync(store, true));
        var session = new ConsistencySession(new SocketsHttpHandler());
        using var http = new HttpClient(session) { BaseAddress = app.Address, Timeout = Patience * 2 };

        using var written = await http.PostAsync("orders/a", null);
        Assert.Equal(HttpStatusCode.OK, written.StatusCode);
        var token = ConsistencyToken.Parse(Assert.Single(written.Headers.GetValues(ConvergeConsistency.HeaderName)));
        Assert.Equal(token.ToString(), session.Token);
        Assert.True(token.Position > 0);

        using var behind = await http.GetAsync("quick/orders/a");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, behind.StatusCode);
        Assert.Equal("1", Assert.Single(behind.Headers.GetValues("Retry-After")));
        Assert.Equal("application/problem+json", behind.Content.Headers.ContentType?.MediaType);
        using (var problem = JsonDocument.Parse(await behind.Content.ReadAsStringAsync()))
        {
            var body = problem.RootElement;
            Assert.Equal(503, body.GetProperty("status").GetInt32());
            Assert.Equal("orders", body.GetProperty("projection").GetString());
            Assert.Equal(token.ToString(), body.GetProperty("required").GetString());
            Assert.True(body.GetProperty("position").GetInt64() < token.Position);
            Assert.Contains("projection 'orders' (projection:orders@1) is at position", body.GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        Assert.Equal(token, await waits.Reader.ReadAsync().AsTask().WaitAsync(Patience));
        Assert.Null(app.ReadPosition("a"));

        // The patient endpoint: the request is known to be waiting before the projection is resumed.
        var read = http.GetAsync("orders/a");
        Assert.Equal(token, await waits.Reader.ReadAsync().AsTask().WaitAsync(Patience));
        Assert.False(read.IsCompleted);
        await SetPausedAsync(app.Store, false);

        using var served = await read.WaitAsync(Patience);
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
        Assert.Equal($"a@{token.Position}", await served.Content.ReadAsStringAsync());
        Assert.Equal(token.ToString(), Assert.Single(served.Headers.GetValues(ConvergeConsistency.HeaderName)));
    }

    [Fact]
    public async Task Each_write_a_session_makes_is_read_back_at_once_through_the_projection()
    {
        await using var app = await OrdersApp.StartAsync(DatabasePath);
        var session = new ConsistencySession(new SocketsHttpHandler());
        using var http = new HttpClient(session) { BaseAddress = app.Address, Timeout = Patience };

        for (var i = 0; i < 20; i++)
        {
            var id = "o" + i.ToString(CultureInfo.InvariantCulture);
            using var written = await http.PostAsync("orders/" + id, null);
            var position = ConsistencyToken.Parse(session.Token!).Position;
            using var read = await http.GetAsync("orders/" + id);
            Assert.Equal(HttpStatusCode.OK, read.StatusCode);
            Assert.Equal($"{id}@{position}", await read.Content.ReadAsStringAsync());
        }
    }

    [Theory]
    [InlineData("garbage", "garbage")]
    [InlineData("cv1.5, cv1.x", "cv1.x")]
    [InlineData("cv1.-3", "cv1.-3")]
    public async Task A_malformed_token_is_400_with_the_form_expected(string header, string named)
    {
        await using var app = await OrdersApp.StartAsync(DatabasePath);
        using var http = new HttpClient { BaseAddress = app.Address, Timeout = Patience };
        using var request = new HttpRequestMessage(HttpMethod.Get, "orders/a");
        request.Headers.TryAddWithoutValidation(ConvergeConsistency.HeaderName, header);

        using var response = await http.SendAsync(request);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var detail = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("detail").GetString();
        Assert.Contains($"'{named}', which is not a consistency token", detail, StringComparison.Ordinal);
        Assert.Contains("'cv1.42'", detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_log_routes_carry_the_head_at_the_start_of_the_response()
    {
        await using var app = await OrdersApp.StartAsync(DatabasePath);
        using var http = new HttpClient { BaseAddress = app.Address, Timeout = Patience };
        (await http.PostAsync("orders/a", null)).Dispose();
        using var second = await http.PostAsync("orders/b", null);
        var head = Assert.Single(second.Headers.GetValues(ConvergeConsistency.HeaderName));

        using var log = await http.GetAsync("converge/log?follow=false");

        Assert.Equal(HttpStatusCode.OK, log.StatusCode);
        Assert.Equal(head, Assert.Single(log.Headers.GetValues(ConvergeConsistency.HeaderName)));
        Assert.Equal(new ConsistencyToken(await app.Store.GetLogHeadAsync(CancellationToken.None)).ToString(), head);
    }

    [Fact]
    public void RequireConsistency_asks_for_one_projection_or_one_group_and_a_timeout_of_zero_or_more()
    {
        var builder = WebApplication.CreateSlimBuilder();
        using var app = builder.Build();
        var endpoint = app.MapGet("/x", () => "x");

        Assert.Contains("one of the two", Assert.Throws<ArgumentException>(() => endpoint.RequireConsistency()).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => endpoint.RequireConsistency(projection: "orders", group: "billing"));
        Assert.Throws<ArgumentException>(() => endpoint.RequireConsistency(group: "billing", timeout: TimeSpan.FromSeconds(-1)));
        Assert.Same(endpoint, endpoint.RequireConsistency(group: "billing"));
    }

    [Fact]
    public async Task A_session_sends_the_latest_token_it_saw_never_an_earlier_one_and_ignores_what_is_not_a_token()
    {
        var answers = new Queue<string?>(["cv1.5", "cv1.3", "junk", null, null]);
        var sent = new List<string?>();
        var session = new ConsistencySession(new StubHandler(request =>
        {
            sent.Add(request.Headers.TryGetValues(ConsistencySession.HeaderName, out var values) ? string.Join(",", values) : null);
            var response = new HttpResponseMessage(HttpStatusCode.OK);
            if (answers.Dequeue() is { } token)
            {
                response.Headers.TryAddWithoutValidation(ConsistencySession.HeaderName, token);
            }

            return response;
        }));
        using var http = new HttpClient(session) { BaseAddress = new Uri("http://converge.invalid/") };

        for (var i = 0; i < 4; i++)
        {
            (await http.GetAsync("x")).Dispose();
        }

        using var own = new HttpRequestMessage(HttpMethod.Get, "x");
        own.Headers.TryAddWithoutValidation(ConsistencySession.HeaderName, "cv1.1");
        (await http.SendAsync(own)).Dispose();

        Assert.Equal([null, "cv1.5", "cv1.5", "cv1.5", "cv1.1"], sent);
        Assert.Equal(new ConsistencyToken(5).ToString(), session.Token);
        Assert.False(session.Observe("cv2.9"));
        Assert.True(session.Observe("cv1.4"));
        Assert.Equal("cv1.5", session.Token);

        var concurrent = new ConsistencySession();
        Parallel.For(1, 10_001, i => concurrent.Observe(new ConsistencyToken(i).ToString()));
        Assert.Equal("cv1.10000", concurrent.Token);
    }

    static async ValueTask SetPausedAsync(IMessageStore store, bool paused)
    {
        await using var transaction = await store.BeginAsync(CancellationToken.None);
        await transaction.ConsumerGroups().SetConsumerGroupPausedAsync("projection:orders@1", paused, CancellationToken.None);
        await transaction.CommitAsync(CancellationToken.None);
    }

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try
        {
            Directory.Delete(_folder, recursive: true);
        }
        catch (IOException)
        {
            // Left for the OS to clean.
        }
    }

    sealed class StubHandler(Func<HttpRequestMessage, HttpResponseMessage> answer) : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) => Task.FromResult(answer(request));
    }
}

/// <summary>The event the application writes.</summary>
public sealed record OrderPlaced(string OrderId);

/// <summary>One row per order, with its event's position.</summary>
public sealed class OrdersProjection : IProjection
{
    public IReadOnlyList<string> Tables { get; } = ["orders"];

    public IReadOnlyList<Type> Events { get; } = [typeof(OrderPlaced)];

    public async ValueTask CreateTablesAsync(ProjectionContext context, CancellationToken cancellationToken) =>
        await context.Database.ExecuteAsync($"CREATE TABLE {context.Table("orders")} (order_id TEXT PRIMARY KEY, position INTEGER NOT NULL)", [], cancellationToken);

    public async ValueTask ApplyAsync(IReadOnlyList<ProjectedEvent> events, ProjectionContext context, CancellationToken cancellationToken)
    {
        foreach (var projected in events)
        {
            await context.Database.ExecuteAsync(
                $"INSERT INTO {context.Table("orders")} (order_id, position) VALUES (@id, @position)",
                [new("@id", ((OrderPlaced)projected.Message).OrderId), new("@position", projected.Event.Position)],
                cancellationToken);
        }
    }
}

/// <summary>
/// An application on a SQLite file: <c>POST /orders/{id}</c> publishes <see cref="OrderPlaced"/> and answers its token;
/// <c>GET /orders/{id}</c> reads the projection's view with <c>RequireConsistency</c> (30 s), <c>GET /quick/orders/{id}</c>
/// the same with 200 ms; the log is mapped for anyone.
/// </summary>
internal sealed class OrdersApp : IAsyncDisposable
{
    public const string Projection = "orders";

    readonly WebApplication _app;

    OrdersApp(WebApplication app, Uri address)
    {
        _app = app;
        Address = address;
    }

    public Uri Address { get; }

    public IMessageStore Store => _app.Services.GetRequiredService<IMessageStore>();

    public IConsistency Consistency => _app.Services.GetRequiredService<IConsistency>();

    /// <summary>Starts the application; each projection wait is announced on <paramref name="waits"/> when given.</summary>
    public static async Task<OrdersApp> StartAsync(string databasePath, Channel<ConsistencyToken>? waits = null, Func<IMessageStore, ValueTask>? beforeStart = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.AddConverge(o =>
        {
            o.UseSqlite(databasePath);
            o.Messages.Register<OrderPlaced>("ryw.order-placed");
            o.PollInterval = TimeSpan.FromMilliseconds(20);
            o.AddProjection<OrdersProjection>(Projection, 1);
        });
        if (waits is not null)
        {
            var waiter = builder.Services.Single(d => d.ServiceType == typeof(IConsistency));
            builder.Services.Remove(waiter);
            builder.Services.AddSingleton<IConsistency>(sp => new AnnouncedConsistency((IConsistency)ActivatorUtilities.CreateInstance(sp, waiter.ImplementationType!), waits));
        }

        var app = builder.Build();
        app.MapPost("/orders/{id}", async (string id, IMessageBus bus, HttpResponse response) =>
        {
            var stored = await bus.PublishAsync("order-" + id, new OrderPlaced(id));
            response.SetConsistencyToken(ConsistencyToken.After(stored));
            return TypedResults.Ok();
        });
        app.MapGet("/orders/{id}", (string id, IMessageStore store, ProjectionCatalog catalog) => Read(store, catalog, id)).RequireConsistency(projection: Projection, timeout: TimeSpan.FromSeconds(30));
        app.MapGet("/quick/orders/{id}", (string id, IMessageStore store, ProjectionCatalog catalog) => Read(store, catalog, id)).RequireConsistency(projection: Projection, timeout: TimeSpan.FromMilliseconds(200));
        app.MapConvergeLog(configure: o => o.AllowAnonymous = true);
        if (beforeStart is not null)
        {
            await beforeStart(app.Services.GetRequiredService<IMessageStore>());
        }

        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new OrdersApp(app, new Uri(address + "/"));
    }

    static IResult Read(IMessageStore store, ProjectionCatalog catalog, string id) =>
        ReadPosition(store, catalog, id) is { } position ? TypedResults.Text($"{id}@{position}") : TypedResults.NotFound();

    /// <summary>The position the projection's view holds for <paramref name="id"/>; <c>null</c> without a row.</summary>
    public long? ReadPosition(string id) => ReadPosition(Store, _app.Services.GetRequiredService<ProjectionCatalog>(), id);

    static long? ReadPosition(IMessageStore store, ProjectionCatalog catalog, string id)
    {
        using var connection = ((SqliteMessageStore)store).OpenConnection();
        using var command = connection.CreateCommand();
        command.CommandText = $"SELECT position FROM {catalog.View(Projection, "orders")} WHERE order_id = @id";
        command.Parameters.AddWithValue("@id", id);
        return command.ExecuteScalar() is { } position ? Convert.ToInt64(position, CultureInfo.InvariantCulture) : null;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    /// <summary>Announces each projection wait before it starts.</summary>
    sealed class AnnouncedConsistency(IConsistency inner, Channel<ConsistencyToken> waits) : IConsistency
    {
        public ValueTask<ConsistencyWaitResult> WaitForGroupAsync(string group, ConsistencyToken token, TimeSpan timeout, CancellationToken cancellationToken = default) =>
            inner.WaitForGroupAsync(group, token, timeout, cancellationToken);

        public ValueTask<ConsistencyWaitResult> WaitForProjectionAsync(string projection, ConsistencyToken token, TimeSpan timeout, CancellationToken cancellationToken = default)
        {
            waits.Writer.TryWrite(token);
            return inner.WaitForProjectionAsync(projection, token, timeout, cancellationToken);
        }
    }
}
