namespace Converge.Readme.Tests;

/// <summary>Every C# snippet of README.md compiles as written against the Converge assemblies.</summary>
public sealed class ReadmeSnippetTests
{
    static readonly Lazy<IReadOnlyList<Snippet>> Readme = new(() => ReadmeSnippets.Extract(File.ReadAllText(ReadmeSnippets.ReadmePath)));

    static string Scaffold => File.ReadAllText(ReadmeSnippets.ScaffoldPath);

    public static TheoryData<string> Snippets()
    {
        var data = new TheoryData<string>();
        foreach (var snippet in Readme.Value)
        {
            data.Add(snippet.Name);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Snippets))]
    public void Snippet_compiles_as_written(string name)
    {
        var snippets = Readme.Value;
        var index = snippets.ToList().FindIndex(s => s.Name == name);
        Assert.True(index >= 0, $"{name} is no longer in the README");
        if (snippets[index].SkipReason is { } reason)
        {
            Assert.False(string.IsNullOrWhiteSpace(reason), $"{name} is skipped without a reason");
            return;
        }

        var errors = ReadmeSnippets.Compile(snippets, index, Scaffold);

        Assert.True(errors.Count == 0, string.Join("\n", errors));
    }

    [Fact]
    public void The_readme_has_its_snippets_and_skips_few()
    {
        var snippets = Readme.Value;

        Assert.True(snippets.Count >= 6, $"found {snippets.Count} C# snippets; the extraction is broken");
        Assert.Contains(snippets, s => s.Heading == "Quick start" && s.Code.Contains("AddConverge", StringComparison.Ordinal));
        Assert.True(snippets.Count(s => s.SkipReason is not null) <= 2, "more than two snippets are skipped: make them compile");
    }

    [Fact]
    public void A_snippet_naming_a_type_its_usings_do_not_bring_fails_with_the_snippet_and_the_error()
    {
        // The README's first-hour bug: RateLimit used where only Converge.Runtime was imported, when it lived elsewhere.
        var snippets = ReadmeSnippets.Extract("""
            # Install
            ```csharp
            using Converge.Sqlite;
            ```
            # Jobs
            ```csharp
            o.Queue("billing.charges", q => q.RateLimit = new NoSuchRateLimit(PermitsPerSecond: 2000, Burst: 200));
            ```
            """);

        var errors = ReadmeSnippets.Compile(snippets, 1, Scaffold);

        var error = Assert.Single(errors);
        Assert.StartsWith("README.md line 6 (Jobs), README.md line 7: CS0246", error, StringComparison.Ordinal);
        Assert.Contains("NoSuchRateLimit", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Usings_shown_earlier_carry_over_and_missing_ones_fail()
    {
        var snippets = ReadmeSnippets.Extract("""
            ```csharp
            var options = new SendOptions { CorrelationId = "order-1" };
            ```
            ```csharp
            using Converge.Runtime;
            using Converge.Storage;
            ```
            ```csharp
            o.Queue("billing.charges", q => q.RateLimit = new RateLimit(PermitsPerSecond: 2000, Burst: 200));
            var options = new SendOptions { CorrelationId = "order-1" };
            ```
            """);

        Assert.Contains(ReadmeSnippets.Compile(snippets, 0, Scaffold), e => e.Contains("CS0246", StringComparison.Ordinal) && e.Contains("SendOptions", StringComparison.Ordinal));
        Assert.Empty(ReadmeSnippets.Compile(snippets, 2, Scaffold));
    }

    [Fact]
    public void A_class_followed_by_the_statements_that_use_it_compiles_as_two_files_and_errors_keep_their_lines()
    {
        var snippets = ReadmeSnippets.Extract("""
            ```csharp
            using Converge.Runtime;
            using Microsoft.Extensions.DependencyInjection;
            public sealed class PingHandler : IHandler<ReserveStock>
            {
                public Task HandleAsync(ReserveStock message, MessageContext context, CancellationToken ct) => Task.CompletedTask;
            }

            services.AddConverge(o => o.Handle<ReserveStock, PingHandler>("pings"));
            services.AddConverge(o => o.Handle<ReserveStock, NoSuchHandler>("pings"));
            ```
            """);

        var error = Assert.Single(ReadmeSnippets.Compile(snippets, 0, Scaffold));

        Assert.StartsWith("README.md line 1 (top), README.md line 10: CS0246", error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_skip_marker_needs_a_reason()
    {
        var snippets = ReadmeSnippets.Extract("""
            <!-- readme-test: skip shows the shape of a call, not a program -->
            ```csharp
            await bus.SendAsync(...);
            ```
            """);

        Assert.Equal("shows the shape of a call, not a program", Assert.Single(snippets).SkipReason);
    }
}
