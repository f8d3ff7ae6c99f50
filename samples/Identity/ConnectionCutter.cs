namespace Converge.Samples.Identity;

/// <summary>
/// A phone's network between the clients and the service: a share of the responses (<paramref name="cutShare"/>) is
/// cut after a random number of bytes, anywhere, mid-event included, and the read fails with an
/// <see cref="IOException"/>, as when a connection drops. Seeded, so a run cuts the same way each time it is given the
/// same traffic.
/// </summary>
public sealed class ConnectionCutter(double cutShare, int maxBytesBeforeCut, int seed) : DelegatingHandler(new SocketsHttpHandler
{
    // A response the client stops reading is closed at once, as a phone that drops does; by default the handler would
    // read on for up to 2 s to reuse the connection, and a followed log response never ends.
    MaxResponseDrainSize = 0,
})
{
    readonly Random _random = new(seed);
    long _cuts;
    long _responses;

    /// <summary>Responses cut short.</summary>
    public long Cuts => Interlocked.Read(ref _cuts);

    /// <summary>Responses received, the reconnections included.</summary>
    public long Responses => Interlocked.Read(ref _responses);

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var response = await base.SendAsync(request, cancellationToken);
        Interlocked.Increment(ref _responses);
        int budget;
        lock (_random)
        {
            if (!response.IsSuccessStatusCode || _random.NextDouble() >= cutShare)
            {
                return response;
            }

            budget = _random.Next(1, maxBytesBeforeCut);
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
