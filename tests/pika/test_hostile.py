"""Hostile input over the network (issue #5): slow, idle, malformed, stalled and flooding peers.

The broker must never crash, stall the other clients or lose acknowledged data. After every
hostile case a fresh pika client still does the tutorial's hello-world round trip.

Raw peers speak AMQP through the small frame encoder below (pika would not misbehave for us).
Every wait has a deadline; the few fixed windows (a flood "for ~5 s") are stated.
"""

import os
import random
import resource
import select
import socket
import subprocess
import sys
import struct
import threading
import time
import uuid

import pika
import pytest

from conftest import external_port, message_count

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = b"\xce"


# --- a tiny AMQP 0-9-1 encoder ----------------------------------------------------------------

def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    return bytes([len(b)]) + b


def longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


EMPTY_TABLE = struct.pack(">I", 0)


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + FRAME_END


def method(channel, class_id, method_id, args=b""):
    return frame(FRAME_METHOD, channel, struct.pack(">HH", class_id, method_id) + args)


def start_ok(user="guest", password="guest"):
    return method(0, 10, 11, EMPTY_TABLE + shortstr("PLAIN")
                  + longstr(b"\0" + user.encode() + b"\0" + password.encode()) + shortstr("en_US"))


def tune_ok(heartbeat=0):
    return method(0, 10, 31, struct.pack(">HIH", 2047, 131072, heartbeat))


def connection_open(vhost="/"):
    return method(0, 10, 40, shortstr(vhost) + shortstr("") + b"\x00")


CLOSE_OK = method(0, 10, 51)


def channel_open(ch):
    return method(ch, 20, 10, shortstr(""))


def basic_qos(ch, prefetch_count):
    return method(ch, 60, 10, struct.pack(">IHB", 0, prefetch_count, 0))


def basic_consume(ch, queue, no_ack=False, tag=""):
    return method(ch, 60, 20, struct.pack(">H", 0) + shortstr(queue) + shortstr(tag)
                  + bytes([0b10 if no_ack else 0]) + EMPTY_TABLE)


def publish(ch, routing_key, body, exchange=""):
    """basic.publish + content header + one body frame (bodies here are below frame_max)."""
    m = method(ch, 60, 40, struct.pack(">H", 0) + shortstr(exchange) + shortstr(routing_key)
               + b"\x00")
    h = frame(FRAME_HEADER, ch, struct.pack(">HHQH", 60, 0, len(body), 0))
    return m + h + frame(FRAME_BODY, ch, body)


HANDSHAKE = PROTOCOL_HEADER + start_ok() + tune_ok(heartbeat=0) + connection_open("/")


