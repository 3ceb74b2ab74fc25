"""Single active consumer as pika sees it (issue 12): the active consumer lives in another
process, which is killed with SIGKILL while it holds unacked messages. Its connection dies
without a close; the waiting consumer takes over and gets everything, the unacked ones
back first and redelivered, in publish order. Against RabbitMQ 3.10 too."""

import queue
import signal
import subprocess
import sys
import threading

import pytest

from conftest import pump, wait_count

# The active consumer: prefetch 3, never acks, prints each body it gets.
ACTIVE = r"""
import sys, pika
host, port, q = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = pika.BlockingConnection(pika.ConnectionParameters(
    host=host, port=port, credentials=pika.PlainCredentials('guest', 'guest')))
ch = conn.channel()
ch.basic_qos(prefetch_count=3)
ch.basic_consume(q, lambda c, m, p, body: print(body.decode(), flush=True),
                 consumer_tag='doomed')
print('consuming', flush=True)
ch.start_consuming()
"""


def lines_of(proc):
    """A queue fed with the process's stdout lines by a reader thread."""
    out = queue.Queue()

    def reader():
        for line in iter(proc.stdout.readline, b""):
            out.put(line.decode().strip())

    threading.Thread(target=reader, daemon=True).start()
    return out


def next_line(out, timeout=10.0):
    try:
        return out.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"the active consumer printed nothing within {timeout} s")


def test_failover_when_the_active_consumers_connection_dies(broker, connect, uniq):
    conn = connect()
    ch = conn.channel()
    q = uniq("sac")
    ch.queue_declare(q, arguments={'x-single-active-consumer': True})
    proc = subprocess.Popen([sys.executable, "-c", ACTIVE, broker.host, str(broker.port), q],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        out = lines_of(proc)
        assert next_line(out) == 'consuming'
        got = []
        ch.basic_consume(q, lambda c, m, p, body: got.append((body, m.redelivered)),
                         consumer_tag='survivor')
        ch.confirm_delivery()
        for i in range(5):
            ch.basic_publish('', q, f'm{i}'.encode())
        # The active one takes three (its prefetch); the other two wait in the queue:
        # the survivor is not served while the active consumer lives, blocked or not.
        assert [next_line(out) for _ in range(3)] == ['m0', 'm1', 'm2']
        wait_count(conn, q, 2)
        conn.process_data_events(time_limit=0.05)
        assert got == []
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        pump(conn, lambda: len(got) >= 5, timeout=15, what="the survivor's five messages")
        assert [b for b, _ in got] == [b'm0', b'm1', b'm2', b'm3', b'm4']
        assert [r for _, r in got] == [True, True, True, False, False]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        ch.queue_delete(q)
