using System.Net;
using Converge.Sqlite;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace Converge.Cli.Tests;

/// <summary><c>converge dashboard</c>: nothing without the one-time link, the link works once, and read-only means no actions.</summary>
public sealed class DashboardCommandTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task The_sign_in_link_works_once_and_nothing_is_served_without_it(bool readOnly)
    {
        using var folder = new TempFolder();
        var path = folder.File("app.db");
        await using (var created = new SqliteMessageStore(new SqliteStoreOptions { Path = path }, TimeProvider.System))
        {
            await created.MigrateAsync(CancellationToken.None);
        }

        await using var store = new SqliteMessageStore(new SqliteStoreOptions { Path = path }, TimeProvider.System);
        await using var app = DashboardCommand.Build(store, 0, readOnly, out var signIn);
        await app.StartAsync();
        var address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single() + "/");
        using var stranger = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false }) { BaseAddress = address };
        using var owner = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false, UseCookies = true }) { BaseAddress = address };

        using (var refused = await stranger.GetAsync("converge"))
        {
            Assert.Equal(HttpStatusCode.Redirect, refused.StatusCode);
            Assert.Equal("/login", refused.Headers.Location!.AbsolutePath);
        }

        using (var guessed = await stranger.GetAsync("login?token=" + new string('0', signIn.Token.Length)))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, guessed.StatusCode);
        }

        using (var signedIn = await owner.GetAsync("login?token=" + signIn.Token))
        {
            Assert.Equal(HttpStatusCode.Redirect, signedIn.StatusCode);
        }

        using (var again = await stranger.GetAsync("login?token=" + signIn.Token))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, again.StatusCode);
        }

        var overview = await owner.GetStringAsync("converge/log");
        Assert.Contains("<h1>Log</h1>", overview, StringComparison.Ordinal);
        Assert.Contains(readOnly ? "read-only" : "operator", overview, StringComparison.Ordinal);
        using var action = await owner.PostAsync("converge/groups/g/pause", new FormUrlEncodedContent([]));
        Assert.Equal(readOnly ? HttpStatusCode.NotFound : HttpStatusCode.BadRequest, action.StatusCode);
        await app.StopAsync();
    }
}
