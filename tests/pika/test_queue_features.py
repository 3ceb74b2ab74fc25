"""Issue 12's remaining bullets as pika sees them, each passing against RabbitMQ 3.10
(`WARREN_TEST_PORT=5672`) and Warren: the three overflow modes with publisher confirms,
per-message expiration and TTL 0, `x-expires`, the alternate exchange before `mandatory`,
consumer priorities, and a quorum queue's declaration rules and delivery limit."""

import pika
import pytest

from conftest import (eventually, expect_channel_error, get_message, pump, queue_exists,
                      wait_count)


def bodies(ch, q):
    out = []
    while True:
        m, _, body = ch.basic_get(q, auto_ack=True)
        if m is None:
            return out
        out.append(body.decode())


@pytest.mark.parametrize("overflow", ["drop-head", "reject-publish", "reject-publish-dlx"])
def test_overflow_modes_with_confirms(connect, uniq, overflow):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q, dlq = uniq('limited'), uniq('limited-dlq')
    ch.queue_declare(dlq)
    ch.queue_declare(q, arguments={'x-max-length': 2, 'x-overflow': overflow,
                                   'x-dead-letter-exchange': '',
                                   'x-dead-letter-routing-key': dlq})
    try:
        nacked = []
        for i in range(1, 5):
            try:
                ch.basic_publish('', q, f'm{i}'.encode())
            except pika.exceptions.NackError:
                nacked.append(f'm{i}')
        if overflow == 'drop-head':
            # Every publish is confirmed; the oldest are dropped and dead-lettered.
            assert nacked == []
            wait_count(conn, dlq, 2)
            assert bodies(ch, q) == ['m3', 'm4']
            assert bodies(ch, dlq) == ['m1', 'm2']
        else:
            # The newest are refused with a nack; -dlx dead-letters them too.
            assert nacked == ['m3', 'm4']
            assert bodies(ch, q) == ['m1', 'm2']
            if overflow == 'reject-publish-dlx':
                wait_count(conn, dlq, 2)
                assert bodies(ch, dlq) == ['m3', 'm4']
            else:
                assert bodies(ch, dlq) == []
    finally:
        ch.queue_delete(q)
        ch.queue_delete(dlq)
        conn.close()


def test_per_message_expiration_and_ttl_zero(connect, uniq):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = uniq('expiring')
    ch.queue_declare(q)
    try:
        ch.basic_publish('', q, b'short', pika.BasicProperties(expiration='50'))
        ch.basic_publish('', q, b'long', pika.BasicProperties(expiration='60000'))
        # The short one leaves the counts once it expired (it is at the head).
        wait_count(conn, q, 1, timeout=5.0)
        assert bodies(ch, q) == ['long']
        # TTL 0 with nobody to take it at once: never delivered.
        ch.basic_publish('', q, b'now-or-never', pika.BasicProperties(expiration='0'))
        wait_count(conn, q, 0)
        with expect_channel_error(406, 'PRECONDITION_FAILED - invalid expiration'):
            ch.basic_publish('', q, b'bad', pika.BasicProperties(expiration='soon'))
    finally:
        ch2 = conn.channel()
        ch2.queue_delete(q)
        conn.close()


def test_x_expires_deletes_an_unused_queue(connect, uniq):
    conn = connect()
    ch = conn.channel()
    q = uniq('expires')
    ch.queue_declare(q, arguments={'x-expires': 300})
    # A passive declare is a use (it restarts the clock), so look less often than that.
    eventually(lambda: not queue_exists(conn, q), timeout=10.0, interval=1.0,
               what=f'{q} to expire')


def test_alternate_exchange_takes_what_cannot_be_routed(connect, uniq):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    x, ae, q = uniq('ae-main'), uniq('ae-alt'), uniq('ae-q')
    ch.exchange_declare(ae, 'fanout')
    ch.exchange_declare(x, 'direct', arguments={'alternate-exchange': ae})
    ch.queue_declare(q)
    ch.queue_bind(q, ae)
    try:
        # mandatory: still not returned, the alternate exchange routed it.
        ch.basic_publish(x, 'nobody', b'to-the-alternate', mandatory=True)
        wait_count(conn, q, 1)
        assert bodies(ch, q) == ['to-the-alternate']
        ch.queue_unbind(q, ae)
        with pytest.raises(pika.exceptions.UnroutableError):
            ch.basic_publish(x, 'nobody', b'returned', mandatory=True)
    finally:
        ch.queue_delete(q)
        ch.exchange_delete(x)
        ch.exchange_delete(ae)
        conn.close()


def test_consumer_priorities(connect, uniq):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = uniq('cprio')
    ch.queue_declare(q)
    try:
        low, high = conn.channel(), conn.channel()
        got = {'low': [], 'high': []}
        high.basic_qos(prefetch_count=2)
        low.basic_consume(q, lambda c, m, p, b: got['low'].append(b.decode()),
                          arguments={'x-priority': -1})
        high.basic_consume(q, lambda c, m, p, b: got['high'].append(b.decode()),
                           arguments={'x-priority': 10})
        for i in range(5):
            ch.basic_publish('', q, f'm{i}'.encode())
        # The high consumer takes what its prefetch allows; only then the low one.
        pump(conn, lambda: len(got['high']) + len(got['low']) == 5, what='5 deliveries')
        assert got['high'] == ['m0', 'm1']
        assert got['low'] == ['m2', 'm3', 'm4']
        with expect_channel_error(406, 'PRECONDITION_FAILED'):
            conn.channel().basic_consume(q, lambda *a: None,
                                         arguments={'x-priority': 'high'})
    finally:
        conn.channel().queue_delete(q)
        conn.close()


def test_quorum_queue_rules_and_delivery_limit(connect, uniq):
    conn = connect()
    ch = conn.channel()
    q, dlq = uniq('quorum'), uniq('quorum-dlq')
    with expect_channel_error(406, 'PRECONDITION_FAILED'):
        ch.queue_declare(q, durable=False, arguments={'x-queue-type': 'quorum'})
    ch = conn.channel()
    with expect_channel_error(406, 'PRECONDITION_FAILED'):
        ch.queue_declare(q, durable=True, exclusive=True, arguments={'x-queue-type': 'quorum'})
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(dlq, durable=True)
    ch.queue_declare(q, durable=True, arguments={
        'x-queue-type': 'quorum', 'x-delivery-limit': 2,
        'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': dlq})
    try:
        ch.basic_publish('', q, b'poison')
        counts = []
        for _ in range(3):
            m, props, _ = get_message(ch, q, auto_ack=False)
            counts.append((props.headers or {}).get('x-delivery-count'))
            ch.basic_nack(m.delivery_tag, requeue=True)
        assert counts == [None, 1, 2] or counts == [0, 1, 2], counts
        # Past the limit: dead-lettered with reason delivery_limit.
        m, props, body = get_message(ch, dlq)
        assert body == b'poison'
        assert props.headers['x-first-death-reason'] == 'delivery_limit'
    finally:
        ch.queue_delete(q)
        ch.queue_delete(dlq)
        conn.close()
