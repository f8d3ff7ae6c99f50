using System.Security.Claims;
using System.Text.Encodings.Web;
using Converge.Contracts;
using Converge.Runtime;
using Converge.Storage;
using Converge.Testing.InMemory;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Converge.AspNetCore.Tests;

/// <summary>
/// An application serving the log of an in-memory store on Kestrel, on a free loopback port, behind the policy
/// <see cref="Policy"/>: a request is authenticated when it carries the header <see cref="UserHeader"/>.
/// </summary>
internal sealed class LogServer : IAsyncDisposable
{
    public const string Policy = "log-readers";
    public const string UserHeader = "X-Test-User";

    readonly WebApplication _app;

    LogServer(WebApplication app, Uri address)
    {
        _app = app;
        Address = address;
    }

    public Uri Address { get; }

    public IServiceProvider Services => _app.Services;

    public IMessageStore Store => _app.Services.GetRequiredService<IMessageStore>();

    public static async Task<LogServer> StartAsync(Action<ConvergeLogOptions>? configure = null, Action<ConvergeOptions>? converge = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.AddConverge(o =>
        {
            o.UseInMemory();
            converge?.Invoke(o);
        });
        builder.Services.AddAuthentication(HeaderAuthentication.SchemeName).AddScheme<AuthenticationSchemeOptions, HeaderAuthentication>(HeaderAuthentication.SchemeName, null);
        builder.Services.AddAuthorization(a => a.AddPolicy(Policy, p => p.RequireAuthenticatedUser()));
        var app = builder.Build();
        app.UseAuthentication();
        app.UseAuthorization();
        app.MapConvergeLog(configure: o =>
        {
            o.AuthorizationPolicy = Policy;
            configure?.Invoke(o);
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new LogServer(app, new Uri(address + "/"));
    }

    /// <summary>A client of this server, authenticated unless <paramref name="authenticated"/> is false.</summary>
    public HttpClient Client(bool authenticated = true, HttpMessageHandler? handler = null)
    {
        var client = new HttpClient(handler ?? new SocketsHttpHandler(), disposeHandler: true) { BaseAddress = Address, Timeout = Timeout.InfiniteTimeSpan };
        if (authenticated)
        {
            client.DefaultRequestHeaders.Add(UserHeader, "reader");
        }

        return client;
    }

    /// <summary>Appends <paramref name="count"/> events in transactions of <paramref name="perTransaction"/>, over <paramref name="streams"/> streams.</summary>
    public async Task AppendAsync(int count, int perTransaction = 100, int streams = 50, string type = "test.happened@1", CancellationToken cancellationToken = default)
    {
        var appended = 0;
        while (appended < count)
        {
            var size = Math.Min(perTransaction, count - appended);
            await using var transaction = await Store.BeginAsync(cancellationToken);
            foreach (var group in Enumerable.Range(appended, size).GroupBy(i => i % streams))
            {
                await transaction.AppendAsync("s-" + group.Key, null, [.. group.Select(i => Event(i, type))], cancellationToken);
            }

            await transaction.CommitAsync(cancellationToken);
            appended += size;
        }
    }

    public static Envelope Event(int number, string type = "test.happened@1") => new()
    {
        MessageId = Guid.NewGuid(),
        MessageType = type,
        SentAt = DateTimeOffset.UnixEpoch.AddSeconds(number),
        CorrelationId = "c-" + number,
        Body = System.Text.Encoding.UTF8.GetBytes($"{{\"number\":{number}}}"),
    };

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    sealed class HeaderAuthentication(IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder)
        : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
    {
        public const string SchemeName = "test-header";

        protected override Task<AuthenticateResult> HandleAuthenticateAsync()
        {
            if (!Request.Headers.TryGetValue(UserHeader, out var user) || string.IsNullOrEmpty(user))
            {
                return Task.FromResult(AuthenticateResult.NoResult());
            }

            var identity = new ClaimsIdentity([new Claim(ClaimTypes.Name, user.ToString())], SchemeName);
            return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), SchemeName)));
        }
    }
}
