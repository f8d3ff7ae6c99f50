using System.Security.Claims;
using System.Text.Encodings.Web;
using Converge.Runtime;
using Converge.Sqlite;
using Converge.Storage;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Converge.Dashboard.Tests;

/// <summary>
/// An application with Converge on a new SQLite file and the dashboard at /converge, on a free loopback port. Tests
/// sign in with the test-only header <see cref="UserHeader"/> (<c>reader</c> or <c>operator</c>); the dashboard itself
/// trusts no header: this scheme is the application's, as a cookie or OpenID Connect scheme would be.
/// </summary>
internal sealed class DashboardServer : IAsyncDisposable
{
    public const string ReaderPolicy = "converge-readers";
    public const string OperatorPolicy = "converge-operators";
    public const string UserHeader = "X-Test-User";

    readonly WebApplication _app;
    readonly string _folder;

    DashboardServer(WebApplication app, Uri address, string folder)
    {
        _app = app;
        Address = address;
        _folder = folder;
    }

    public Uri Address { get; }

    public IServiceProvider Services => _app.Services;

    public IMessageStore Store => _app.Services.GetRequiredService<IMessageStore>();

    public static async Task<DashboardServer> StartAsync(Action<ConvergeOptions>? converge = null, Action<ConvergeDashboardOptions>? dashboard = null, Action<IServiceCollection>? services = null)
    {
        var folder = Directory.CreateTempSubdirectory("converge-dashboard-").FullName;
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.AddConverge(o =>
        {
            o.UseSqlite(Path.Combine(folder, "app.db"));
            converge?.Invoke(o);
        });
        services?.Invoke(builder.Services);
        builder.Services.AddConvergeDashboard();
        builder.Services.AddAuthentication(HeaderAuthentication.SchemeName).AddScheme<AuthenticationSchemeOptions, HeaderAuthentication>(HeaderAuthentication.SchemeName, null);
        builder.Services.AddAuthorization(a =>
        {
            a.AddPolicy(ReaderPolicy, p => p.RequireAuthenticatedUser());
            a.AddPolicy(OperatorPolicy, p => p.RequireRole("operator"));
        });
        var app = builder.Build();
        app.UseAuthentication();
        app.UseAuthorization();
        app.MapConvergeDashboard("/converge", o =>
        {
            o.AuthorizationPolicy = ReaderPolicy;
            o.OperatorPolicy = OperatorPolicy;
            dashboard?.Invoke(o);
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new DashboardServer(app, new Uri(address + "/"), folder);
    }

    /// <summary>A client signed in as <paramref name="user"/> (<c>null</c>: nobody), that does not follow redirects.</summary>
    public HttpClient Client(string? user)
    {
        var client = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false, UseCookies = true }, disposeHandler: true) { BaseAddress = Address };
        if (user is not null)
        {
            client.DefaultRequestHeaders.Add(UserHeader, user);
        }

        return client;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
        SqliteConnection.ClearAllPools();
        Directory.Delete(_folder, recursive: true);
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

            Claim[] claims = user == "operator"
                ? [new(ClaimTypes.Name, "ops@example.test"), new(ClaimTypes.Role, "operator")]
                : [new(ClaimTypes.Name, user.ToString())];
            var identity = new ClaimsIdentity(claims, SchemeName);
            return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), SchemeName)));
        }
    }
}
