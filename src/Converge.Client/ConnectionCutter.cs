using System.Collections.Concurrent;

namespace Converge.Client;

/// <summary>
/// A handler that cuts responses short, as a phone's network does, to show that a <see cref="ConvergeLogClient"/> (or
/// any reader of yours) resumes without a gap or a duplicate: a response chosen to be cut fails with an
/// <see cref="IOException"/> after a random number of bytes (anywhere, mid-event included), and its connection is
/// closed. Seeded, so given the same traffic it cuts the same way. For tests and demos, never production.
/// </summary>
public sealed class ConnectionCutter : DelegatingHandler
{
    readonly Random _random;
    readonly double _share;
    readonly int _maxBytes;
    readonly long _maxCuts;
    long _cuts;
    long _responses;

    /// <summary>Creates the handler over <see cref="ConvergeLogClient.CreateHandler"/>.</summary>
    /// <param name="share">The share of successful responses cut, from 0 to 1 (1: every one).</param>
    /// <param name="maxBytesBeforeCut">A cut response carries from 1 to this many bytes first.</param>
    /// <param name="seed">Seeds which responses are cut and where.</param>
    /// <param name="maxCuts">Cut no more than this many responses (default: no limit).</param>
    public ConnectionCutter(double share, int maxBytesBeforeCut, int seed, long maxCuts = long.MaxValue)
        : base(ConvergeLogClient.CreateHandler())
    {
        ArgumentOutOfRangeException.ThrowIfNegative(share);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(share, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBytesBeforeCut, 2);
        _share = share;
        _maxBytes = maxBytesBeforeCut;
        _maxCuts = maxCuts;
        _random = new Random(seed);
    }

    /// <summary>Responses cut short so far.</summary>
    public long Cuts => Interlocked.Read(ref _cuts);

    /// <summary>Responses received so far, reconnections included.</summary>
    public long Responses => Interlocked.Read(ref _responses);

    /// <summary>Each request's path and query and its <c>Last-Event-ID</c> header, in order.</summary>
    public ConcurrentQueue<(string PathAndQuery, string? LastEventId)> Requests { get; } = new();

    /// <inheritdoc />
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        Requests.Enqueue((request.RequestUri?.PathAndQuery ?? string.Empty, request.Headers.TryGetValues(LogWire.LastEventIdHeader, out var ids) ? ids.FirstOrDefault() : null));
        var response = await base.SendAsync(request, cancellationToken);
        Interlocked.Increment(ref _responses);
        int budget;
        lock (_random)
        {
            if (!response.IsSuccessStatusCode || Interlocked.Read(ref _cuts) >= _maxCuts || _random.NextDouble() >= _share)
            {
                return response;
            }

            budget = _random.Next(1, _maxBytes);
        }

        var inner = await response.Content.ReadAsStreamAsync(cancellationToken);
        var content = new StreamContent(new CuttingStream(inner, budget, () => Interlocked.Increment(ref _cuts)));
        foreach (var header in response.Content.Headers)
        {
            content.Headers.TryAddWithoutValidation(header.Key, header.Value);
        }

        response.Content = content;
        return response;
    }

    sealed class CuttingStream(Stream inner, int budget, Action cut) : Stream
    {
        int _left = budget;
        bool _cut;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (_left <= 0)
            {
                if (!_cut)
                {
                    _cut = true;
                    await inner.DisposeAsync();
                    cut();
                }

                throw new IOException("The connection was cut.");
            }

            var read = await inner.ReadAsync(buffer[..Math.Min(buffer.Length, _left)], cancellationToken);
            _left -= read;
            return read;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
