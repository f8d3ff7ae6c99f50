using System.Diagnostics;
using System.Net;
using System.Text;
using Converge.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.AspNetCore.Tests;

/// <summary>
/// The log over HTTP: a client whose connection is cut again and again still sees every event once and in order
/// (NDJSON resuming with <c>after</c>, Server-Sent Events with <c>Last-Event-ID</c>), while events keep being appended
/// and are pushed as they commit.
/// </summary>
public sealed class LogOverHttpTests
{
    const int Events = 100_000;
    const int Cuts = 100;

    [Theory]
    [InlineData(LogFormat.Ndjson)]
    [InlineData(LogFormat.ServerSentEvents)]
    public async Task A_client_cut_100_times_during_100000_events_sees_every_event_once_in_order(LogFormat format)
    {
        await using var server = await LogServer.StartAsync();
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(3));

        // About 230 bytes an event: a cut every 115 KB on average spreads the 100 cuts over the first half of the stream.
        var cutting = new ConnectionCutter(share: 1, maxBytesBeforeCut: 230_000, seed: 12, maxCuts: Cuts);
        using var http = server.Client(handler: cutting);
        var reconnects = 0;
        var client = new ConvergeLogClient(http, new ConvergeLogClientOptions { Format = format, ReconnectDelay = TimeSpan.FromMilliseconds(1), MaxReconnectDelay = TimeSpan.FromMilliseconds(5), OnReconnect = _ => Interlocked.Increment(ref reconnects) });

        // Half the events exist before the client starts; the rest are appended while it reads, and reach it as they commit.
        await server.AppendAsync(Events / 2);
        var writer = Task.Run(() => server.AppendAsync(Events / 2, cancellationToken: deadline.Token));
        var positions = new List<long>(Events);
        await foreach (var entry in client.ReadLogAsync(cancellationToken: deadline.Token))
        {
            positions.Add(entry.Position);
            if (positions.Count == Events)
            {
                break;
            }
        }

