"""Message bodies and properties survive the broker byte for byte."""

import datetime
import decimal

import pika
import pytest

from conftest import expect_channel_error, pump


def roundtrip(connect, bodies, properties=None):
    """Publishes `bodies` to a fresh queue and consumes them back: [(props, body)]."""
    conn = connect()
    ch = conn.channel()
    q = ch.queue_declare(queue='', exclusive=True).method.queue
    for body in bodies:
        ch.basic_publish(exchange='', routing_key=q, body=body, properties=properties)
    got = []
    ch.basic_consume(queue=q, auto_ack=True,
                     on_message_callback=lambda c, m, p, b: got.append((p, b)))
    pump(conn, lambda: len(got) == len(bodies), timeout=10, what=f"{len(bodies)} messages")
    return got


def test_empty_body(connect):
    [(_, body)] = roundtrip(connect, [b''])
    assert body == b''


def test_one_mebibyte_body(connect):
    big = bytes((i * 7 + i // 251) % 256 for i in range(1 << 20))
    # Larger than the negotiated frame_max (128 KiB on RabbitMQ): split into body frames.
    [(_, body)] = roundtrip(connect, [big])
    assert len(body) == len(big) and body == big


def test_every_byte_value(connect):
    all_bytes = bytes(range(256))
    got = roundtrip(connect, [all_bytes, all_bytes[::-1], b'\x00' * 3])
    assert [b for _, b in got] == [all_bytes, all_bytes[::-1], b'\x00' * 3]


@pytest.mark.parametrize("size", [1, 131063, 131064, 131065, 262144])
def test_bodies_around_the_frame_size(connect, size):
    body = bytes(i % 253 for i in range(size))
    [(_, got)] = roundtrip(connect, [body])
    assert got == body


def test_all_fourteen_properties_round_trip(connect):
    headers = {
        'str': 'text ✓',
        'int': 42,
        'negative': -7,
        'big': 2 ** 40,
        'true': True,
        'false': False,
        'bytes': b'\x00\xffraw',
        # (pika 1.3 cannot encode floats in tables, so none here)
        'decimal': decimal.Decimal('3.14'),
        'timestamp': datetime.datetime(2024, 1, 2, 3, 4, 5),
        'void': None,
        'list': [1, 'two', True, [3, 4], {'k': 'v'}, b'\x01'],
        'nested': {'a': {'b': {'c': 1, 'd': ['x', 'y']}}, 'empty': {}},
        'empty_list': [],
    }
    props = pika.BasicProperties(
        content_type='application/json',
        content_encoding='gzip',
        headers=headers,
        delivery_mode=pika.DeliveryMode.Persistent,
        priority=7,
        correlation_id='corr-1',
        reply_to='reply.queue',
        expiration='60000',
        message_id='msg-1',
        timestamp=1700000000,
        type='my.type',
        user_id='guest',  # must equal the authenticated user, or RabbitMQ refuses it (406)
        app_id='pika-tests',
        cluster_id='cluster-1',
    )
    [(got, body)] = roundtrip(connect, [b'{}'], props)
    assert body == b'{}'
    for name in ['content_type', 'content_encoding', 'delivery_mode', 'priority',
                 'correlation_id', 'reply_to', 'expiration', 'message_id', 'timestamp',
                 'type', 'user_id', 'app_id', 'cluster_id']:
        assert getattr(got, name) == getattr(props, name), name
    assert got.headers == headers


def test_absent_properties_stay_absent(connect):
    [(got, _)] = roundtrip(connect, [b'x'])
    for name in ['content_type', 'content_encoding', 'headers', 'delivery_mode', 'priority',
                 'correlation_id', 'reply_to', 'expiration', 'message_id', 'timestamp',
                 'type', 'user_id', 'app_id', 'cluster_id']:
        assert getattr(got, name) is None, name


def test_user_id_must_match_the_login(connect):
    ch = connect().channel()
    q = ch.queue_declare(queue='', exclusive=True).method.queue
    ch.basic_publish(exchange='', routing_key=q, body=b'x',
                     properties=pika.BasicProperties(user_id='mallory'))
    with expect_channel_error(406, "PRECONDITION_FAILED - user_id property set to 'mallory' "
                                   "but authenticated user was 'guest'"):
        ch.queue_declare(queue=q, passive=True)
