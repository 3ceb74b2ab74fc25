"""A backlog several times the memory budget: bodies past --memory-budget stay on disk,
the broker's RSS stays under the budget plus a fixed margin, and the backlog drains
completely and in order. ("A queue is bounded only by the host's memory and disk.")"""

import pika
import pytest

from conftest import external_port, start_warren

BUDGET = 16 * 1024 * 1024
MARGIN = 48 * 1024 * 1024  # code, read/write buffers, per-message bookkeeping
BODY = 64 * 1024
COUNT = 1600  # 100 MiB: over six times the budget


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("persistent", [False, True], ids=["transient", "persistent"])
def test_backlog_beyond_the_memory_budget_stays_on_disk(tmp_path, persistent):
    if external_port() is not None:
        pytest.skip("needs broker flags; WARREN_TEST_PORT is set")
    broker = start_warren(tmp_path / "data", "--memory-budget", str(BUDGET))
    try:
        conn = pika.BlockingConnection(broker.params())
        ch = conn.channel()
        ch.queue_declare(queue='backlog', durable=True)
        # No confirms: Warren routes a channel's publishes in order, so the passive
        # declare below sees them all.
        props = pika.BasicProperties(delivery_mode=2 if persistent else 1)
        peak = 0
        for i in range(COUNT):
            ch.basic_publish(exchange='', routing_key='backlog',
                             body=i.to_bytes(4, 'big') + bytes([i % 251]) * (BODY - 4),
                             properties=props)
            if i % 100 == 0:
                peak = max(peak, rss(broker.process.pid))
        peak = max(peak, rss(broker.process.pid))
        assert ch.queue_declare(queue='backlog', passive=True).method.message_count == COUNT
        assert peak < BUDGET + MARGIN, f"RSS peaked at {peak >> 20} MiB"

        for i in range(COUNT):
            method, _, body = ch.basic_get('backlog', auto_ack=True)
            assert method is not None, f"backlog ran dry at {i}"
            assert int.from_bytes(body[:4], 'big') == i, "out of order"
            assert len(body) == BODY and body[4:] == bytes([i % 251]) * (BODY - 4)
        assert ch.basic_get('backlog', auto_ack=True)[0] is None
        conn.close()
    finally:
        broker.stop()
