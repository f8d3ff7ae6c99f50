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

    [Theory]
    [InlineData("dashboard")]
    [InlineData("sagas", "list")]
    [InlineData("status")]
    public async Task A_store_an_older_Converge_wrote_is_refused_with_what_to_do(params string[] command)
    {
        using var folder = new TempFolder();
        var path = folder.File("old.db");
        await using (var created = new SqliteMessageStore(new SqliteStoreOptions { Path = path }, TimeProvider.System))
        {
            await created.MigrateAsync(CancellationToken.None);
            using var db = created.OpenConnection();
            using var forget = db.CreateCommand();
            forget.CommandText = "DELETE FROM converge_schema_migrations WHERE version = (SELECT max(version) FROM converge_schema_migrations)";
            Assert.Equal(1, forget.ExecuteNonQuery());
        }

        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        var result = await Cli.RunAsync([.. command, "--db", path]);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("written by an older Converge", result.Error, StringComparison.Ordinal);
        Assert.Contains("Start your application once with this version", result.Error, StringComparison.Ordinal);
    }
}