class RawClient:
    """A blocking socket that speaks AMQP frames; every read has a deadline."""

    def __init__(self, broker, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect((broker.host, broker.port))
        self.connected_at = time.monotonic()
        self.buf = bytearray()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        """One recv into the buffer; returns False on EOF/reset."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("raw client: deadline passed")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("raw client: deadline passed") from None
        except (ConnectionResetError, BrokenPipeError):
            return False
        if not chunk:
            return False
        self.buf.extend(chunk)
        return True

    def read_bytes(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise EOFError(f"closed after {bytes(self.buf)!r}")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_frame(self, timeout=5.0):
        """(kind, channel, payload); EOFError when the broker closed the socket."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < 7:
            if not self._fill(deadline):
                raise EOFError(f"closed with {bytes(self.buf)!r} unparsed")
        kind, ch, size = struct.unpack(">BHI", self.buf[:7])
        while len(self.buf) < 8 + size:
            if not self._fill(deadline):
                raise EOFError("closed mid-frame")
        payload = bytes(self.buf[7:7 + size])
        assert self.buf[7 + size] == 0xCE, "broker sent a bad frame end"
        del self.buf[:8 + size]
        return kind, ch, payload

    def read_method(self, want, timeout=5.0):
        """Reads frames until the method (class, method) `want`; returns its arguments."""
        deadline = time.monotonic() + timeout
        while True:
            kind, ch, payload = self.read_frame(max(0.0, deadline - time.monotonic()))
            if kind == FRAME_METHOD:
                cm = struct.unpack(">HH", payload[:4])
                if cm == want:
                    return payload[4:]
                if cm == (10, 50) and want != (10, 50):
                    raise AssertionError(f"connection.close {close_reply(payload[4:])} "
                                         f"while waiting for {want}")

    def handshake(self):
        """Protocol header, start-ok PLAIN guest/guest, tune-ok (heartbeat 0), open "/"."""
        self.send(HANDSHAKE)
        self.read_method((10, 41))
        return self

    def expect_close(self, timeout=5.0):
        """Waits for connection.close; returns (reply_code, reply_text)."""
        return close_reply(self.read_method((10, 50), timeout))

    def closed_within(self, timeout):
        """True when the broker closes the socket within `timeout` s (input is discarded)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                self.buf.clear()
        except TimeoutError:
            return False
        return True

    def close(self):
        self.sock.close()


def close_reply(args):
    code = struct.unpack(">H", args[:2])[0]
    text = args[3:3 + args[2]].decode()
    return code, text


# --- helpers ----------------------------------------------------------------------------------

def hello_world(broker):
    """The tutorial's hello world with a fresh pika client: the broker is still serving."""
    queue = f"hello-{uuid.uuid4().hex[:10]}"
    connection = pika.BlockingConnection(broker.params())
    try:
        channel = connection.channel()
        channel.queue_declare(queue=queue)
        channel.basic_publish(exchange='', routing_key=queue, body='Hello World!')
        received = []

        def callback(ch, method_, properties, body):
            received.append(body)
            ch.stop_consuming()

        channel.basic_consume(queue=queue, auto_ack=True, on_message_callback=callback)
        timer = connection.call_later(5, channel.stop_consuming)  # the deadline
        channel.start_consuming()
        connection.remove_timeout(timer)
        assert received == [b'Hello World!']
        channel.queue_delete(queue=queue)
    finally:
        if connection.is_open:
            connection.close()


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class RoundTripper:
    """A pika client timing publish→consume round trips on its own exclusive queue."""

    def __init__(self, broker):
        self.conn = pika.BlockingConnection(broker.params())
        self.ch = self.conn.channel()
        self.queue = self.ch.queue_declare(queue='', exclusive=True).method.queue
        self.got = []
        self.ch.basic_consume(queue=self.queue, auto_ack=True,
                              on_message_callback=lambda c, m, p, body: self.got.append(body))

    def once(self, timeout=5.0):
        want = len(self.got) + 1
        t0 = time.perf_counter()
        self.ch.basic_publish(exchange='', routing_key=self.queue, body=b'ping')
        deadline = time.monotonic() + timeout
        while len(self.got) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"round trip not done within {timeout} s")
            # Blocks in select until the delivery arrives (no busy polling).
            self.conn.process_data_events(time_limit=left)
        return time.perf_counter() - t0

    def run(self, n):
        return [self.once() for _ in range(n)]

    def close(self):
        if self.conn.is_open:
            self.conn.close()


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def ms(x):
    return f"{x * 1000:.2f} ms"


# --- 1. slowloris -------------------------------------------------------------------------------

