using System.Reflection;
using System.Runtime.Loader;
using System.Text.Json;
using Converge.Contracts;

namespace Converge.Cli;

/// <summary>
/// The contracts an application's built assembly registers: the assembly is loaded in a context of its own, its
/// dependencies resolved from its deps.json, and every public class implementing <see cref="IConvergeContracts"/>
/// is created and asked to register. Converge itself and the framework are shared with the tool, so that the
/// classes implement the tool's <see cref="IConvergeContracts"/>.
/// </summary>
internal static class ContractAssembly
{
    public static LoadedContracts Load(string path)
    {
        var full = Path.GetFullPath(path);
        if (!File.Exists(full))
        {
            throw new CliException(CliApp.Usage, $"Assembly '{path}' does not exist. Build the application first and pass its output, for example --assembly bin/Release/net10.0/MyService.dll.");
        }

        Assembly assembly;
        try
        {
            assembly = new ContractLoadContext(full).LoadFromAssemblyPath(full);
        }
        catch (BadImageFormatException)
        {
            throw new CliException(CliApp.Usage, $"'{path}' is not a .NET assembly. Pass the .dll the build writes (not the apphost executable).");
        }

        Type[] types;
        try
        {
            types = assembly.GetExportedTypes();
        }
        catch (Exception exception) when (exception is ReflectionTypeLoadException or FileNotFoundException or FileLoadException)
        {
            throw new CliException(CliApp.Usage, $"The types of '{path}' cannot be loaded ({exception.Message}). Pass the assembly from the build output folder, beside its deps.json and dependencies.");
        }

        var contractTypes = types
            .Where(t => t is { IsClass: true, IsAbstract: false } && typeof(IConvergeContracts).IsAssignableFrom(t))
            .OrderBy(t => t.FullName, StringComparer.Ordinal)
            .ToList();
        if (contractTypes.Count == 0)
        {
            var lookalike = types.FirstOrDefault(t => t.GetInterfaces().Any(i => i.FullName == typeof(IConvergeContracts).FullName));
            throw new CliException(CliApp.Usage, lookalike is not null
                ? $"{lookalike.FullName} in '{path}' implements IConvergeContracts of another Converge ({lookalike.GetInterfaces().First(i => i.FullName == typeof(IConvergeContracts).FullName).Assembly.GetName().Version}) than this tool's ({typeof(IConvergeContracts).Assembly.GetName().Version}); use the converge tool of the version the application references."
                : $"'{path}' has no public class implementing Converge.Contracts.IConvergeContracts, so it registers no contracts this command can see. Add one whose Register(MessageTypeRegistry messages) registers the message types (and call it from AddConverge: new MyContracts().Register(o.Messages)).");
        }

        var registry = new MessageTypeRegistry();
        JsonSerializerOptions? options = null;
        foreach (var type in contractTypes)
        {
            if (type.GetConstructor(Type.EmptyTypes) is null)
            {
                throw new CliException(CliApp.Usage, $"{type.FullName} implements IConvergeContracts but has no public parameterless constructor; the contracts check creates it with one.");
            }

            var contracts = (IConvergeContracts)Activator.CreateInstance(type)!;
            try
            {
                contracts.Register(registry);
            }
            catch (Exception exception) when (exception is InvalidOperationException or ArgumentException)
            {
                throw new CliException(CliApp.Usage, $"{type.FullName}.Register failed: {exception.Message}");
            }

            options ??= contracts.SerializerOptions;
        }

        return new LoadedContracts(registry, options, [.. contractTypes.Select(t => t.FullName!)]);
    }

    sealed class ContractLoadContext(string path) : AssemblyLoadContext("converge-contracts: " + Path.GetFileName(path))
    {
        readonly AssemblyDependencyResolver _resolver = new(path);

        protected override Assembly? Load(AssemblyName assemblyName)
        {
            // Shared with the tool (the default context): Converge, whose interface the classes must implement, and
            // the framework, whose JsonSerializerOptions they hand over.
            if (assemblyName.Name is "Converge" || assemblyName.Name?.StartsWith("System.", StringComparison.Ordinal) == true)
            {
                return null;
            }

            return _resolver.ResolveAssemblyToPath(assemblyName) is { } resolved ? LoadFromAssemblyPath(resolved) : null;
        }

        protected override IntPtr LoadUnmanagedDll(string unmanagedDllName) =>
            _resolver.ResolveUnmanagedDllToPath(unmanagedDllName) is { } resolved ? LoadUnmanagedDllFromPath(resolved) : IntPtr.Zero;
    }
}

/// <summary>What an assembly's contract classes registered, and the serializer options they describe it with.</summary>
internal sealed record LoadedContracts(MessageTypeRegistry Messages, JsonSerializerOptions? SerializerOptions, IReadOnlyList<string> Sources)
{
    public ContractSnapshot Snapshot() => ContractSnapshot.Create(Messages, SerializerOptions);
}
