"""Dead-lettering as pika sees it (issue 12): the x-death header in the exact wire order
RabbitMQ 3.10 writes (pika keeps a table's order in its dict), over a ring of three queues
that reject into each other, and the retry-with-delay pattern with a TTL'd retry queue."""

import pika

from conftest import get_message


def ring(ch, uniq):
    qs = [uniq(f"ring{i}") for i in range(3)]
    for i, q in enumerate(qs):
        ch.queue_declare(q, arguments={'x-dead-letter-exchange': '',
                                       'x-dead-letter-routing-key': qs[(i + 1) % 3]})
    return qs


def test_x_death_wire_order_over_a_reject_ring(connect, uniq):
    conn = connect()
    ch = conn.channel()
    qs = ring(ch, uniq)
    try:
        ch.confirm_delivery()
        ch.basic_publish('', qs[0], b'x', pika.BasicProperties(expiration='60000'))
        seen = []
        for hop in range(7):
            m, props, _ = get_message(ch, qs[hop % 3], auto_ack=False)
            if hop > 0:
                seen.append([(d['queue'], d['reason'], d['count'], list(d.keys()))
                             for d in props.headers['x-death']])
            ch.basic_reject(m.delivery_tag, requeue=False)
        # First death: unsorted entry keys, original-expiration kept; the headers sorted.
        first = seen[0][0]
        assert first[:3] == (qs[0], 'rejected', 1)
        assert first[3] == ['count', 'reason', 'queue', 'time', 'exchange', 'routing-keys',
                            'original-expiration']
        # Later deaths: sorted entry keys; the dying queue's entry first, and the others
        # regrouped (which reverses them, as rabbit_dead_letter's fold does).
        order = [[qs.index(e[0]) for e in s] for s in seen]
        counts = [[e[2] for e in s] for s in seen]
        assert order == [[0], [1, 0], [2, 0, 1], [0, 1, 2], [1, 2, 0], [2, 0, 1]], order
        assert counts[-1] == [2, 2, 2], counts
        # Only the first death saw an expiration (it is removed from the message then).
        by_queue = {e[0]: e[3] for e in seen[-1]}
        assert by_queue[qs[0]] == ['count', 'exchange', 'original-expiration', 'queue',
                                   'reason', 'routing-keys', 'time']
        assert by_queue[qs[1]] == ['count', 'exchange', 'queue', 'reason', 'routing-keys',
                                   'time']
        m, props, _ = get_message(ch, qs[7 % 3], auto_ack=True)
        assert list(props.headers.keys()) == ['x-death', 'x-first-death-exchange',
                                              'x-first-death-queue', 'x-first-death-reason']
        assert props.expiration is None
    finally:
        for q in qs:
            ch.queue_delete(q)
        conn.close()


def test_retry_with_delay(connect, uniq):
    conn = connect()
    ch = conn.channel()
    work, retry = uniq("work"), uniq("retry")
    ch.queue_declare(work, arguments={'x-dead-letter-exchange': '',
                                      'x-dead-letter-routing-key': retry})
    ch.queue_declare(retry, arguments={'x-message-ttl': 50, 'x-dead-letter-exchange': '',
                                       'x-dead-letter-routing-key': work})
    try:
        ch.basic_publish('', work, b'job')
        for attempt in range(1, 4):
            m, props, body = get_message(ch, work, auto_ack=False)
            assert body == b'job'
            if attempt > 1:
                by_queue = {d['queue']: d for d in props.headers['x-death']}
                assert by_queue[work]['count'] == attempt - 1
                assert by_queue[retry]['reason'] == 'expired'
                assert by_queue[retry]['count'] == attempt - 1
            ch.basic_reject(m.delivery_tag, requeue=False)
        m, props, _ = get_message(ch, work, auto_ack=True)
        assert props.headers['x-first-death-reason'] == 'rejected'
    finally:
        ch.queue_delete(work)
        ch.queue_delete(retry)
        conn.close()