def test_slowloris_is_closed_at_the_handshake_timeout(broker):
    """Header + start-ok dribbled one byte per second: closed ~10 s after connect."""
    c = RawClient(broker)
    data = PROTOCOL_HEADER + start_ok()
    sent = 0
    closed_at = None
    deadline = c.connected_at + 15
    next_byte = c.connected_at
    while closed_at is None and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_byte and sent < len(data):
            try:
                c.sock.send(data[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic()
                break
            sent += 1
            next_byte += 1.0
        r, _, _ = select.select([c.sock], [], [], max(0.0, min(next_byte, deadline) - now))
        if r:
            try:
                chunk = c.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                closed_at = time.monotonic()
            else:
                c.buf.extend(chunk)
    c.close()
    assert closed_at is not None, "slowloris still connected after 15 s"
    elapsed = closed_at - c.connected_at
    print(f"slowloris: {sent} bytes sent, closed {elapsed:.2f} s after connect")
    assert 9.0 <= elapsed <= 13.0, elapsed
    # It got connection.start after the 8th byte, and no further than that.
    assert bytes(c.buf[:1]) == bytes([FRAME_METHOD])
    hello_world(broker)


# --- 2. many idle connections -------------------------------------------------------------------

IDLE = 2000


def test_two_thousand_idle_connections_do_not_slow_a_busy_one(make_broker):
    raise_fd_limit(IDLE + 1000)  # the broker spawned below inherits it
    b = make_broker()
    base_rss = rss(b.process.pid)
    probe = RoundTripper(b)
    probe.run(20)  # warm up
    quiet = probe.run(200)

    t0 = time.monotonic()
    idle = []
    try:
        # Pipelined handshakes in batches: send everything, then collect the open-oks.
        for start in range(0, IDLE, 200):
            batch = [RawClient(b) for _ in range(200)]
            for c in batch:
                c.send(HANDSHAKE)
            for c in batch:
                c.read_method((10, 41), timeout=10)
            idle.extend(batch)
        opened = time.monotonic() - t0
        loaded_rss = rss(b.process.pid)

        lat = probe.run(200)
        assert len(lat) == 200 and len(probe.got) == 420
        p50, p99 = pct(lat, 50), pct(lat, 99)
        print(f"idle: {IDLE} handshakes in {opened:.2f} s; RSS {base_rss >> 20} -> "
              f"{loaded_rss >> 20} MiB ({(loaded_rss - base_rss) // IDLE} B/conn); "
              f"round trips without idle p50 {ms(pct(quiet, 50))} p99 {ms(pct(quiet, 99))}, "
              f"with idle p50 {ms(p50)} p99 {ms(p99)} max {ms(max(lat))}")
        # Per-turn work that grows with the idle connections (a scan, a timer sweep) is
        # paid by every round trip, so p90 catches it. Not p99 (the 2nd slowest of 200):
        # on an oversubscribed host two scheduler hiccups exceed 20 ms (seen: p99 16 ms,
        # max 52 ms with the quiet p50 at 2-3 ms, while the full suite ran beside busy loops).
        p90 = pct(lat, 90)
        assert p90 < 0.020, f"p90 {ms(p90)} (p99 {ms(p99)}) with {IDLE} idle connections"
        # The idle connections are all still open and served.
        for c in idle[:: IDLE // 20]:
            c.send(channel_open(1))
            c.read_method((20, 11))
    finally:
        for c in idle:
            c.close()
        probe.close()
    hello_world(b)


# --- 3. protocol garbage ------------------------------------------------------------------------

def bad_header_case(payload):
    def run(broker):
        c = RawClient(broker)
        c.send(payload)
        assert c.read_bytes(8) == PROTOCOL_HEADER
        assert c.closed_within(5), "socket not closed after the protocol header"
        c.close()
    return run


def after_handshake(payload, codes, channel=False, within=1.0, oracle_suffix=b""):
    """A handshaken raw client (with channel 1 open if `channel`) sends `payload`: the broker
    answers connection.close with one of `codes` within `within` s and closes the socket.
    `oracle_suffix` is sent after `payload` only against an external broker (RabbitMQ), where
    Warren is deliberately stricter."""
    def run(broker):
        c = RawClient(broker).handshake()
        if channel:
            c.send(channel_open(1))
            c.read_method((20, 11))
        t0 = time.monotonic()
        c.send(payload + (oracle_suffix if external_port() is not None else b""))
        code, text = c.expect_close(timeout=5)
        took = time.monotonic() - t0
        print(f"close {code} {text!r} after {ms(took)}")
        assert code in codes, (code, text)
        assert took < within, took
        c.send(CLOSE_OK)
        assert c.closed_within(5), "socket not closed after close-ok"
        c.close()
    return run


def random_after_handshake(seed):
    """Random bytes after a valid handshake: closed with some 50x code, never a hang."""
    def run(broker):
        c = RawClient(broker).handshake()
        rng = random.Random(seed)
        junk = bytes(rng.getrandbits(8) for _ in range(64 * 1024))
        t0 = time.monotonic()
        try:
            c.send(junk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: fine
        codes = []
        try:
            codes.append(c.expect_close(timeout=5)[0])
            c.send(CLOSE_OK)  # the broker discarded the rest of the junk by now
        except (EOFError, BrokenPipeError, ConnectionResetError):
            pass
        assert c.closed_within(max(0.1, 5 - (time.monotonic() - t0))), "not closed within 5 s"
        print(f"seed {seed}: {codes} closed after {ms(time.monotonic() - t0)}")
        assert codes and 500 <= codes[0] < 600, codes
        c.close()
    return run


GARBAGE = {
    "frame-size-2^32-1": after_handshake(b"\x01\x00\x01\xff\xff\xff\xff", {501}),
    "method-on-unopened-channel": after_handshake(basic_qos(5, 10), {504}),
    "header-without-method": after_handshake(
        frame(FRAME_HEADER, 1, struct.pack(">HHQH", 60, 0, 0, 0)), {505}, channel=True),
    "body-longer-than-declared": after_handshake(
        method(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr("q") + b"\x00")
        + frame(FRAME_HEADER, 1, struct.pack(">HHQH", 60, 0, 2, 0))
        + frame(FRAME_BODY, 1, b"abc"), {505}, channel=True,
        # RabbitMQ's assembler lets the remaining size go negative and waits for more body
        # (never closing); the next method frame then gets 505. Warren closes at once.
        oracle_suffix=basic_qos(1, 1)),
    "heartbeat-on-channel-1": after_handshake(frame(FRAME_HEARTBEAT, 1, b""), {505},
                                              channel=True),
    "http-request": bad_header_case(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    "tls-client-hello": bad_header_case(bytes([
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]) + os.urandom(32)),
    **{f"random-{seed}": random_after_handshake(seed) for seed in range(4)},
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_protocol_garbage(broker, case):
    GARBAGE[case](broker)
    hello_world(broker)


# --- a flooding publisher in its own process -----------------------------------------------------

def flood_main(host, port, queue, body_size, seconds, max_messages):
    """Publishes pre-built 1,000-message batches to `queue` as fast as the socket takes them,
    for `seconds` or `max_messages`, then does a passive queue.declare round trip on the same
    channel (so every publish before it has been handled) and prints the count it sent."""
    b = type("B", (), {"host": host, "port": int(port)})
    p = RawClient(b).handshake()
    p.send(channel_open(1))
    p.read_method((20, 11))
    p.sock.settimeout(60)
    per_batch = 1000
    batch = publish(1, queue, b"x" * int(body_size)) * per_batch
    t0 = time.monotonic()
    sent = 0
    while sent < int(max_messages) and time.monotonic() - t0 < float(seconds):
        p.send(batch)
        sent += per_batch
    took = time.monotonic() - t0
    p.send(method(1, 50, 10, struct.pack(">H", 0) + shortstr(queue) + b"\x01" + EMPTY_TABLE))
    p.read_method((50, 11), timeout=60)
    print(sent, f"{took:.3f}", flush=True)


class Flooder:
    """A separate process (no GIL sharing with the measuring client) running flood_main."""

    def __init__(self, broker, queue, body_size, seconds, max_messages=10 ** 9):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "flood", broker.host, str(broker.port), queue,
             str(body_size), str(seconds), str(max_messages)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def running(self):
        return self.proc.poll() is None

    def result(self, timeout=60):
        """(messages sent, seconds spent sending)."""
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err.decode()
        n, took = out.split()
        return int(n), float(took)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- 4. a consumer that stops reading -----------------------------------------------------------

STALL_MESSAGES = 50_000


class Steady:
    """A pika publisher and consumer on queue B: one message every `period` s, each carrying
    its publish time, so deliveries per second and latency can be measured per window."""

    def __init__(self, broker, queue, period=0.005):
        self.period = period
        self.pub = pika.BlockingConnection(broker.params())
        self.pub_ch = self.pub.channel()
        self.con = pika.BlockingConnection(broker.params())
        ch = self.con.channel()
        self.lat = []
        ch.basic_consume(queue=queue, auto_ack=True, on_message_callback=self._got)
        self.queue = queue

    def _got(self, ch, method_, props, body):
        self.lat.append(time.perf_counter() - struct.unpack(">d", body)[0])

    def run(self, seconds):
        """Paced traffic for `seconds`; returns (deliveries/s, latencies of this window)."""
        before = len(self.lat)
        t0 = time.monotonic()
        tick = t0
        while time.monotonic() - t0 < seconds:
            now = time.monotonic()
            if now >= tick:
                self.pub_ch.basic_publish(exchange='', routing_key=self.queue,
                                          body=struct.pack(">d", time.perf_counter()))
                tick += self.period
            self.con.process_data_events(time_limit=max(0.0, tick - time.monotonic()))
        got = self.lat[before:]
        return len(got) / (time.monotonic() - t0), got

    def close(self):
        for c in (self.pub, self.con):
            if c.is_open:
                c.close()


def test_stalled_consumer_is_capped_and_others_keep_flowing(make_broker):
    b = make_broker()
    setup = pika.BlockingConnection(b.params())
    sch = setup.channel()
    qa, qb = "stall-a", "steady-b"
    sch.queue_declare(queue=qa)
    sch.queue_declare(queue=qb)
    steady = Steady(b, qb)
    rate_before, lat_before = steady.run(1.0)
    base_rss = rss(b.process.pid)

    # The stalled consumer: manual ack, no prefetch limit, small receive buffer, never reads.
    stalled = RawClient(b, rcvbuf=64 * 1024).handshake()
    stalled.send(channel_open(1) + basic_consume(1, qa, no_ack=False, tag="stalled"))

    # A publisher floods A with 1 KiB messages (bounded total), B keeps its pace meanwhile,
    # for 5 s from the stall's start (the flood itself may be over sooner).
    flooder = Flooder(b, qa, 1024, seconds=10, max_messages=STALL_MESSAGES)
    stall_start = time.monotonic()
    try:
        peak = base_rss
        windows = []
        deadline = stall_start + 30
        while flooder.running() or time.monotonic() - stall_start < 5:
            assert time.monotonic() < deadline, "flooding publisher stuck"
            windows.append(steady.run(0.5))
            peak = max(peak, rss(b.process.pid))
        windows_secs = time.monotonic() - stall_start
        n, flood_secs = flooder.result()
    finally:
        flooder.kill()
    rate_after, _ = steady.run(1.0)
    peak = max(peak, rss(b.process.pid))
    ready_while_stalled = message_count(setup, qa)
    delivered_to_stalled = n - ready_while_stalled
    frame_bytes = len(publish(1, qa, b"x" * 1024))
    growth = peak - base_rss
    during = [lat for _, w in windows for lat in w]
    print(f"stall: {n} x 1 KiB published to A in {flood_secs:.2f} s; {delivered_to_stalled} "
          f"delivered to the stalled consumer (~{delivered_to_stalled * frame_bytes >> 10} KiB); "
          f"RSS {base_rss >> 20} -> peak {peak >> 20} MiB (growth {growth >> 20} MiB for "
          f"{n * frame_bytes >> 20} MiB of frames); B {rate_before:.0f}/s before "
          f"(p99 {ms(pct(lat_before, 99))}), during the stall "
          f"{[round(r) for r, _ in windows]}/s (p99 {ms(pct(during, 99))}, max "
          f"{ms(max(during))}), after {rate_after:.0f}/s")
    assert n == STALL_MESSAGES
    # The stalled socket holds at most the out-queue cap plus what the kernel buffers.
    assert delivered_to_stalled * frame_bytes < (1 << 20) + 8 * (1 << 20), delivered_to_stalled
    # RSS: the queued messages plus a fixed margin, not a second copy in an out-queue.
    assert growth < n * frame_bytes * 1.25 + 24 * (1 << 20), growth
    # B keeps flowing: over the whole stall, and in at least three half-second windows in
    # four. Not in every window: on an oversubscribed host the scheduler can park one of
    # the three processes (probe, broker, flooder) for 0.3-0.9 s, which halves one window
    # and shows as a catch-up burst in the next (seen: [189, 53, 199, 145, 255, ...]/s
    # while the full suite ran beside busy loops). A broker that stops serving B, or
    # spends its turns on the stalled consumer, slows every window and still fails here.
    rates = sorted(r for r, _ in windows)
    overall = sum(len(w) for _, w in windows) / windows_secs
    summary = (rate_before, round(overall), [round(r) for r, _ in windows])
    assert overall >= rate_before / 2, summary
    assert rates[len(rates) // 4] >= rate_before / 2, summary

    stalled.close()
    deadline = time.monotonic() + 5
    while message_count(setup, qa) != n:
        assert time.monotonic() < deadline, f"A has {message_count(setup, qa)} of {n}"
        time.sleep(0.02)
    sch.queue_delete(queue=qa)
    setup.close()
    steady.close()
    hello_world(b)


# --- 5. a flooding publisher --------------------------------------------------------------------

def test_flooding_publisher_does_not_slow_a_round_tripper(make_broker):
    b = make_broker()
    setup = pika.BlockingConnection(b.params())
    setup.channel().queue_declare(queue="flood")
    probe = RoundTripper(b)
    probe.run(20)
    quiet = probe.run(200)

    # The flood lasts ~5 s, or 1,000,000 messages (~340 MiB queued) on a fast build.
    flooder = Flooder(b, "flood", 100, seconds=5, max_messages=1_000_000)
    lat = []
    try:
        deadline = time.monotonic() + 30
        while flooder.running():
            assert time.monotonic() < deadline, "flooding publisher stuck"
            lat.append(probe.once())
        n, flood_secs = flooder.result()
    finally:
        flooder.kill()
    queued = message_count(setup, "flood")
    p50, p99 = pct(lat, 50), pct(lat, 99)
    print(f"flood: {n} x 100 B published in {flood_secs:.2f} s ({n / flood_secs:.0f}/s, "
          f"{queued} queued); round trips quiet p50 {ms(pct(quiet, 50))} p99 "
          f"{ms(pct(quiet, 99))}; under flood n={len(lat)} p50 {ms(p50)} p99 {ms(p99)} "
          f"max {ms(max(lat))}")
    assert queued == n
    assert len(lat) >= 100, len(lat)
    # The suite runs the debug build, ~10x slower per frame than release: there one loop
    # turn of the flood (4,096 frames) takes ~9 ms and p99 was measured at 17-42 ms on a
    # loaded 2-core machine (release: p99 3.8 ms). Without per-turn fairness a round trip
    # would wait for the whole flood (seconds), and with a per-turn budget grown too large
    # every round trip waits out a long turn, so p90 catches both. p99 does not hold on an
    # oversubscribed CI host: round trips are sequential, so each time the scheduler
    # parks the probe, the broker or the flooder for 0.1-1 s costs one sample (seen: 15 of
    # 1,485 round trips over 180 ms, p50 0.28 ms, with the quiet p99 already at 19 ms).
    p90 = pct(lat, 90)
    assert p90 < 0.100, f"p90 {ms(p90)} under a publish flood (p99 {ms(p99)})"
    setup.channel().queue_delete(queue="flood")
    setup.close()
    probe.close()
    hello_world(b)


# --- 6. max connections -------------------------------------------------------------------------

def test_max_connections(make_broker):
    b = make_broker("--max-connections", "10")
    conns = [pika.BlockingConnection(b.params()) for _ in range(10)]
    try:
        t0 = time.monotonic()
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(b.params())
        refused_in = time.monotonic() - t0
        print(f"max-connections: 11th refused in {ms(refused_in)}")
        assert refused_in < 2.0
        assert all(c.is_open for c in conns)
        conns.pop().close()
        # The broker reaps the closed connection at once; a new one is welcome.
        deadline = time.monotonic() + 5
        while True:
            try:
                conns.append(pika.BlockingConnection(b.params()))
                break
            except pika.exceptions.AMQPConnectionError:
                assert time.monotonic() < deadline, "no slot freed within 5 s"
                time.sleep(0.05)
        conns[-1].channel().queue_declare(queue='', exclusive=True)
    finally:
        for c in conns:
            if c.is_open:
                c.close()
    hello_world(b)


if __name__ == "__main__" and sys.argv[1:2] == ["flood"]:
    flood_main(*sys.argv[2:])
