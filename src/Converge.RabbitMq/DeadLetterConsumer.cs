using Converge.Storage;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace Converge.RabbitMq;

/// <summary>
/// Consumes the queue behind the dead-letter exchange: every message the broker dead-letters (it exceeded the
/// delivery limit, was rejected, expired) becomes a dead letter in the store, with the broker's reason, where
/// <c>converge dead-letters</c> lists it and a retry puts it back on its queue. Acknowledged only after the store
/// committed it.
/// </summary>
internal sealed class DeadLetterConsumer : IDisposable
{
    static readonly TimeSpan RetryPause = TimeSpan.FromSeconds(1);

    readonly RabbitMqTransport _transport;
    readonly SemaphoreSlim _starting = new(1, 1);
    readonly SemaphoreSlim _settling = new(1, 1);
    IChannel? _channel;
    IChannel? _closing;

    public DeadLetterConsumer(RabbitMqTransport transport) => _transport = transport;

    public bool IsConsuming => _channel is { IsOpen: true };

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (IsConsuming)
        {
            return;
        }

        await _starting.WaitAsync(cancellationToken);
        try
        {
            if (IsConsuming)
            {
                return;
            }

            var channel = await _transport.Connection.CreateChannelAsync(confirms: false, cancellationToken);
            try
            {
                await channel.BasicQosAsync(0, 16, global: false, cancellationToken);
                var consumer = new AsyncEventingBasicConsumer(channel);
                consumer.ReceivedAsync += (_, delivery) => OnReceivedAsync(channel, delivery);
                await channel.BasicConsumeAsync(_transport.BrokerName(_transport.Options.DeadLetterQueue), autoAck: false, consumer, cancellationToken);
                _channel = channel;
            }
            catch
            {
                await BrokerConnection.CloseQuietlyAsync(channel);
                throw;
            }
        }
        finally
        {
            _starting.Release();
        }
    }

    async Task OnReceivedAsync(IChannel channel, BasicDeliverEventArgs args)
    {
        var body = args.Body.ToArray();
        var properties = args.BasicProperties;
        var headers = properties.Headers;
        var brokerReason = AmqpEnvelope.Text(headers, "x-first-death-reason") ?? "unknown";
        var brokerQueue = AmqpEnvelope.Text(headers, "x-first-death-queue") ?? args.RoutingKey;
        var queue = _transport.ConvergeName(brokerQueue) ?? brokerQueue;
        var envelope = AmqpEnvelope.TryRead(properties, body, out var read, out var invalid) ? read : AmqpEnvelope.BestEffort(properties, body, _transport.Time.GetUtcNow());
        var attemptsMade = AmqpEnvelope.AttemptsMade(properties);
        var (reason, attempts, explanation) = brokerReason switch
        {
            "delivery_limit" => (DeadLetterReasons.MaxAttemptsExceeded, attemptsMade + _transport.Options.DeliveryLimit,
                $"RabbitMQ dead-lettered the message from queue '{brokerQueue}' at its delivery limit ({_transport.Options.DeliveryLimit}): it was delivered again and again without an acknowledgement, each consumer that received it stopped, crashed or lost its connection before finishing."),
            "rejected" => (RabbitMqDeadLetterReasons.Rejected, attemptsMade + 1, $"A consumer of queue '{brokerQueue}' rejected the message without requeueing it."),
            "expired" => (RabbitMqDeadLetterReasons.Expired, attemptsMade, $"The message expired on queue '{brokerQueue}' before it was delivered."),
            _ => (RabbitMqDeadLetterReasons.Other, attemptsMade, $"RabbitMQ dead-lettered the message from queue '{brokerQueue}' for reason '{brokerReason}'."),
        };
        if (invalid is not null)
        {
            explanation += " It is not a Converge envelope either: " + invalid;
        }

        try
        {
            await using var transaction = await _transport.Store.BeginAsync(CancellationToken.None);
            await transaction.RecordDeadLetterAsync(
                new DeadLetterRecord(queue, envelope, reason)
                {
                    Exception = explanation,
                    Attempts = attempts,
                    History = AmqpEnvelope.History(properties),
                    Priority = AmqpEnvelope.Priority(properties),
                },
                CancellationToken.None);
            await transaction.CommitAsync(CancellationToken.None);
        }
        catch (Exception exception)
        {
            // The store is failing: leave the message on the broker and try again after a pause (this queue has no
            // delivery limit, so a quick requeue would spin).
            RabbitMqLog.DeadLetterFailed(_transport.Logger, exception, brokerQueue);
            await Task.Delay(RetryPause, _transport.Time);
            await Settle(channel, args.DeliveryTag, acknowledge: false);
            return;
        }

        RabbitMqLog.BrokerDeadLettered(_transport.Logger, envelope.MessageId, queue, brokerReason);
        await Settle(channel, args.DeliveryTag, acknowledge: true);
    }

    async Task Settle(IChannel channel, ulong tag, bool acknowledge)
    {
        // Never while the channel is being closed: a settlement arriving after the close fails the whole connection.
        await _settling.WaitAsync();
        try
        {
            if (!channel.IsOpen || ReferenceEquals(channel, _closing))
            {
                return;
            }

            if (acknowledge)
            {
                await channel.BasicAckAsync(tag, multiple: false);
            }
            else
            {
                await channel.BasicNackAsync(tag, multiple: false, requeue: true);
            }
        }
        finally
        {
            _settling.Release();
        }
    }

    public async Task StopAsync()
    {
        if (_channel is { } channel)
        {
            // Settle nothing more on it, but do not hold the semaphore while closing: the close waits for the delivery
            // handler, which may be waiting to settle.
            _channel = null;
            await _settling.WaitAsync();
            _closing = channel;
            _settling.Release();
            await BrokerConnection.CloseQuietlyAsync(channel);
        }
    }

    public void Dispose()
    {
        _starting.Dispose();
        _settling.Dispose();
    }
}
