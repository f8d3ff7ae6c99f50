using System.Net;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Dashboard.Tests;

/// <summary>Nothing is served without the application's policy, actions need the operator policy and antiforgery, and data is encoded.</summary>
public sealed class DashboardAccessTests
{
    static List<(string Method, string Route)> Routes(DashboardServer server) =>
        [.. server.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Where(e => e.RoutePattern.RawText!.StartsWith("/converge", StringComparison.Ordinal))
            .SelectMany(e => e.Metadata.GetMetadata<HttpMethodMetadata>()!.HttpMethods.Select(m => (m, e.RoutePattern.RawText!)))];

    static string Url(string route) => route
        .Replace("{id:guid}", Guid.Empty.ToString(), StringComparison.Ordinal)
        .Replace("{id:long}", "1", StringComparison.Ordinal)
        .Replace("{version:int}", "1", StringComparison.Ordinal)
        .Replace("{id}", "t-1", StringComparison.Ordinal)
        .Replace("{name}", "dashboard.css", StringComparison.Ordinal)
        .TrimStart('/');

    [Fact]
    public async Task Every_route_refuses_a_caller_without_credentials_and_every_action_a_reader()
    {
        await using var server = await DashboardServer.StartAsync();
        var routes = Routes(server);
        using var anonymous = server.Client(null);
        using var reader = server.Client("reader");

        Assert.Contains(routes, r => r.Method == "GET");
        Assert.Contains(routes, r => r.Method == "POST");
        foreach (var (method, route) in routes)
        {
            using var refused = await anonymous.SendAsync(new HttpRequestMessage(new HttpMethod(method), Url(route)) { Content = method == "POST" ? new FormUrlEncodedContent([]) : null });
            Assert.Equal((method, route, HttpStatusCode.Unauthorized), (method, route, refused.StatusCode));
            if (method == "POST")
            {
                using var forbidden = await reader.PostAsync(Url(route), new FormUrlEncodedContent([]));
                Assert.Equal((route, HttpStatusCode.Forbidden), (route, forbidden.StatusCode));
            }
        }
    }

    [Fact]
    public async Task Every_page_and_fragment_says_how_long_its_body_took_to_build_in_a_server_timing_header()
    {
        await using var server = await DashboardServer.StartAsync();
        using var reader = server.Client("reader");
        var pages = Routes(server).Where(r => r.Method == "GET" && !r.Route.EndsWith("/live", StringComparison.Ordinal) && !r.Route.Contains("/assets/", StringComparison.Ordinal)).ToList();

        Assert.Contains(pages, p => p.Route.EndsWith("/log/tail", StringComparison.Ordinal));
        foreach (var (_, route) in pages)
        {
            // Found or not found (the ids are made up): a page either way, timed either way.
            using var response = await reader.GetAsync(Url(route));
            Assert.True(response.StatusCode is HttpStatusCode.OK or HttpStatusCode.NotFound, $"{route}: {response.StatusCode}");
            var timing = Assert.Single(response.Headers.GetValues("Server-Timing"));
            Assert.Matches(@"^page;dur=\d+\.\d$", timing);
        }
    }

