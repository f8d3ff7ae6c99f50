using System.Collections.Concurrent;
using Converge.Contracts;
using Converge.Storage;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;

namespace Converge.RabbitMq;

/// <summary>
/// The event log mirrored to a stream. The store's log stays the source of truth (it assigns positions); one process
/// at a time, the one holding an exclusive queue on the broker as a lock, publishes events in position order with
/// publisher confirms, each carrying its position in a header, and records how far it got as a checkpoint row in the
/// store. Readers attach to the stream at an offset found from those positions and skip what they do not need;
/// whatever the stream does not hold (not relayed yet, or past its retention) is read from the store.
/// </summary>
internal sealed class LogStream : IAsyncDisposable
{
    /// <summary>The lock queue's name is the stream's with this suffix.</summary>
    public const string LockSuffix = ".relay-lock";

    const int ConfirmWindow = BrokerConnection.ConfirmWindow;
    const int MaxCursors = 16;
    const ushort CursorPrefetch = 512;
    const int IndexEvery = 256;
    static readonly TimeSpan LockRetry = TimeSpan.FromSeconds(2);

    readonly RabbitMqTransport _transport;
    readonly Doorbell _wake = new();
    readonly ConcurrentBag<Cursor> _idle = [];
    readonly SortedList<long, long> _index = [];
    IChannel? _publisher;
    int _lockGeneration;
    long _relayed;
    long _readFromStream;

    public LogStream(RabbitMqTransport transport, string stream)
    {
        _transport = transport;
        BrokerName = transport.BrokerName(stream);
        LockName = BrokerName + LockSuffix;
        RelayCheckpoint = "rabbitmq-stream:" + BrokerName;
    }

    /// <summary>The stream on the broker.</summary>
    public string BrokerName { get; }

    string LockName { get; }

    /// <summary>The consumer-group row in the store where the relay records the last position it published.</summary>
    public string RelayCheckpoint { get; }

    /// <summary>Events handed to readers from the stream (not the store), for tests and diagnostics.</summary>
    public long EventsReadFromStream => Interlocked.Read(ref _readFromStream);

    /// <summary>Whether this process holds the relay lock.</summary>
    public bool IsRelaying => _lockGeneration != 0 && _lockGeneration == _transport.Connection.Generation && _transport.Connection.IsOpen;

    RabbitMqTransportOptions Options => _transport.Options;

    public void Wake() => _wake.Ring();

    /// <summary>Takes the relay lock when free and mirrors new events while holding it.</summary>
    public async Task RunAsync(CancellationToken stopping)
    {
        var failures = 0;
        while (!stopping.IsCancellationRequested)
        {
            var wait = Options.RelayPollInterval;
            try
            {
                if (!_transport.Connection.IsOpen)
                {
                    // The supervisor reconnects (and reports the outage); it wakes the relay once connected.
                    await _wake.WaitAsync(wait, _transport.Time, stopping);
                    continue;
                }

                if (!await HoldLockAsync(stopping))
                {
                    wait = LockRetry;
                }
                else if (await RelayBatchAsync(stopping) >= Options.RelayBatchSize)
                {
                    continue;
                }

                failures = 0;
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                break;
            }
            catch (Exception exception)
            {
                var delay = _transport.Backoff(++failures);
                RabbitMqLog.LogRelayFailed(_transport.Logger, exception, BrokerName, delay);
                if (!await RabbitMqTransport.PausedAsync(Task.Delay(delay, _transport.Time, stopping)))
                {
                    break;
                }

                continue;
            }

            if (!await RabbitMqTransport.PausedAsync(_wake.WaitAsync(wait, _transport.Time, stopping)))
            {
                break;
            }
        }
    }

