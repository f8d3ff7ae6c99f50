using System.Reflection;
using Converge.Jobs;
using Converge.Sagas;
using Converge.Storage;
using Converge.Transports;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Xunit.Abstractions;

namespace Converge.Tests;

/// <summary>
/// The architecture as the folders show it: the store contracts (Storage/) and the message model (Contracts/) sit below
/// everything and import no capability; the runtime reaches sagas and jobs only through the hooks and options the
/// capabilities register; and the core contract a store must implement stays small.
/// </summary>
public sealed class ArchitectureTests(ITestOutputHelper output)
{
    static readonly string[] Capabilities = ["Sagas", "Jobs", "Choreography", "Faults", "Hosting", "Degraded", "Consistency"];

    [Fact]
    public void Storage_and_contracts_import_no_capability_and_not_the_runtime()
    {
        string[] forbidden = [.. Capabilities, "Runtime"];
        var found = Violations(["Storage", "Contracts"], forbidden, exceptions: []);

        Assert.Empty(found);
    }

    [Fact]
    public void Transports_import_only_the_store_contracts_and_the_message_model()
    {
        // A transport carries the queue primitive; it knows nothing of what runs on the queue.
        var found = Violations(["Transports"], [.. Capabilities, "Runtime"], exceptions: []);

        Assert.Empty(found);
    }

    [Fact]
    public void The_runtime_imports_no_capability_but_in_the_options_that_register_them()
    {
        // ConvergeOptions is the composition API (AddSaga, job queues); the runtime's delivery code reaches sagas only
        // through the dead-letter hooks AddConverge registers and the extension members in Converge.Sagas.
        var found = Violations(["Runtime"], ["Sagas", "Jobs", "Choreography", "Hosting", "Degraded", "Consistency"], exceptions: ["ConvergeOptions.cs"]);

        Assert.Empty(found);
    }

    [Fact]
    public void The_check_reports_a_using_directive_and_a_qualified_name_but_not_a_comment()
    {
        const string planted = """
            using Converge.Contracts;
            using Converge.Sagas;

            namespace Converge.Storage;

            // Sagas.SagaState is mentioned in a comment only.
            /// <summary>And in a doc comment: Jobs.JobInfo.</summary>
            public sealed class Planted
            {
                public Jobs.JobState State { get; init; }
                public object Other => Converge.Choreography.FlowView.Empty;
            }
            """;

        var found = References(CSharpSyntaxTree.ParseText(planted), Capabilities);

        Assert.Equal(["using Converge.Sagas", "Jobs.JobState", "Converge.Choreography.FlowView.Empty"], found);
    }

    [Fact]
    public void The_core_contract_asks_at_most_25_members_of_a_store()
    {
        Type[] core = [typeof(IStore), typeof(IQueueStore), typeof(ILogStore), typeof(IInboxStore), typeof(IStoreTransaction), typeof(IQueueTransaction), typeof(ILogTransaction), typeof(IInboxTransaction)];
        Type[] sagas = [typeof(ISagaTransaction)];
        Type[] jobs = [typeof(IJobStore), typeof(IJobTransaction)];
        Type[] queries = [typeof(IStoreQueries), typeof(ISagaQueries), typeof(IJobQueries)];
        Type[] database = [typeof(IDatabaseStore), typeof(IDatabaseTransaction)];

        var coreRequired = Required(core);
        output.WriteLine($"core: {coreRequired.Count} members to implement (+ DisposeAsync on the store and the transaction), {Declared(core)} declared");
        foreach (var member in coreRequired)
        {
            output.WriteLine("  " + member);
        }

        foreach (var (name, types) in new[] { ("sagas", sagas), ("jobs", jobs), ("queries", queries), ("database", database), ("transport", new[] { typeof(IMessageTransport) }) })
        {
            output.WriteLine($"{name}: {Required(types).Count} members to implement, {Declared(types)} declared");
        }

        Assert.InRange(coreRequired.Count, 1, 25);
        Assert.DoesNotContain(coreRequired, m => m.Contains("Saga", StringComparison.Ordinal) || m.Contains("Job", StringComparison.Ordinal) || m.Contains("Batch", StringComparison.Ordinal));
    }

    /// <summary>The members of <paramref name="contracts"/> without a default implementation, as TYPE.NAME.</summary>
    static List<string> Required(IEnumerable<Type> contracts) =>
        [.. contracts.SelectMany(type => type.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly)
            .Where(method => method.IsAbstract)
            .Select(method => $"{type.Name}.{(method.IsSpecialName ? method.Name.Replace("get_", string.Empty, StringComparison.Ordinal) : method.Name)}"))];

    static int Declared(IEnumerable<Type> contracts) =>
        contracts.Sum(type => type.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly).Length);

    List<string> Violations(string[] folders, string[] forbidden, string[] exceptions)
    {
        var root = Path.Combine(RepositoryRoot(), "src", "Converge");
        var found = new List<string>();
        var files = 0;
        foreach (var folder in folders)
        {
            foreach (var file in Directory.EnumerateFiles(Path.Combine(root, folder), "*.cs", SearchOption.AllDirectories))
            {
                if (exceptions.Contains(Path.GetFileName(file)))
                {
                    continue;
                }

                files++;
                var tree = CSharpSyntaxTree.ParseText(File.ReadAllText(file));
                found.AddRange(References(tree, forbidden).Select(reference => $"{Path.GetRelativePath(root, file)}: {reference}"));
            }
        }

        output.WriteLine($"{files} files read in {string.Join(", ", folders)}");
        Assert.True(files > 0, "no source files found: the check would pass without reading anything");
        return found;
    }

    /// <summary>Using directives and qualified names (not comments) that reach one of <paramref name="forbidden"/> under <c>Converge</c>.</summary>
    static List<string> References(SyntaxTree tree, string[] forbidden)
    {
        bool Reaches(string name) => forbidden.Any(part =>
            name == $"Converge.{part}" || name.StartsWith($"Converge.{part}.", StringComparison.Ordinal) || name.StartsWith(part + ".", StringComparison.Ordinal));

        var root = tree.GetCompilationUnitRoot();
        var found = root.Usings.Select(u => u.Name?.ToString() ?? string.Empty).Where(Reaches).Select(name => "using " + name).ToList();
        foreach (var node in root.DescendantNodes())
        {
            // The outermost qualified name or member access only, so that A.B.C is reported once.
            if (node is QualifiedNameSyntax or MemberAccessExpressionSyntax
                && node.Parent is not (QualifiedNameSyntax or MemberAccessExpressionSyntax)
                && node.FirstAncestorOrSelf<UsingDirectiveSyntax>() is null
                && node.FirstAncestorOrSelf<BaseNamespaceDeclarationSyntax>() is var ns
                && (ns is null || !ns.Name.Span.Contains(node.Span))
                && Reaches(node.ToString()))
            {
                found.Add(node.ToString());
            }
        }

        return found;
    }

    static string RepositoryRoot()
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, "Converge.slnx")))
            {
                return folder.FullName;
            }
        }

        throw new InvalidOperationException($"No Converge.slnx above {AppContext.BaseDirectory}: the architecture tests read the sources of the repository they were built from.");
    }
}
