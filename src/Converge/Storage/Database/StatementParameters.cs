namespace Converge.Storage;

/// <summary>The (name, value) pairs handlers and jobs pass with their SQL, as <see cref="IDatabaseTransaction"/> takes them.</summary>
internal static class StatementParameters
{
    public static KeyValuePair<string, object?>[] From((string Name, object? Value)[] parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var pairs = new KeyValuePair<string, object?>[parameters.Length];
        for (var i = 0; i < parameters.Length; i++)
        {
            pairs[i] = new KeyValuePair<string, object?>(parameters[i].Name, parameters[i].Value);
        }

        return pairs;
    }
}