    /// <summary>
    /// Holds the lock: an exclusive queue, which the broker lets one connection declare and deletes when that
    /// connection closes, so a process that dies or loses the broker releases it without help.
    /// </summary>
    async Task<bool> HoldLockAsync(CancellationToken cancellationToken)
    {
        if (IsRelaying)
        {
            return true;
        }

        await _transport.EnsureTopologyAsync(cancellationToken);
        var generation = _transport.Connection.Generation;
        var channel = await _transport.Connection.CreateChannelAsync(confirms: false, cancellationToken);
        try
        {
            await channel.QueueDeclareAsync(LockName, durable: false, exclusive: true, autoDelete: true, arguments: null, cancellationToken: cancellationToken);
        }
        catch (OperationInterruptedException exception) when (exception.ShutdownReason?.ReplyCode == Constants.ResourceLocked)
        {
            return false;
        }
        finally
        {
            await BrokerConnection.CloseQuietlyAsync(channel);
        }

        // Resume where the last holder's confirmed progress ends; what it published after that is published again,
        // and readers skip positions they have passed.
        _relayed = (await _transport.Store.GetConsumerGroupAsync(RelayCheckpoint, cancellationToken))?.Position ?? 0;
        _lockGeneration = generation;
        RabbitMqLog.LogRelayStarted(_transport.Logger, BrokerName, _relayed);
        return true;
    }

    async Task<int> RelayBatchAsync(CancellationToken cancellationToken)
    {
        var events = await _transport.Store.ReadLogAsync(_relayed, Options.RelayBatchSize, cancellationToken);
        if (events.Count == 0)
        {
            return 0;
        }

        var publisher = await PublisherAsync(cancellationToken);
        using var deadline = new CancellationTokenSource(Options.PublishTimeout, _transport.BrokerTime);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token);
        var confirmed = _relayed;
        Exception? error = null;
        var pending = new List<(long Position, Task Confirm)>(ConfirmWindow);

        async Task AwaitConfirmsAsync()
        {
            foreach (var (position, confirm) in pending)
            {
                try
                {
                    await confirm;
                    if (error is null)
                    {
                        confirmed = position;
                    }
                }
                catch (Exception exception)
                {
                    // Only the prefix before the first failure counts as relayed: the stream must hold every event
                    // after the checkpoint, in order.
                    error ??= exception;
                }
            }

            pending.Clear();
        }

        foreach (var logEvent in events)
        {
            if (error is not null)
            {
                break;
            }

            try
            {
                pending.Add((logEvent.Position, publisher.BasicPublishAsync(string.Empty, BrokerName, mandatory: true, AmqpEnvelope.ForEvent(logEvent), logEvent.Envelope.Body, timeout.Token).AsTask()));
            }
            catch (Exception exception)
            {
                error ??= exception;
                break;
            }

            if (pending.Count == ConfirmWindow)
            {
                await AwaitConfirmsAsync();
            }
        }

        await AwaitConfirmsAsync();
        if (confirmed > _relayed)
        {
            await using var transaction = await _transport.Store.BeginAsync(CancellationToken.None);
            if (await transaction.SaveConsumerGroupAsync(RelayCheckpoint, _relayed, confirmed, 0, null, CancellationToken.None))
            {
                await transaction.CommitAsync(CancellationToken.None);
                _relayed = confirmed;
            }
            else
            {
                // Another relay moved it (the lock changed hands): take its word.
                _relayed = (await _transport.Store.GetConsumerGroupAsync(RelayCheckpoint, CancellationToken.None))?.Position ?? _relayed;
            }
        }

        if (error is not null)
        {
            throw new IOException($"RabbitMQ did not confirm every event published to stream '{BrokerName}'; the relay publishes them again from position {_relayed}.", error);
        }

