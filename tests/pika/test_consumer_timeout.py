"""Consumer (delivery acknowledgement) timeout, as RabbitMQ's `consumer_timeout` does it:
a channel holding an unacked delivery for longer than the timeout is closed with
406 PRECONDITION_FAILED and its unacked messages are requeued.

Needs `--consumer-timeout 1` (seconds), so it only runs against a broker this suite starts.
(RabbitMQ 3.10 checks the timeout about once a minute and would need its config changed,
so this case was not run against the oracle; the reply text prefix is RabbitMQ's:
"PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used:
1800000 ms. This timeout value can be configured, see consumers doc guide to learn more".)
"""

import pika

from conftest import pump


def test_unacked_delivery_times_out_and_is_requeued(make_broker, connect):
    broker = make_broker("--consumer-timeout", "1")
    conn = connect(broker)
    ch = conn.channel()
    q = ch.queue_declare(queue='', durable=False).method.queue  # not exclusive: outlives ch
    ch.basic_publish(exchange='', routing_key=q, body=b'slow job')
    got = []
    ch.basic_consume(queue=q, on_message_callback=lambda c, m, p, b: got.append((m, b)))
    pump(conn, lambda: got, what="the delivery")
    assert got[0][1] == b'slow job' and not got[0][0].redelivered

    # Never ack; the broker closes the channel (not the connection) within a few seconds.
    pump(conn, lambda: ch.is_closed, timeout=10, what="the consumer timeout")
    assert conn.is_open
    reason = ch._closing_reason  # BlockingChannel keeps the broker's channel.close
    assert isinstance(reason, pika.exceptions.ChannelClosedByBroker), repr(reason)
    assert reason.reply_code == 406, reason
    assert reason.reply_text.startswith(
        f"PRECONDITION_FAILED - delivery acknowledgement on channel {ch.channel_number} "
        "timed out"), reason.reply_text

    # The message was requeued: another consumer gets it, marked redelivered, and can ack.
    other = connect(broker)
    ch2 = other.channel()
    again = []

    def on_message(c, method, props, body):
        again.append((method.redelivered, body))
        c.basic_ack(delivery_tag=method.delivery_tag)

    ch2.basic_consume(queue=q, on_message_callback=on_message)
    pump(other, lambda: again, what="the redelivery")
    assert again == [(True, b'slow job')]
    ch2.queue_delete(queue=q)