        await writer;
        Assert.Equal(Cuts, cutting.Cuts);
        Assert.True(reconnects >= Cuts, $"{reconnects} reconnects");
        var wrong = positions.Select((position, index) => (position, index)).FirstOrDefault(p => p.position != p.index + 1);
        Assert.True(positions.Count == Events && wrong == default, $"{positions.Count} events; at index {wrong.index} position {wrong.position}");
        var resumed = cutting.Requests.Skip(1).ToList();
        if (format == LogFormat.ServerSentEvents)
        {
            // As a browser does: the URL stays as first asked and the header carries where to resume.
            Assert.All(resumed, r => Assert.Equal(("/converge/log?after=0", true), (r.PathAndQuery, r.LastEventId is not null)));
        }
        else
        {
            Assert.All(resumed, r => Assert.Null(r.LastEventId));
        }
    }

    [Fact]
    public async Task Every_route_is_refused_without_credentials_and_served_with_them()
    {
        await using var server = await LogServer.StartAsync();
        await server.AppendAsync(3, streams: 1);
        var routes = server.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Select(e => e.RoutePattern.RawText!)
            .Where(p => p.StartsWith("/converge/log", StringComparison.Ordinal))
            .ToList();
        using var anonymous = server.Client(authenticated: false);
        using var reader = server.Client();

        Assert.Equal(2, routes.Count);
        foreach (var route in routes)
        {
            var url = route.Replace("{stream}", "s-0", StringComparison.Ordinal).TrimStart('/') + "?follow=false";
            using var refused = await anonymous.GetAsync(url);
            using var served = await reader.GetAsync(url);

            Assert.Equal((route, HttpStatusCode.Unauthorized), (route, refused.StatusCode));
            Assert.Equal((route, HttpStatusCode.OK), (route, served.StatusCode));
            Assert.Equal(3, (await served.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        }
    }

    [Fact]
    public async Task Mapping_without_a_policy_is_refused_unless_anonymous_access_is_chosen()
    {
        var app = WebApplication.CreateSlimBuilder().Build();

        var refused = Assert.Throws<InvalidOperationException>(() => app.MapConvergeLog());
        app.MapConvergeLog("/open", o => o.AllowAnonymous = true);

        Assert.Contains("AuthorizationPolicy", refused.Message, StringComparison.Ordinal);
        Assert.Contains("AllowAnonymous", refused.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => app.MapConvergeLog("/both", o => { o.AllowAnonymous = true; o.AuthorizationPolicy = "x"; }));
        await app.DisposeAsync();
    }

    [Fact]
    public async Task Filters_by_type_and_stream_and_a_streams_route_reads_by_version()
    {
        await using var server = await LogServer.StartAsync();
        await server.AppendAsync(20, streams: 4);
        await server.AppendAsync(6, streams: 2, type: "test.other@2");
        using var http = server.Client();
        var client = new ConvergeLogClient(http);

        var others = await client.ReadLogAsync(new LogQuery { Types = ["test.other"], Follow = false }).ToListAsync();
        var exact = await client.ReadLogAsync(new LogQuery { Types = ["test.other@1"], Follow = false }).ToListAsync();
        var stream = await client.ReadLogAsync(new LogQuery { Streams = ["s-1"], After = 10, Follow = false }).ToListAsync();
        var byVersion = await client.ReadStreamAsync("s-1", afterVersion: 2, follow: false).ToListAsync();

        Assert.Equal(6, others.Count);
        Assert.All(others, e => Assert.Equal("test.other@2", e.Type));
        Assert.Empty(exact);
        Assert.All(stream, e => Assert.True(e.Stream == "s-1" && e.Position > 10));
        Assert.Equal([3L, 4, 5, 6, 7, 8], byVersion.Select(e => e.Version));
        Assert.All(byVersion, e => Assert.Equal("s-1", e.Stream));
        var first = byVersion[0];
        Assert.StartsWith("c-", first.CorrelationId, StringComparison.Ordinal);
        Assert.True(first.Data!.Value.GetProperty("number").GetInt32() >= 0);
    }

    [Fact]
    public async Task A_stream_the_caller_may_not_read_is_refused_on_its_route_and_left_out_of_the_log()
    {
        await using var server = await LogServer.StartAsync(o => o.AuthorizeStream = (_, stream) => ValueTask.FromResult(stream != "s-1"));
        await server.AppendAsync(10, streams: 2);
        using var http = server.Client();
        var client = new ConvergeLogClient(http);

        var log = await client.ReadLogAsync(new LogQuery { Follow = false }).ToListAsync();
        using var refused = await http.GetAsync("converge/log/streams/s-1?follow=false");

        Assert.Equal(5, log.Count);
        Assert.All(log, e => Assert.Equal("s-0", e.Stream));
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        var error = await Assert.ThrowsAsync<HttpRequestException>(async () => await client.ReadStreamAsync("s-1", follow: false).ToListAsync());
        Assert.Equal(HttpStatusCode.Forbidden, error.StatusCode);
    }

    [Fact]
    public async Task Last_Event_ID_resumes_a_read_and_wins_over_after()
    {
        await using var server = await LogServer.StartAsync();
        await server.AppendAsync(8, streams: 1);
        using var http = server.Client();
        using var request = new HttpRequestMessage(HttpMethod.Get, "converge/log?after=2&follow=false&format=sse");
        request.Headers.TryAddWithoutValidation("Last-Event-ID", "5");

        using var response = await http.SendAsync(request);
        var ids = (await response.Content.ReadAsStringAsync()).Split('\n').Where(l => l.StartsWith("id: ", StringComparison.Ordinal)).Select(l => l[4..]);

        Assert.Equal(["6", "7", "8"], ids);
    }

    [Fact]
    public async Task Bad_requests_are_answered_400_with_what_to_do()
    {
        await using var server = await LogServer.StartAsync();
        using var http = server.Client();

        foreach (var (url, expected) in new[]
        {
            ("converge/log?after=-1", "whole number"),
            ("converge/log?after=ten", "whole number"),
            ("converge/log?follow=maybe", "follow"),
            ("converge/log?format=xml", "format"),
            ("converge/log/streams/s-0?stream=s-1", "stream filter"),
        })
        {
            using var response = await http.GetAsync(url);
            Assert.Equal((url, HttpStatusCode.BadRequest), (url, response.StatusCode));
            Assert.Contains(expected, await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        using var request = new HttpRequestMessage(HttpMethod.Get, "converge/log");
        request.Headers.TryAddWithoutValidation("Last-Event-ID", "x");
        using var badHeader = await http.SendAsync(request);
        Assert.Equal(HttpStatusCode.BadRequest, badHeader.StatusCode);
    }

    [Fact]
    public async Task Clients_beyond_the_limit_are_answered_503_and_one_leaving_makes_room()
    {
        // A client that goes away is noticed at the latest by the next heartbeat, which fails to reach it.
        await using var server = await LogServer.StartAsync(o => { o.MaxClients = 2; o.HeartbeatInterval = TimeSpan.FromMilliseconds(100); });
        using var http = server.Client();
        using var first = await http.GetAsync("converge/log", HttpCompletionOption.ResponseHeadersRead);
        using var second = await http.GetAsync("converge/log", HttpCompletionOption.ResponseHeadersRead);

        using var third = await http.GetAsync("converge/log?follow=false");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, third.StatusCode);
        Assert.Equal("1", third.Headers.GetValues("Retry-After").Single());

        first.Dispose();
        var stopwatch = Stopwatch.StartNew();
        HttpStatusCode status;
        do
        {
            using var again = await http.GetAsync("converge/log?follow=false");
            status = again.StatusCode;
        }
        while (status != HttpStatusCode.OK && stopwatch.Elapsed < TimeSpan.FromSeconds(10));

        Assert.Equal(HttpStatusCode.OK, status);
    }

    /// <summary>
    /// A reader that stops enumerating lets go of its connection: with one client allowed, the next reader gets in (the
    /// response is disposed, and the client's handler closes rather than drains it).
    /// </summary>
    [Fact]
    public async Task A_reader_that_stops_enumerating_frees_its_place_at_once()
    {
        await using var server = await LogServer.StartAsync(o => { o.MaxClients = 1; o.HeartbeatInterval = TimeSpan.FromMilliseconds(100); });
        await server.AppendAsync(10, streams: 1);
        using var http = server.Client(handler: ConvergeLogClient.CreateHandler());
        var client = new ConvergeLogClient(http);
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        for (var reader = 0; reader < 3; reader++)
        {
            var seen = 0;
            await foreach (var entry in client.ReadLogAsync(cancellationToken: deadline.Token))
            {
                if (++seen == 2)
                {
                    break;
                }
            }

            Assert.Equal(2, seen);
        }

        HttpStatusCode status;
        do
        {
            using var again = await http.GetAsync("converge/log?follow=false", deadline.Token);
            status = again.StatusCode;
        }
        while (status != HttpStatusCode.OK);
    }

    [Fact]
    public async Task An_idle_response_sends_heartbeats()
    {
        await using var server = await LogServer.StartAsync(o => o.HeartbeatInterval = TimeSpan.FromMilliseconds(100));
        using var http = server.Client();
        using var sse = await http.GetAsync("converge/log?format=sse", HttpCompletionOption.ResponseHeadersRead);
        using var ndjson = await http.GetAsync("converge/log", HttpCompletionOption.ResponseHeadersRead);
        using var sseReader = new StreamReader(await sse.Content.ReadAsStreamAsync());
        using var ndjsonReader = new StreamReader(await ndjson.Content.ReadAsStreamAsync());

        Assert.Equal(("text/event-stream", "application/x-ndjson"), (sse.Content.Headers.ContentType!.MediaType, ndjson.Content.Headers.ContentType!.MediaType));
        Assert.Equal(new string?[] { ": heartbeat", string.Empty, ": heartbeat", string.Empty }, new[] { await sseReader.ReadLineAsync(), await sseReader.ReadLineAsync(), await sseReader.ReadLineAsync(), await sseReader.ReadLineAsync() });
        Assert.Equal(new string?[] { string.Empty, string.Empty }, new[] { await ndjsonReader.ReadLineAsync(), await ndjsonReader.ReadLineAsync() });
    }

    /// <summary>
    /// With heartbeats an hour apart, a caught-up response can only have learnt of the event from the store's wake-up at
    /// its commit: no poll would find it before the deadline.
    /// </summary>
    [Fact]
    public async Task A_caught_up_client_gets_an_event_as_it_commits()
    {
        await using var server = await LogServer.StartAsync(o => o.HeartbeatInterval = TimeSpan.FromHours(1));
        await server.AppendAsync(5, streams: 1);
        using var http = server.Client();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var client = new ConvergeLogClient(http, new ConvergeLogClientOptions { Format = LogFormat.ServerSentEvents });
        var seen = new List<long>();

        await foreach (var entry in client.ReadLogAsync(cancellationToken: deadline.Token))
        {
            seen.Add(entry.Position);
            if (seen.Count == 5)
            {
                await server.AppendAsync(1, streams: 1);
            }
            else if (seen.Count == 6)
            {
                break;
            }
        }

        Assert.Equal([1L, 2, 3, 4, 5, 6], seen);
    }
}
