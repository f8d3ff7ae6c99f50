using System.Collections.Concurrent;

namespace Converge.AspNetCore.Tests;

/// <summary>
/// Cuts responses short, as a network does: after a random number of bytes (anywhere, mid-line included) the
/// connection is closed and the read fails with an <see cref="IOException"/>, until <paramref name="cuts"/> were made.
/// Records each request's URL and <c>Last-Event-ID</c>.
/// </summary>
internal sealed class CuttingHandler(int cuts, int maxBytesBetweenCuts, int seed) : DelegatingHandler(new SocketsHttpHandler())
{
    readonly Random _random = new(seed);
    int _made;

    public int Cuts => Volatile.Read(ref _made);

    public ConcurrentQueue<(string Uri, string? LastEventId)> Requests { get; } = new();

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        Requests.Enqueue((request.RequestUri!.PathAndQuery, request.Headers.TryGetValues("Last-Event-ID", out var ids) ? ids.Single() : null));
        var response = await base.SendAsync(request, cancellationToken);
        if (Cuts >= cuts || !response.IsSuccessStatusCode)
        {
            return response;
        }

        int budget;
        lock (_random)
        {
            budget = _random.Next(1, maxBytesBetweenCuts);
        }

        var inner = await response.Content.ReadAsStreamAsync(cancellationToken);
        var content = new StreamContent(new CuttingStream(inner, budget, () => Interlocked.Increment(ref _made)));
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
                await inner.DisposeAsync();
                cut();
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
