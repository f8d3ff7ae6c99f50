using System.Text.Json;

namespace Converge.Contracts;

/// <summary>
/// The message types of an application in one place, for its own <c>AddConverge</c> and for
/// <c>converge contracts snapshot|check</c>, which loads the application's assembly, creates every public class that
/// implements this interface with its public parameterless constructor, and describes what they register.
/// </summary>
/// <example>
/// <code>
/// public sealed class ShopContracts : IConvergeContracts
/// {
///     public void Register(MessageTypeRegistry messages) => messages
///         .Register&lt;OrderPlacedV1&gt;("shop.order-placed", 1)
///         .Register&lt;OrderPlaced&gt;("shop.order-placed", 2)
///         .Upcast&lt;OrderPlacedV1, OrderPlaced&gt;(v1 => new OrderPlaced(v1.OrderId, v1.Amount, Currency: "EUR"));
/// }
///
/// services.AddConverge(o => new ShopContracts().Register(o.Messages));
/// </code>
/// </example>
public interface IConvergeContracts
{
    /// <summary>
    /// Registers the message types, upcasters and aliases. Must do nothing else: the contracts check calls it outside
    /// the application, with no services, configuration or store.
    /// </summary>
    void Register(MessageTypeRegistry messages);

    /// <summary>
    /// The JSON options the application's serializer uses, which decide the field names and types a contract
    /// describes. The default is <see cref="JsonSerializerDefaults.Web"/>, as <see cref="SystemTextJsonMessageSerializer"/>
    /// uses unless given others; override it when the application passes its own options.
    /// </summary>
    JsonSerializerOptions SerializerOptions => new(JsonSerializerDefaults.Web);
}
