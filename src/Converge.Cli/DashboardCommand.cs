using System.CommandLine;
using System.Net;
using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using Converge.Dashboard;
using Converge.Storage;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Converge.Cli;

/// <summary>
/// <c>converge dashboard</c>: serves the dashboard of a store on 127.0.0.1 and prints a one-time sign-in link. Nobody
/// else on the machine gets in without that link: the page needs a cookie that only the link's single use sets.
/// </summary>
internal static class DashboardCommand
{
    public const string ReaderPolicy = "converge-dashboard";
    public const string OperatorPolicy = "converge-operator";
    const string RoleClaim = "converge-role";

    public static Command Create(CliOutput output)
    {
        var location = new StoreLocation();
        var port = new Option<int>("--port") { Description = "The port on 127.0.0.1; 0 picks a free one.", HelpName = "PORT", DefaultValueFactory = _ => 5080 };
        var readOnly = new Option<bool>("--read-only") { Description = "Show everything but offer no action (retry, discard, cancel, trigger, pause, resume, reset, switch, rebuild)." };
        port.Validators.Add(result =>
        {
            if (result.Parsed<int>() is < 0 or > 65535)
            {
                result.AddError("--port must be between 0 and 65535 (0 picks a free port).");
            }
        });
        var command = location.AddTo(new Command("dashboard", "Serve the dashboard of a store on 127.0.0.1 (queues, sagas, the flow of a transaction, jobs, dead letters, the log, consumer groups, projections, operator actions) and print a one-time sign-in link. Runs until stopped (Ctrl+C).")
        {
            port, readOnly,
        });
        command.SetAction(output, async (parsed, cancellationToken) =>
        {
            await using var opened = await StoreAccess.OpenExistingAsync(location.Resolve(parsed), cancellationToken);
            await using var app = Build(opened.Store, parsed.GetValue(port), parsed.GetValue(readOnly), out var signIn);
            try
            {
                await app.StartAsync(cancellationToken);
            }
            catch (IOException exception)
            {
                throw new CliException(CliApp.Usage, $"Could not listen on 127.0.0.1:{parsed.GetValue(port)}: {exception.Message} Pick another with --port, or --port 0 for any free one.");
            }

            var address = app.Urls.First();
            await output.Out.WriteLineAsync($"Dashboard of {opened.Name} at {address}/converge{(parsed.GetValue(readOnly) ? " (read-only)" : "")}");
            await output.Out.WriteLineAsync($"Sign in once with this link (it works one time, on this machine): {address}/login?token={signIn.Token}");
            await output.Out.WriteLineAsync("Stop with Ctrl+C.");
            await output.Out.FlushAsync(cancellationToken);
            try
            {
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                // Ctrl+C.
            }

            await app.StopAsync(CancellationToken.None);
            return CliApp.Success;
        });
        return command;
    }

    /// <summary>The dashboard's web application on 127.0.0.1:<paramref name="port"/>, with its one-time sign-in.</summary>
    internal static WebApplication Build(IMessageStore store, int port, bool readOnly, out OneTimeSignIn signIn)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, port));
        builder.Services.AddSingleton(store);
        builder.Services.AddSingleton(CliApp.Clock);
        builder.Services.AddConvergeDashboard();
        builder.Services.AddAuthentication(CookieAuthenticationDefaults.AuthenticationScheme).AddCookie(o =>
        {
            o.Cookie.Name = "converge-dashboard";
            o.Cookie.HttpOnly = true;
            o.Cookie.SameSite = SameSiteMode.Strict;
            o.LoginPath = "/login";
            o.AccessDeniedPath = "/login";
        });
        builder.Services.AddAuthorization(a =>
        {
            a.AddPolicy(ReaderPolicy, p => p.RequireAuthenticatedUser());
            a.AddPolicy(OperatorPolicy, p => p.RequireClaim(RoleClaim, "operator"));
        });
        var app = builder.Build();
        app.UseAuthentication();
        app.UseAuthorization();
        var once = new OneTimeSignIn(Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24)));
        signIn = once;
        app.MapGet("/", () => Results.Redirect("/converge"));
        app.MapGet("/login", async (HttpContext http) =>
        {
            if (http.Request.Query["token"].ToString() is not { Length: > 0 } token || !once.TryUse(token))
            {
                return Results.Text("Open the sign-in link that 'converge dashboard' printed. It works once: to sign in again, start 'converge dashboard' again.", "text/plain", statusCode: StatusCodes.Status401Unauthorized);
            }

            Claim[] claims = readOnly
                ? [new(ClaimTypes.Name, Environment.UserName + " (converge dashboard)")]
                : [new(ClaimTypes.Name, Environment.UserName + " (converge dashboard)"), new(RoleClaim, "operator")];
            await http.SignInAsync(CookieAuthenticationDefaults.AuthenticationScheme, new ClaimsPrincipal(new ClaimsIdentity(claims, CookieAuthenticationDefaults.AuthenticationScheme)));
            return Results.Redirect("/converge");
        }).AllowAnonymous();
        app.MapConvergeDashboard("/converge", o =>
        {
            o.AuthorizationPolicy = ReaderPolicy;
            o.OperatorPolicy = readOnly ? null : OperatorPolicy;
        });
        return app;
    }

    /// <summary>A sign-in token that works once, compared in constant time.</summary>
    internal sealed class OneTimeSignIn(string token)
    {
        int _used;

        public string Token { get; } = token;

        public bool TryUse(string offered) =>
            CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(offered), Encoding.UTF8.GetBytes(Token))
            && Interlocked.Exchange(ref _used, 1) == 0;
    }
}