        return events.Count;
    }

    async Task<IChannel> PublisherAsync(CancellationToken cancellationToken)
    {
        if (_publisher is { IsOpen: true } open)
        {
            return open;
        }

        if (_publisher is { } old)
        {
            _publisher = null;
            await BrokerConnection.CloseQuietlyAsync(old);
        }

        return _publisher = await _transport.Connection.CreateChannelAsync(confirms: true, cancellationToken);
    }

    /// <summary>
    /// Reads up to <paramref name="max"/> events after <paramref name="afterPosition"/>: from the stream as far as the
    /// relay has confirmed it, from the store beyond that (and whenever the stream cannot serve).
    /// </summary>
    public async ValueTask<IReadOnlyList<LogEvent>> ReadAsync(long afterPosition, int max, CancellationToken cancellationToken)
    {
        if (max <= 0 || !_transport.Connection.IsOpen)
        {
            return await _transport.Store.ReadLogAsync(afterPosition, max, cancellationToken);
        }

        var relayed = (await _transport.Store.GetConsumerGroupAsync(RelayCheckpoint, cancellationToken))?.Position ?? 0;
        if (afterPosition >= relayed)
        {
            return await _transport.Store.ReadLogAsync(afterPosition, max, cancellationToken);
        }

        Cursor? cursor = null;
        try
        {
            cursor = TakeCursor(afterPosition) ?? await OpenCursorAsync(afterPosition, cancellationToken);
            var events = await cursor.ReadAsync(afterPosition, max, relayed, Options.DeliveryWait, cancellationToken);
            if (events.Count == 0 || (cursor.FromFirst && events[0].Position > afterPosition + 1 && await MissingFromStreamAsync(afterPosition, events[0].Position, cancellationToken)))
            {
                // The stream holds nothing usable here (its retention dropped the events, or it lags): the store does.
                await CloseAsync(cursor);
                cursor = null;
                return await _transport.Store.ReadLogAsync(afterPosition, max, cancellationToken);
            }

            cursor.FromFirst = false;
            Interlocked.Add(ref _readFromStream, events.Count);
            Remember(cursor.Indexed);
            if (events.Count < max)
            {
                // The stream ends where the relay has got to; what committed after that is in the store, and a read
                // returns what the store would, so a reader never takes a short read for the end of the log.
                events.AddRange(await _transport.Store.ReadLogAsync(events[^1].Position, max - events.Count, cancellationToken));
            }

            return events;
        }
        catch (Exception exception) when (exception is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            RabbitMqLog.StreamReadFailed(_transport.Logger, exception, BrokerName);
            if (cursor is not null)
            {
                await CloseAsync(cursor);
                cursor = null;
            }

            return await _transport.Store.ReadLogAsync(afterPosition, max, cancellationToken);
        }
        finally
        {
            if (cursor is not null)
            {
                await ReturnCursorAsync(cursor);
            }
        }
    }

    /// <summary>Whether the store has events between two positions the stream skipped.</summary>
    async Task<bool> MissingFromStreamAsync(long afterPosition, long firstInStream, CancellationToken cancellationToken)
    {
        var stored = await _transport.Store.ReadLogAsync(afterPosition, 1, cancellationToken);
        return stored.Count > 0 && stored[0].Position < firstInStream;
    }

    Cursor? TakeCursor(long afterPosition)
    {
        var skipped = new List<Cursor>();
        Cursor? found = null;
        while (_idle.TryTake(out var cursor))
        {
            // A cursor a little behind serves too (it skips what the reader has passed): a read topped up from the
            // store leaves its cursor where the stream ended.
            if (cursor.Position <= afterPosition && afterPosition - cursor.Position <= CursorPrefetch && cursor.IsOpen)
            {
                found = cursor;
                break;
            }

            skipped.Add(cursor);
        }

        foreach (var cursor in skipped)
        {
            _idle.Add(cursor);
        }

        return found;
    }

    async Task ReturnCursorAsync(Cursor cursor)
    {
        _idle.Add(cursor);
        while (_idle.Count > MaxCursors && _idle.TryTake(out var evicted))
        {
            if (ReferenceEquals(evicted, cursor))
            {
                _idle.Add(evicted);
                break;
            }

            await CloseAsync(evicted);
        }
    }

    /// <summary>A cursor that starts at an offset at or before the one of <paramref name="afterPosition"/>.</summary>
    async Task<Cursor> OpenCursorAsync(long afterPosition, CancellationToken cancellationToken)
    {
        var (offset, fromFirst) = await StartOffsetAsync(afterPosition, cancellationToken);
        var cursor = new Cursor(this, afterPosition) { FromFirst = fromFirst };
        await cursor.OpenAsync(offset is { } start ? start : "first", cancellationToken);
        return cursor;
    }

    /// <summary>
    /// Where to attach for <paramref name="afterPosition"/>: the highest offset known to hold a position at or before
    /// it. Known from earlier reads in this process; otherwise found by a binary search over the stream's offsets,
    /// reading the position header of one message per probe. Relayed events are in position order, except that a new
    /// relay publishes again what the last one published after its checkpoint; from any offset onwards every later
    /// position still follows, so any such offset is a safe start.
    /// </summary>
    internal async Task<(long? Offset, bool FromFirst)> StartOffsetAsync(long afterPosition, CancellationToken cancellationToken)
    {
        lock (_index)
        {
            var i = UpperBound(afterPosition);
            if (i >= 0)
            {
                return (_index.Values[i], false);
            }
        }

        if (await ProbeAsync("first", cancellationToken) is not { } first)
        {
            return (null, true);
        }

        if (first.Position > afterPosition)
        {
            return (first.Offset, true);
        }

        var last = await ProbeAsync("last", cancellationToken);
        if (last is null || last.Value.Position <= afterPosition)
        {
            return (last?.Offset ?? first.Offset, false);
        }

        var (low, high) = (first.Offset, last.Value.Offset);
        for (var probes = 0; high - low > 1 && probes < 64; probes++)
        {
            var middle = low + ((high - low) / 2);
            if (await ProbeAsync(middle, cancellationToken) is not { } found || found.Offset >= high)
            {
                high = middle;
            }
            else if (found.Position <= afterPosition)
            {
                low = found.Offset;
            }
            else
            {
                high = middle;
            }
        }

        return (low, false);
    }

    /// <summary>Index of the last entry at or before <paramref name="position"/>; -1 when none.</summary>
    int UpperBound(long position)
    {
        var keys = _index.Keys;
        int low = 0, high = keys.Count - 1, found = -1;
        while (low <= high)
        {
            var middle = (low + high) / 2;
            if (keys[middle] <= position)
            {
                found = middle;
                low = middle + 1;
            }
            else
            {
                high = middle - 1;
            }
        }

        return found;
    }

    void Remember(List<(long Position, long Offset)> seen)
    {
        if (seen.Count == 0)
        {
            return;
        }

        lock (_index)
        {
            foreach (var (position, offset) in seen)
            {
                _index[position] = offset;
            }

            while (_index.Count > 4096)
            {
                _index.RemoveAt(_index.Count / 2);
            }
        }

        seen.Clear();
    }

    /// <summary>The first message at or after <paramref name="offset"/> (an offset or "first"/"last"): its offset and position.</summary>
    async Task<(long Offset, long Position)?> ProbeAsync(object offset, CancellationToken cancellationToken)
    {
        var minimum = offset is long at ? at : long.MinValue;
        var found = new TaskCompletionSource<(long, long)?>(TaskCreationOptions.RunContinuationsAsynchronously);
        var channel = await _transport.Connection.CreateChannelAsync(confirms: false, cancellationToken);
        using var settling = new SemaphoreSlim(1, 1);
        var closing = false;
        try
        {
            await channel.BasicQosAsync(0, 64, global: false, cancellationToken);
            var consumer = new AsyncEventingBasicConsumer(channel);
            consumer.ReceivedAsync += async (_, args) =>
            {
                // A stream delivers whole chunks: messages before the requested offset come first and are skipped.
                var messageOffset = AmqpEnvelope.Number(args.BasicProperties.Headers, "x-stream-offset");
                var position = AmqpEnvelope.Number(args.BasicProperties.Headers, RabbitMqHeaders.Position);
                if (messageOffset >= minimum && position is not null)
                {
                    found.TrySetResult((messageOffset.Value, position.Value));
                    return;
                }

                // Credit for the rest of the chunk; never once the channel is closing (that would fail the connection).
                await settling.WaitAsync(CancellationToken.None);
                try
                {
                    if (!closing && channel.IsOpen)
                    {
                        await channel.BasicAckAsync(args.DeliveryTag, multiple: false);
                    }
                }
                finally
                {
                    settling.Release();
                }
            };
            await channel.BasicConsumeAsync(BrokerName, autoAck: false, string.Empty, noLocal: false, exclusive: false,
                new Dictionary<string, object?> { ["x-stream-offset"] = offset }, consumer, cancellationToken);
            return await found.Task.WaitAsync(Options.DeliveryWait, _transport.BrokerTime, cancellationToken);
        }
        catch (TimeoutException)
        {
            return null;
        }
        finally
        {
            await settling.WaitAsync(CancellationToken.None);
            closing = true;
            settling.Release();
            await BrokerConnection.CloseQuietlyAsync(channel);
        }
    }

    static Task CloseAsync(Cursor cursor) => cursor.CloseAsync();

    public async ValueTask DisposeAsync()
    {
        while (_idle.TryTake(out var cursor))
        {
            await cursor.CloseAsync();
        }

        if (_publisher is { } publisher)
        {
            _publisher = null;
            await BrokerConnection.CloseQuietlyAsync(publisher);
        }
    }

    /// <summary>
    /// A consumer attached to the stream, kept between reads: a consumer group that reads on from where its last read
    /// ended continues on the same cursor, without attaching again.
    /// </summary>
    sealed class Cursor(LogStream stream, long position)
    {
        readonly ConcurrentQueue<(ulong Tag, long Offset, LogEvent? Event)> _buffer = new();
        readonly Doorbell _arrived = new();
        IChannel? _channel;
        ulong _lastTag;

        /// <summary>The position the next read continues after.</summary>
        public long Position { get; private set; } = position;

        /// <summary>Attached at the stream's first message (nothing known to start later).</summary>
        public bool FromFirst { get; set; }

        /// <summary>Positions and offsets seen since the last look, sparse, for the stream's index.</summary>
        public List<(long Position, long Offset)> Indexed { get; } = [];

        public bool IsOpen => _channel is { IsOpen: true };

        public async Task OpenAsync(object offset, CancellationToken cancellationToken)
        {
            var channel = await stream._transport.Connection.CreateChannelAsync(confirms: false, cancellationToken);
            try
            {
                // Streams require a prefetch: it is the credit the broker delivers ahead.
                await channel.BasicQosAsync(0, CursorPrefetch, global: false, cancellationToken);
                var consumer = new AsyncEventingBasicConsumer(channel);
                consumer.ReceivedAsync += (_, args) =>
                {
                    var properties = args.BasicProperties;
                    var offsetOf = AmqpEnvelope.Number(properties.Headers, "x-stream-offset") ?? -1;
                    _buffer.Enqueue((args.DeliveryTag, offsetOf, AmqpEnvelope.TryReadEvent(properties, args.Body.ToArray())));
                    _arrived.Ring();
                    stream._transport.Signals.Log.Ring();
                    return Task.CompletedTask;
                };
                await channel.BasicConsumeAsync(stream.BrokerName, autoAck: false, string.Empty, noLocal: false, exclusive: false,
                    new Dictionary<string, object?> { ["x-stream-offset"] = offset }, consumer, cancellationToken);
                _channel = channel;
            }
            catch
            {
                await BrokerConnection.CloseQuietlyAsync(channel);
                throw;
            }
        }

        /// <summary>
        /// Takes the events after <paramref name="afterPosition"/> in order, up to <paramref name="max"/>, waiting for them
        /// (at most <paramref name="wait"/>) until it reaches <paramref name="relayed"/>, the last position the relay had
        /// confirmed on the stream.
        /// </summary>
        public async Task<List<LogEvent>> ReadAsync(long afterPosition, int max, long relayed, TimeSpan wait, CancellationToken cancellationToken)
        {
            var events = new List<LogEvent>(Math.Min(max, 256));
            var last = afterPosition;
            var started = stream._transport.BrokerTime.GetTimestamp();
            while (events.Count < max)
            {
                if (_buffer.TryDequeue(out var item))
                {
                    _lastTag = item.Tag;
                    if (item.Event is { } logEvent && logEvent.Position > last)
                    {
                        events.Add(logEvent);
                        last = logEvent.Position;
                        if (logEvent.Position % IndexEvery == 0 || Indexed.Count == 0)
                        {
                            Indexed.Add((logEvent.Position, item.Offset));
                        }
                    }

                    continue;
                }

                // Everything up to the relayed position is on the stream: read on until there, as the store would.
                var remaining = wait - stream._transport.BrokerTime.GetElapsedTime(started);
                if (last >= relayed || remaining <= TimeSpan.Zero)
                {
                    break;
                }

                await _arrived.WaitAsync(remaining, stream._transport.BrokerTime, cancellationToken);
            }

            if (_lastTag != 0 && _channel is { IsOpen: true } channel)
            {
                // Credit for the next deliveries (a stream keeps its messages either way).
                await channel.BasicAckAsync(_lastTag, multiple: true, cancellationToken);
                _lastTag = 0;
            }

            Position = last;
            return events;
        }

        public async Task CloseAsync()
        {
            if (_channel is { } channel)
            {
                _channel = null;
                await BrokerConnection.CloseQuietlyAsync(channel);
            }
        }
    }
}
