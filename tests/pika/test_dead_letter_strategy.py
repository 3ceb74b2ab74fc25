"""`x-dead-letter-strategy: at-least-once` as pika sees it (issue 12): a quorum queue's
poison message beyond its delivery limit moves to the dead-letter queue with reason
`delivery_limit`, and, while the dead-letter exchange does not exist, a rejected message
waits in its queue: not ready, not dropped, still counting against `x-max-length`."""

import pika

from conftest import get_message, wait_count


def declare_source(ch, name, dlx, **extra):
    args = {'x-queue-type': 'quorum', 'x-dead-letter-exchange': dlx,
            'x-dead-letter-strategy': 'at-least-once', 'x-overflow': 'reject-publish'}
    args.update(extra)
    ch.queue_declare(name, durable=True, arguments=args)


def test_a_poison_message_moves_with_reason_delivery_limit(connect, uniq):
    conn = connect()
    ch = conn.channel()
    dlx, src, dlq = uniq('dls-x'), uniq('dls-src'), uniq('dls-dlq')
    try:
        ch.exchange_declare(dlx, 'fanout', durable=True)
        ch.queue_declare(dlq, durable=True)
        ch.queue_bind(dlq, dlx)
        declare_source(ch, src, dlx, **{'x-delivery-limit': 1})
        ch.confirm_delivery()
        ch.basic_publish('', src, b'poison')
        for count in range(2):
            m, props, _ = get_message(ch, src, auto_ack=False)
            assert props.headers['x-delivery-count'] == count
            ch.basic_nack(m.delivery_tag, requeue=True)
        _, props, body = get_message(ch, dlq)
        assert body == b'poison'
        assert props.headers['x-first-death-reason'] == 'delivery_limit'
        assert props.headers['x-death'][0]['queue'] == src
        wait_count(conn, src, 0)
    finally:
        for q in (src, dlq):
            ch.queue_delete(q)
        ch.exchange_delete(dlx)
        conn.close()


def test_a_missing_dead_letter_exchange_keeps_the_message(connect, uniq):
    conn = connect()
    ch = conn.channel()
    src = uniq('dls-wait')
    try:
        declare_source(ch, src, uniq('dls-missing'), **{'x-max-length': 1})
        ch.confirm_delivery()
        ch.basic_publish('', src, b'kept')
        m, _, _ = get_message(ch, src, auto_ack=False)
        ch.basic_reject(m.delivery_tag, requeue=False)
        wait_count(conn, src, 0)
        assert ch.basic_get(src, auto_ack=True)[0] is None
        # The waiting one counts: the queue is at its limit of 1, so one more is taken
        # (a quorum queue refuses once over it) and the next is refused.
        ch.basic_publish('', src, b'fits')
        try:
            ch.basic_publish('', src, b'refused')
            assert False, 'published beyond the limit'
        except pika.exceptions.NackError:
            pass
    finally:
        ch.queue_delete(src)
        conn.close()
