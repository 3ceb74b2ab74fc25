"""Priority queues as pika sees them (issue 12): `x-max-priority` delivers the highest
priority first and FIFO within one priority (no priority = 0, above the maximum = the
maximum), requeued messages (nack, reject, a closed channel) go back to their place within
their priority, a consumer with prefetch sees the same order, and RabbitMQ's 406s for bad
values."""

import pika
import pytest

from conftest import expect_channel_error, get_message, pump, wait_count


def publish(ch, q, items):
    """Publishes (body, priority-or-None) pairs with confirms."""
    for body, p in items:
        ch.basic_publish('', q, body.encode(), pika.BasicProperties(priority=p))


def drain(ch, q):
    out = []
    while True:
        m, _, body = ch.basic_get(q, auto_ack=True)
        if m is None:
            return out
        out.append(body.decode())


def test_priority_order_with_requeues(connect, uniq):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = uniq('prio')
    ch.queue_declare(q, arguments={'x-max-priority': 10})
    try:
        publish(ch, q, [('a1', 1), ('a2', 1), ('n', None), ('b1', 5), ('b2', 5),
                        ('top', 200), ('a3', 1)])
        wait_count(conn, q, 7)
        other = conn.channel()
        m, _, body = get_message(other, q, auto_ack=False)
        assert body == b'top'  # 200 counts as 10
        taken = [ch.basic_get(q, auto_ack=False) for _ in range(4)]
        assert [t[2] for t in taken] == [b'b1', b'b2', b'a1', b'a2']
        ch.basic_nack(taken[3][0].delivery_tag, requeue=True)    # a2
        ch.basic_reject(taken[0][0].delivery_tag, requeue=True)  # b1
        ch.basic_nack(taken[2][0].delivery_tag, requeue=True)    # a1
        ch.basic_ack(taken[1][0].delivery_tag)                   # b2
        other.close()                                            # top comes back
        wait_count(conn, q, 6)
        got = []
        while True:
            m, _, body = ch.basic_get(q, auto_ack=True)
            if m is None:
                break
            got.append((body.decode(), m.redelivered))
        assert got == [('top', True), ('b1', True), ('a1', True), ('a2', True),
                       ('a3', False), ('n', False)]
    finally:
        ch.queue_delete(q)
        conn.close()


def test_a_consumer_sees_a_higher_priority_overtake(connect, uniq):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = uniq('prio-consume')
    ch.queue_declare(q, arguments={'x-max-priority': 5})
    try:
        publish(ch, q, [('low-1', 1), ('low-2', 1), ('mid', 2)])
        cch = conn.channel()
        cch.basic_qos(prefetch_count=1)
        seen = []
        cch.basic_consume(q, lambda c, m, p, body: seen.append((m.delivery_tag, body)))
        pump(conn, lambda: len(seen) == 1, what='the first delivery')
        publish(ch, q, [('high', 4)])
        for n in (2, 3, 4):
            cch.basic_ack(seen[-1][0])
            pump(conn, lambda: len(seen) == n, what=f'delivery {n}')
        cch.basic_ack(seen[-1][0])
        assert [b for _, b in seen] == [b'mid', b'high', b'low-1', b'low-2']
        cch.close()
    finally:
        ch.queue_delete(q)
        conn.close()


@pytest.mark.parametrize('value, why', [
    (-1, '{value_negative,-1}'),
    (256, '{max_value_exceeded,256}'),
    ('5', '"expected integer, got longstr"'),
    (True, '"expected integer, got bool"'),
])
def test_bad_max_priority_is_a_406(connect, uniq, value, why):
    conn = connect()
    ch = conn.channel()
    q = uniq('prio-bad')
    with expect_channel_error(406, f"PRECONDITION_FAILED - invalid arg 'x-max-priority' "
                                   f"for queue '{q}' in vhost '/': {why}"):
        ch.queue_declare(q, arguments={'x-max-priority': value})
    conn.close()


def test_max_priority_zero_is_fifo(connect, uniq):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = uniq('prio-zero')
    ch.queue_declare(q, arguments={'x-max-priority': 0})
    try:
        publish(ch, q, [('x', 0), ('y', 9), ('z', None)])
        assert drain(ch, q) == ['x', 'y', 'z']
    finally:
        ch.queue_delete(q)
        conn.close()
