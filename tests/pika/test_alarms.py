"""Resource alarms: with free disk below --disk-free-limit, a publishing connection gets
connection.blocked and its publishes stop being read; consumers keep draining; a restart
without the limit lets it publish again. (RabbitMQ's disk alarm, as its users see it
through pika's blocked-connection callbacks.)"""

import time

import pika

from conftest import external_port, pump, start_warren

import pytest

HUGE = str(10 ** 15)  # more free disk than any machine here has: the alarm is on at once


def persistent(body):
    return dict(exchange='', routing_key='alarmed', body=body,
                properties=pika.BasicProperties(delivery_mode=2))


def test_disk_alarm_blocks_publishers_until_restart_without_it(tmp_path):
    if external_port() is not None:
        pytest.skip("needs broker flags; WARREN_TEST_PORT is set")
    data = tmp_path / "data"
    broker = start_warren(data, "--disk-free-limit", HUGE)
    try:
        pub = pika.BlockingConnection(broker.params())
        events = []
        pub.add_on_connection_blocked_callback(lambda c, m: events.append(('blocked', m.method.reason)))
        pub.add_on_connection_unblocked_callback(lambda c, m: events.append(('unblocked', None)))
        pch = pub.channel()
        pch.queue_declare(queue='alarmed', durable=True)

        con = pika.BlockingConnection(broker.params())
        cch = con.channel()
        got = []
        cch.basic_consume(queue='alarmed', auto_ack=True,
                          on_message_callback=lambda c, m, p, b: got.append(b))

        # The first publish is read (that is how the broker learns this is a publisher),
        # then the connection is blocked.
        pch.basic_publish(**persistent(b'first'))
        pump(pub, lambda: events, what="connection.blocked")
        assert events == [('blocked', 'low on disk')]
        # Consumers keep draining under the alarm.
        pump(con, lambda: got, what="delivery of the first message")
        assert got == [b'first']

        # Further publishes are not read: nothing arrives within a generous window.
        pch.basic_publish(**persistent(b'second'))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            con.process_data_events(time_limit=0.05)
            pub.process_data_events(time_limit=0.05)
        assert got == [b'first']
        con.close()
    finally:
        broker.stop()

    # Restarted without the limit on the same data directory: publishing works again.
    broker = start_warren(data)
    try:
        pub = pika.BlockingConnection(broker.params())
        events = []
        pub.add_on_connection_blocked_callback(lambda c, m: events.append('blocked'))
        pch = pub.channel()
        pch.confirm_delivery()
        pch.basic_publish(**persistent(b'third'))  # confirmed: routed and stored
        cch = pub.channel()
        m = cch.basic_get('alarmed', auto_ack=True)
        assert m[2] == b'third'
        assert events == []
    finally:
        broker.stop()


def test_a_blocked_publisher_with_heartbeat_3_is_still_connected_after_20s(tmp_path):
    """Regression: a blocked connection is not read, so its heartbeats were not seen and it
    was dropped for "missed heartbeats" after two intervals. RabbitMQ pauses heartbeat
    monitoring while a connection is blocked; so does Warren."""
    if external_port() is not None:
        pytest.skip("needs broker flags; WARREN_TEST_PORT is set")
    broker = start_warren(tmp_path / "data", "--disk-free-limit", HUGE)
    try:
        pub = pika.BlockingConnection(broker.params(heartbeat=3))
        events = []
        pub.add_on_connection_blocked_callback(lambda c, m: events.append('blocked'))
        pch = pub.channel()
        pch.queue_declare(queue='alarmed', durable=True)
        pch.basic_publish(**persistent(b'first'))
        pump(pub, lambda: events, what="connection.blocked")
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and pub.is_open:
            pub.process_data_events(time_limit=0.2)
        assert pub.is_open, broker.output()
        assert 'missed heartbeats' not in broker.output()
        # (No close: a blocked connection is not read, so its close-ok would not come.)
    finally:
        broker.stop()


def test_memory_alarm_blocks_publishers(tmp_path):
    """RSS above --memory-high-watermark (here a tiny fraction of RAM, so the alarm is on
    from the start): a publisher is told 'low on memory' and blocked, a consumer still gets
    what was already routed."""
    if external_port() is not None:
        pytest.skip("needs broker flags; WARREN_TEST_PORT is set")
    broker = start_warren(tmp_path / "data", "--memory-high-watermark", "0.0000001")
    try:
        pub = pika.BlockingConnection(broker.params())
        events = []
        pub.add_on_connection_blocked_callback(lambda c, m: events.append(m.method.reason))
        pch = pub.channel()
        pch.queue_declare(queue='alarmed')
        pch.basic_publish(exchange='', routing_key='alarmed', body=b'one')
        pump(pub, lambda: events, what="connection.blocked")
        assert events == ['low on memory']
        con = pika.BlockingConnection(broker.params())
        m = con.channel().basic_get('alarmed', auto_ack=True)
        assert m[2] == b'one'
        con.close()
    finally:
        broker.stop()
