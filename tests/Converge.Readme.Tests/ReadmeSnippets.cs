using System.Text;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace Converge.Readme.Tests;

/// <summary>One <c>```csharp</c> block of the README: where it starts, under which heading, and its code.</summary>
public sealed record Snippet(int Line, string Heading, string Code, string? SkipReason)
{
    /// <summary>How a failure names the snippet: the README line of its fence and its section.</summary>
    public string Name => $"README.md line {Line} ({Heading})";
}

/// <summary>
/// Finds the README's C# snippets and compiles each as a reader would use it: in a console project with implicit
/// usings, the usings the README showed up to and including that snippet, and the scaffold of user types and variables
/// in Scaffold/ReadmeScaffold.cs. A snippet that is deliberately not a program says so on the line before its fence:
/// <c>&lt;!-- readme-test: skip REASON --&gt;</c>.
/// </summary>
public static class ReadmeSnippets
{
    public const string SkipMarker = "<!-- readme-test: skip";

    static readonly string[] ImplicitUsings =
    [
        // What a new console project (ImplicitUsings enabled) imports.
        "System", "System.Collections.Generic", "System.IO", "System.Linq", "System.Net.Http", "System.Threading", "System.Threading.Tasks",
    ];

    static readonly Lazy<IReadOnlyList<MetadataReference>> References = new(() =>
        ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!)
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(path => (MetadataReference)MetadataReference.CreateFromFile(path))
            .ToList());

    static readonly CSharpParseOptions Parse = new(LanguageVersion.Latest);

    public static string ReadmePath => Path.Combine(AppContext.BaseDirectory, "README.md");

    public static string ScaffoldPath => Path.Combine(AppContext.BaseDirectory, "Scaffold", "ReadmeScaffold.cs");

    /// <summary>Every <c>```csharp</c> block of <paramref name="markdown"/>, in order.</summary>
    public static IReadOnlyList<Snippet> Extract(string markdown)
    {
        var lines = markdown.ReplaceLineEndings("\n").Split('\n');
        var snippets = new List<Snippet>();
        var heading = "top";
        for (var i = 0; i < lines.Length; i++)
        {
            if (lines[i].StartsWith('#'))
            {
                heading = lines[i].TrimStart('#').Trim();
                continue;
            }

            if (lines[i].Trim() != "```csharp")
            {
                continue;
            }

            var start = i;
            var code = new StringBuilder();
            for (i++; i < lines.Length && lines[i].Trim() != "```"; i++)
            {
                code.Append(lines[i]).Append('\n');
            }

            string? skip = null;
            if (start > 0 && lines[start - 1].TrimStart().StartsWith(SkipMarker, StringComparison.Ordinal))
            {
                skip = lines[start - 1].Trim()[SkipMarker.Length..].Replace("-->", "", StringComparison.Ordinal).Trim();
            }

            snippets.Add(new Snippet(start + 1, heading, code.ToString(), skip));
        }

        return snippets;
    }

    /// <summary>
    /// Compiles <paramref name="snippets"/>[<paramref name="index"/>] with the usings of the snippets before it;
    /// returns its errors, each naming the snippet, the README line and the compiler's message (empty when it compiles).
    /// </summary>
    public static IReadOnlyList<string> Compile(IReadOnlyList<Snippet> snippets, int index, string scaffold)
    {
        var snippet = snippets[index];
        var tree = CSharpSyntaxTree.ParseText(snippet.Code, Parse, "snippet.cs");
        var root = (CompilationUnitSyntax)tree.GetRoot();
        var own = root.Usings.Select(u => u.ToString()).ToHashSet(StringComparer.Ordinal);
        var earlier = snippets.Take(index)
            .Where(s => s.SkipReason is null)
            .SelectMany(s => ((CompilationUnitSyntax)CSharpSyntaxTree.ParseText(s.Code, Parse).GetRoot()).Usings)
            .Select(u => u.ToString())
            .Where(u => !own.Contains(u))
            .Distinct(StringComparer.Ordinal)
            .ToList();

        // The usings carried over go on lines of their own before the snippet; error lines are mapped back past them.
        var source = string.Concat(earlier.Select(u => u + "\n")) + snippet.Code;
        var composedRoot = (CompilationUnitSyntax)CSharpSyntaxTree.ParseText(source, Parse).GetRoot();
        var snippetTrees = SplitIfTypesComeFirst(composedRoot, source);
        var declared = root.DescendantNodes().OfType<BaseTypeDeclarationSyntax>().Select(t => t.Identifier.Text).ToHashSet(StringComparer.Ordinal);
        var scaffoldRoot = CSharpSyntaxTree.ParseText(scaffold, Parse, "ReadmeScaffold.cs").GetRoot();
        scaffoldRoot = scaffoldRoot.RemoveNodes(
            scaffoldRoot.DescendantNodes().OfType<BaseTypeDeclarationSyntax>().Where(t => t.Parent is CompilationUnitSyntax && declared.Contains(t.Identifier.Text)),
            SyntaxRemoveOptions.KeepNoTrivia)!;
        var globals = CSharpSyntaxTree.ParseText(
            string.Concat(ImplicitUsings.Select(u => $"global using global::{u};\n")) + "global using static ReadmeScaffold;\n", Parse, "GlobalUsings.cs");

        var program = root.Members.OfType<GlobalStatementSyntax>().Any();
        var compilation = CSharpCompilation.Create(
            "ReadmeSnippet",
            [.. snippetTrees, CSharpSyntaxTree.Create((CSharpSyntaxNode)scaffoldRoot, Parse, "ReadmeScaffold.cs"), globals],
            References.Value,
            new CSharpCompilationOptions(
                program ? OutputKind.ConsoleApplication : OutputKind.DynamicallyLinkedLibrary,
                nullableContextOptions: NullableContextOptions.Enable));

        var codeLines = snippet.Code.Split('\n');
        return compilation.GetDiagnostics()
            .Where(d => d.Severity == DiagnosticSeverity.Error)
            .Select(d =>
            {
                var span = d.Location.GetLineSpan();
                if (d.Location.SourceTree is not { } where || !snippetTrees.Contains(where))
                {
                    return $"{snippet.Name}: {d.Id} in {span.Path}: {d.GetMessage(System.Globalization.CultureInfo.InvariantCulture)}";
                }

                var line = span.StartLinePosition.Line - earlier.Count;
                var text = line >= 0 && line < codeLines.Length ? codeLines[line].Trim() : "";
                return $"{snippet.Name}, README.md line {snippet.Line + 1 + line}: {d.Id}: {d.GetMessage(System.Globalization.CultureInfo.InvariantCulture)}\n    {text}";
            })
            .ToList();
    }

    /// <summary>
    /// A snippet that shows a class and then the statements that use it (a saga, then its registration) is two files
    /// to a reader: the class in one, the statements in Program.cs. C# wants top-level statements first in a file,
    /// so such a snippet is compiled as those two files, each keeping the snippet's line numbers (the other part
    /// blanked out). Any other snippet is one file.
    /// </summary>
    static List<SyntaxTree> SplitIfTypesComeFirst(CompilationUnitSyntax root, string source)
    {
        var members = root.Members;
        var firstType = members.IndexOf(m => m is not GlobalStatementSyntax);
        if (firstType < 0 || !members.Skip(firstType).Any(m => m is GlobalStatementSyntax))
        {
            return [CSharpSyntaxTree.ParseText(source, Parse, "snippet.cs")];
        }

        static string Blank(string text, IEnumerable<MemberDeclarationSyntax> remove)
        {
            var chars = text.ToCharArray();
            foreach (var member in remove)
            {
                for (var i = member.FullSpan.Start; i < member.FullSpan.End; i++)
                {
                    chars[i] = chars[i] is '\n' or '\r' ? chars[i] : ' ';
                }
            }

            return new string(chars);
        }

        return
        [
            CSharpSyntaxTree.ParseText(Blank(source, members.Where(m => m is not GlobalStatementSyntax)), Parse, "snippet.cs"),
            CSharpSyntaxTree.ParseText(Blank(source, members.Where(m => m is GlobalStatementSyntax)), Parse, "snippet.types.cs"),
        ];
    }
}
