#!/usr/bin/env python3
"""Captures real client traffic to seed the fuzz corpora.

Starts the broker (target/debug/warren --amqp-port 0), runs a recording TCP proxy in
front of it, and drives pika through the operations of the six RabbitMQ tutorials
(plus publisher confirms and tx). Each client connection's client->server byte stream
is saved as fuzz/corpus/connection/pika-<what> (prefixed with one mode byte and two
split bytes, see warren::fuzzing::connection: mode 1 = odd, "no synthetic handshake",
the stream carries its own), and is cut into frames to seed the frame, method,
properties and field_table corpora.

Usage (from the repository root, after `cargo build`):
    /path/to/venv-with-pika/bin/python fuzz/capture.py
"""

import datetime
import decimal
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pika

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
MAX_SEED = 60 * 1024


class Proxy:
    """Forwards 127.0.0.1:<port> to the broker; records client->server bytes."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.streams = []  # one bytearray per accepted connection, in order
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(self.upstream)
            rec = bytearray()
            with self.lock:
                self.streams.append(rec)
            threading.Thread(target=self.pump, args=(c, u, rec), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c, None), daemon=True).start()

    @staticmethod
    def pump(src, dst, rec):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                if rec is not None:
                    rec.extend(b)
                dst.sendall(b)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self):
        """The stream of the most recent connection, once it has gone quiet."""
        time.sleep(0.2)
        with self.lock:
            return bytes(self.streams[-1])


def params(port):
    return pika.ConnectionParameters("127.0.0.1", port, heartbeat=0)


# --- the scenarios: each opens its own connection(s) -------------------------------


def hello_world(port):
    c = pika.BlockingConnection(params(port))
    ch = c.channel()
    ch.queue_declare(queue="hello")
    ch.basic_publish(exchange="", routing_key="hello", body=b"Hello World!")
    got = []

    def cb(ch, method, props, body):
        got.append(body)
        ch.stop_consuming()

    ch.basic_consume(queue="hello", on_message_callback=cb, auto_ack=True)
    ch.start_consuming()
    c.close()
    assert got == [b"Hello World!"], got


def work_queue(port):
    c = pika.BlockingConnection(params(port))
    ch = c.channel()
    ch.queue_declare(queue="task_queue", durable=True)
    for i in range(3):
        ch.basic_publish(
            exchange="",
            routing_key="task_queue",
            body=b"task" + b"." * i,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )
    ch.basic_qos(prefetch_count=1)
    got = []

    def cb(ch, method, props, body):
        got.append(body)
        if len(got) == 2:
            ch.basic_nack(delivery_tag=method.delivery_tag, requeue=True)
        else:
            ch.basic_ack(delivery_tag=method.delivery_tag)
        if len(got) == 4:
            ch.stop_consuming()

    ch.basic_consume(queue="task_queue", on_message_callback=cb)
    ch.start_consuming()
    ch.queue_delete(queue="task_queue")
    c.close()


def fanout(port):
    c = pika.BlockingConnection(params(port))
    ch = c.channel()
    ch.exchange_declare(exchange="logs", exchange_type="fanout")
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(exchange="logs", queue=q)
    ch.basic_publish(exchange="logs", routing_key="", body=b"info: hello")
    m, p, body = None, None, None
    for _ in range(50):
        m, p, body = ch.basic_get(queue=q, auto_ack=True)
        if m:
            break
        time.sleep(0.01)
    assert body == b"info: hello", body
    ch.queue_unbind(exchange="logs", queue=q)
    ch.exchange_delete(exchange="logs")
    c.close()


def direct_routing(port):
    c = pika.BlockingConnection(params(port))
    ch = c.channel()
    ch.exchange_declare(exchange="direct_logs", exchange_type="direct")
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    for sev in ("info", "warning", "error"):
        ch.queue_bind(exchange="direct_logs", queue=q, routing_key=sev)
    for sev in ("error", "debug", "info"):
        ch.basic_publish(exchange="direct_logs", routing_key=sev, body=sev.encode())
    got = []

    def cb(ch, method, props, body):
        got.append(body)
        if len(got) == 2:
            ch.stop_consuming()

    tag = ch.basic_consume(queue=q, on_message_callback=cb, auto_ack=True)
    ch.start_consuming()
    ch.basic_cancel(tag)
    c.close()
    assert got == [b"error", b"info"], got


def topic(port):
    c = pika.BlockingConnection(params(port))
    ch = c.channel()
    ch.exchange_declare(exchange="topic_logs", exchange_type="topic")
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    for key in ("*.critical", "kern.#", "#.orange.*", "lazy.#"):
        ch.queue_bind(exchange="topic_logs", queue=q, routing_key=key)
    for key in ("kern.critical", "anonymous.info", "quick.orange.rabbit", "lazy"):
        ch.basic_publish(exchange="topic_logs", routing_key=key, body=key.encode())
    n = 0
    for _ in range(100):
        m, p, body = ch.basic_get(queue=q, auto_ack=False)
        if m:
            ch.basic_ack(m.delivery_tag)
            n += 1
            if n == 3:
                break
        else:
            time.sleep(0.01)
    assert n == 3, n
    c.close()


def rpc(port):
    # server side
    sc = pika.BlockingConnection(params(port))
    sch = sc.channel()
    sch.queue_declare(queue="rpc_queue")
    sch.basic_qos(prefetch_count=1)

    def on_request(ch, method, props, body):
        n = int(body)
        ch.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=str(n * 2).encode(),
        )
        ch.basic_ack(delivery_tag=method.delivery_tag)

    sch.basic_consume(queue="rpc_queue", on_message_callback=on_request)
    # client side
    cc = pika.BlockingConnection(params(port))
    cch = cc.channel()
    cb_q = cch.queue_declare(queue="", exclusive=True).method.queue
    resp = []
    corr = "corr-1234"

    def on_response(ch, method, props, body):
        if props.correlation_id == corr:
            resp.append(body)

    cch.basic_consume(queue=cb_q, on_message_callback=on_response, auto_ack=True)
    cch.basic_publish(
        exchange="",
        routing_key="rpc_queue",
        properties=pika.BasicProperties(
            reply_to=cb_q,
            correlation_id=corr,
            content_type="text/plain",
            headers={"x-n": 21, "nested": {"a": [1, "two", True]}, "d": decimal.Decimal("1.5"), "ts": datetime.datetime(2024, 1, 2)},
        ),
        body=b"21",
    )
    for _ in range(200):
        sc.process_data_events(time_limit=0)
        cc.process_data_events(time_limit=0)
        if resp:
            break
        time.sleep(0.01)
    assert resp == [b"42"], resp
    sch.queue_delete(queue="rpc_queue")
    cc.close()
    sc.close()


def confirms(port):
    c = pika.BlockingConnection(params(port))
    ch = c.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue="confirms", auto_delete=True)
    for i in range(3):
        ch.basic_publish(
            exchange="",
            routing_key="confirms",
            body=b"x" * (i * 100),
            properties=pika.BasicProperties(
                message_id="m%d" % i, timestamp=1700000000 + i, expiration="60000",
                priority=i, app_id="capture", type="t", content_encoding="utf-8",
            ),
            mandatory=True,
        )
    try:
        ch.basic_publish(exchange="", routing_key="nowhere", body=b"lost", mandatory=True)
    except pika.exceptions.UnroutableError:
        pass
    ch.queue_purge(queue="confirms")
    c.close()


def tx(port):
    c = pika.BlockingConnection(params(port))
    ch = c.channel()
    ch.queue_declare(queue="txq")
    ch.tx_select()
    ch.basic_publish(exchange="", routing_key="txq", body=b"one")
    ch.tx_rollback()
    ch.basic_publish(exchange="", routing_key="txq", body=b"two")
    ch.tx_commit()
    m, p, body = ch.basic_get(queue="txq")
    ch.basic_reject(m.delivery_tag, requeue=False)
    ch.tx_commit()
    ch.basic_recover(requeue=True)
    ch.queue_delete(queue="txq")
    c.close()


def errors(port):
    """A channel error and recovery: passive declare of a missing queue (404)."""
    c = pika.BlockingConnection(params(port))
    ch = c.channel()
    try:
        ch.queue_declare(queue="does-not-exist", passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        pass
    ch2 = c.channel()
    ch2.exchange_declare(exchange="hdrs", exchange_type="headers",
                         arguments={"alternate-exchange": "amq.fanout"})
    q = ch2.queue_declare(queue="", exclusive=True, arguments={"x-max-length": 10,
                                                               "x-message-ttl": 5000}).method.queue
    ch2.queue_bind(exchange="hdrs", queue=q, arguments={"x-match": "any", "k": "v"})
    ch2.basic_publish(exchange="hdrs", routing_key="", body=b"h",
                      properties=pika.BasicProperties(headers={"k": "v"}))
    ch2.exchange_delete(exchange="hdrs")
    c.close()


SCENARIOS = [
    ("hello-world", hello_world),
    ("work-queue", work_queue),
    ("fanout", fanout),
    ("direct", direct_routing),
    ("topic", topic),
    ("rpc", rpc),  # two connections: the RPC server's, then the client's
    ("confirms", confirms),
    ("tx", tx),
    ("errors", errors),
]


# --- splitting streams into seeds ---------------------------------------------------

METHOD_NAMES = {
    (10, 11): "connection-start-ok", (10, 31): "connection-tune-ok",
    (10, 40): "connection-open", (10, 50): "connection-close", (10, 51): "connection-close-ok",
    (20, 10): "channel-open", (20, 40): "channel-close", (20, 41): "channel-close-ok",
    (40, 10): "exchange-declare", (40, 20): "exchange-delete",
    (50, 10): "queue-declare", (50, 20): "queue-bind", (50, 30): "queue-purge",
    (50, 40): "queue-delete", (50, 50): "queue-unbind",
    (60, 10): "basic-qos", (60, 20): "basic-consume", (60, 30): "basic-cancel",
    (60, 40): "basic-publish", (60, 70): "basic-get", (60, 80): "basic-ack",
    (60, 90): "basic-reject", (60, 110): "basic-recover", (60, 120): "basic-nack",
    (85, 10): "confirm-select", (90, 10): "tx-select", (90, 20): "tx-commit",
    (90, 30): "tx-rollback",
}


def frames(stream):
    """(kind, channel, payload, whole) for every frame after the protocol header."""
    b = stream[8:] if stream.startswith(b"AMQP") else stream
    while len(b) >= 8:
        kind, chan, size = struct.unpack(">BHI", b[:7])
        if len(b) < size + 8:
            break
        yield kind, chan, b[7:7 + size], b[:size + 8]
        b = b[size + 8:]


def save(target, name, data, seen):
    if len(data) > MAX_SEED or data in seen.setdefault(target, set()):
        return
    seen[target].add(data)
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def split_seeds(what, stream, seen):
    # mode byte 1 (odd: the stream brings its own handshake), split points 0x55, 0xaa
    save("connection", "pika-" + what, bytes([1, 0x55, 0xAA]) + stream[:MAX_SEED - 3], seen)
    # mode byte 0 (even: the fuzz harness sends a handshake and opens channel 1
    # itself): only the frames after the client's first channel.open
    after, rest = None, b""
    for kind, chan, payload, whole in frames(stream):
        if after is None:
            if kind == 1 and payload[:4] == b"\x00\x14\x00\x0a":
                after = True
            continue
        rest += whole
    if rest:
        save("connection", "running-" + what, bytes([0, 0x40, 0x80]) + rest[:MAX_SEED - 3], seen)
    counts = {}
    for kind, chan, payload, whole in frames(stream):
        if kind == 1 and len(payload) >= 4:
            cls, mid = struct.unpack(">HH", payload[:4])
            mname = METHOD_NAMES.get((cls, mid), "method-%d-%d" % (cls, mid))
            i = counts[mname] = counts.get(mname, 0) + 1
            tag = "%s-%s-%d" % (what, mname, i)
            save("method", tag, payload, seen)
            save("frame", tag, whole, seen)
            if (cls, mid) == (10, 11):
                # start-ok: client-properties table is the first argument
                (n,) = struct.unpack(">I", payload[4:8])
                save("field_table", "pika-client-properties", payload[4:8 + n], seen)
            if (cls, mid) in ((50, 10), (40, 10), (50, 20), (60, 20)):
                # arguments table is the last argument
                for off in range(4, len(payload) - 3):
                    (n,) = struct.unpack(">I", payload[off:off + 4])
                    if off + 4 + n == len(payload) and n > 0:
                        save("field_table", "%s-%s-arguments" % (what, mname),
                             payload[off:], seen)
                        break
        elif kind == 2:
            i = counts["header"] = counts.get("header", 0) + 1
            save("properties", "%s-content-header-%d" % (what, i), payload, seen)
            save("frame", "%s-content-header-%d" % (what, i), whole, seen)
            # a headers table inside the properties, if any (flag bit 13)
            if len(payload) >= 14 and payload[12] & 0x20:
                off = 14
                if payload[12] & 0x80:
                    off += 1 + payload[off]
                if payload[12] & 0x40:
                    off += 1 + payload[off]
                (n,) = struct.unpack(">I", payload[off:off + 4])
                save("field_table", "%s-message-headers-%d" % (what, i),
                     payload[off:off + 4 + n], seen)
        elif kind == 3:
            i = counts["body"] = counts.get("body", 0) + 1
            save("frame", "%s-body-%d" % (what, i), whole, seen)
        elif kind == 8:
            save("frame", "heartbeat", whole, seen)


def main():
    binary = os.path.join(ROOT, "target", "debug", "warren")
    data_dir = tempfile.mkdtemp(prefix="warren-capture-")
    broker = subprocess.Popen(
        [binary, "--amqp-port", "0", "--data-dir", data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = broker.stdout.readline()
        m = re.search(r"amqp://([\d.]+):(\d+)", line)
        if not m:
            sys.exit("broker did not report its port: %r" % line)
        proxy = Proxy((m.group(1), int(m.group(2))))
        seen = {}
        for what, scenario in SCENARIOS:
            before = len(proxy.streams)
            scenario(proxy.port)
            time.sleep(0.2)
            with proxy.lock:
                streams = [bytes(s) for s in proxy.streams[before:]]
            for i, s in enumerate(streams):
                name = what if len(streams) == 1 else "%s-%s" % (what, ["server", "client"][i])
                split_seeds(name, s, seen)
                print("%-16s %6d bytes" % (name, len(s)))
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