    [Fact]
    public async Task Every_action_without_the_antiforgery_token_is_refused_with_400_and_changes_nothing()
    {
        await using var server = await DashboardServer.StartAsync();
        await DeadLetterAsync(server, "test.failed@1");
        using var operatorClient = server.Client("operator");
        var posts = Routes(server).Where(r => r.Method == "POST").ToList();

        Assert.NotEmpty(posts);
        foreach (var (_, route) in posts)
        {
            using var response = await operatorClient.PostAsync(Url(route), new FormUrlEncodedContent([new("id", "1"), new("source", "work")]));
            Assert.Equal((route, HttpStatusCode.BadRequest), (route, response.StatusCode));
        }

        Assert.Single(await server.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None));
    }

    [Fact]
    public async Task Pages_show_actions_to_operators_only_and_encode_what_the_store_holds()
    {
        await using var server = await DashboardServer.StartAsync();
        var letter = await DeadLetterAsync(server, "<script>alert(1)</script>@1");
        using var reader = server.Client("reader");
        using var operatorClient = server.Client("operator");

        var asReader = await reader.GetStringAsync("converge/dead-letters");
        var asOperator = await operatorClient.GetStringAsync("converge/dead-letters");

        Assert.DoesNotContain("<script>alert(1)</script>", asOperator, StringComparison.Ordinal);
        Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;@1", asOperator, StringComparison.Ordinal);
        Assert.DoesNotContain("<form method=\"post\"", asReader, StringComparison.Ordinal);
        Assert.Contains($"action=\"/converge/dead-letters/{letter}/retry\"", asOperator, StringComparison.Ordinal);
        Assert.Contains("__RequestVerificationToken", asOperator, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_action_with_its_token_is_done_recorded_in_the_store_with_who_did_it_and_shown()
    {
        await using var server = await DashboardServer.StartAsync(o => o.RunConsumers = false);
        var letter = await DeadLetterAsync(server, "test.failed@1");
        using var operatorClient = server.Client("operator");
        var page = await operatorClient.GetStringAsync("converge/dead-letters");
        var token = System.Text.RegularExpressions.Regex.Match(page, "name=\"__RequestVerificationToken\" value=\"([^\"]+)\"").Groups[1].Value;

        using var done = await operatorClient.PostAsync($"converge/dead-letters/{letter}/retry", new FormUrlEncodedContent([new("__RequestVerificationToken", token), new("return", "/converge/dead-letters")]));

        Assert.Equal(HttpStatusCode.SeeOther, done.StatusCode);
        Assert.Contains("notice=", done.Headers.Location!.OriginalString, StringComparison.Ordinal);
        Assert.Empty(await server.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None));
        var recorded = Assert.Single((await server.Store.OperatorLog().ListAsync(null, 10, CancellationToken.None)).Items);
        Assert.Equal(("ops@example.test", OperatorActions.RetryDeadLetters, letter.ToString(System.Globalization.CultureInfo.InvariantCulture)), (recorded.Actor, recorded.Action, recorded.Target));
        var audit = await operatorClient.GetStringAsync("converge/audit");
        Assert.Contains("ops@example.test", audit, StringComparison.Ordinal);
        Assert.Contains(OperatorActions.RetryDeadLetters, audit, StringComparison.Ordinal);
    }

    [Fact]
    public void Mapping_refuses_without_a_policy_or_the_dashboard_services()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Services.AddConvergeDashboard();
        var app = builder.Build();
        var bare = WebApplication.CreateSlimBuilder().Build();

        Assert.Contains("AuthorizationPolicy", Assert.Throws<InvalidOperationException>(() => app.MapConvergeDashboard()).Message, StringComparison.Ordinal);
        Assert.Contains("AddConvergeDashboard", Assert.Throws<InvalidOperationException>(() => bare.MapConvergeDashboard(configure: o => o.AllowAnonymous = true)).Message, StringComparison.Ordinal);
    }

    /// <summary>Records a dead letter of <paramref name="type"/> from queue "work"; returns its id.</summary>
    internal static async Task<long> DeadLetterAsync(DashboardServer server, string type)
    {
        var envelope = new Envelope { MessageId = Guid.NewGuid(), MessageType = type, CorrelationId = "t-1", SentAt = TimeProvider.System.GetUtcNow(), Body = "{}"u8.ToArray() };
        await using (var transaction = await server.Store.BeginAsync(CancellationToken.None))
        {
            await transaction.RecordDeadLetterAsync(new DeadLetterRecord("work", envelope, DeadLetterReasons.PermanentFailure) { Exception = "it broke", Attempts = 1 }, CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }

        return (await server.Store.Queries().ListDeadLettersAsync(null, 10, CancellationToken.None)).Single(l => l.Envelope.MessageType == type).Id;
    }
}
