"""Shared fixtures and helpers for the pika suite.

The suite runs against one of two brokers:
  * WARREN_TEST_PORT=<port>: an already running broker on 127.0.0.1:<port> (e.g. RabbitMQ,
    the behaviour oracle). Tests that need broker flags are skipped.
  * otherwise: `$WARREN_BIN --amqp-port 0 --data-dir <tmp> --log-level info`, started once per
    session (tests use unique names, so they do not need a broker each) and once more for
    each test that asks `make_broker(...)` for extra flags.

Every wait is bounded: helpers pump pika's I/O with short `process_data_events` slices until
a condition holds or a deadline passes. Nothing sleeps and hopes.
"""

import os
import re
import signal
import subprocess
import threading
import time
import uuid

import pika
import pytest

LISTEN_RE = re.compile(rb"^warren listening on amqp://127\.0\.0\.1:(\d+)\s*$")
STARTUP_TIMEOUT = 20.0
SHUTDOWN_TIMEOUT = 10.0


class Broker:
    """Where a broker listens, and how to connect to it as guest/guest."""

    def __init__(self, host, port, process=None):
        self.host = host
        self.port = port
        self.process = process
        self._out = bytearray()
        self._err = bytearray()
        self._lock = threading.Lock()

    def params(self, **kwargs):
        kwargs.setdefault("credentials", pika.PlainCredentials("guest", "guest"))
        # Fail fast instead of pika's default retries and 10 s socket timeouts.
        kwargs.setdefault("connection_attempts", 1)
        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("blocked_connection_timeout", 30)
        return pika.ConnectionParameters(host=self.host, port=self.port, **kwargs)

    def output(self):
        """What the broker process wrote so far (for failure messages)."""
        with self._lock:
            return (bytes(self._out) + bytes(self._err)).decode("utf-8", "replace")

    # -- process management (only for brokers this suite started) --

    def _drain(self, pipe, buf):
        for chunk in iter(lambda: pipe.read1(65536), b""):
            with self._lock:
                buf.extend(chunk)

    def _wait_listening(self):
        """Reads stdout line by line until the listening line; returns the port."""
        result = {}

        def reader():
            for line in iter(self.process.stdout.readline, b""):
                with self._lock:
                    self._out.extend(line)
                m = LISTEN_RE.match(line)
                if m:
                    result["port"] = int(m.group(1))
                    break
            # Keep draining so the pipe never fills.
            self._drain(self.process.stdout, self._out)

        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=self._drain, args=(self.process.stderr, self._err),
                         daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "port" not in result:
            if self.process.poll() is not None:
                time.sleep(0.1)  # let the drain threads catch the last output
                pytest.fail(f"warren exited with {self.process.returncode} before listening:\n"
                            f"{self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"warren did not print its listening line within "
                            f"{STARTUP_TIMEOUT} s:\n{self.output()}")
            time.sleep(0.02)
        return result["port"]

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=SHUTDOWN_TIMEOUT)
            pytest.fail(f"warren ignored SIGTERM for {SHUTDOWN_TIMEOUT} s:\n{self.output()}")


def external_port():
    port = os.environ.get("WARREN_TEST_PORT")
    return int(port) if port else None


def start_warren(data_dir, *extra_args):
    bin_path = os.environ.get("WARREN_BIN")
    if not bin_path:
        pytest.fail("set WARREN_BIN to the warren binary, or WARREN_TEST_PORT to a running broker")
    proc = subprocess.Popen(
        [bin_path, "--amqp-port", "0", "--http-port", "0", "--prometheus-port", "0", "--data-dir", str(data_dir), "--log-level", "info",
         *extra_args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    broker = Broker("127.0.0.1", None, proc)
    broker.port = broker._wait_listening()
    return broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    port = external_port()
    if port is not None:
        yield Broker("127.0.0.1", port)
        return
    b = start_warren(tmp_path_factory.mktemp("warren-data"))
    yield b
    b.stop()


@pytest.fixture
def make_broker(tmp_path_factory):
    """Starts a private warren with extra flags: `make_broker("--consumer-timeout", "1")`.
    Skips the test when running against an external broker (its flags are not ours to set)."""
    started = []

    def make(*args):
        if external_port() is not None:
            pytest.skip(f"needs broker flags {args}; WARREN_TEST_PORT is set")
        b = start_warren(tmp_path_factory.mktemp("warren-data"), *args)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def connect(broker):
    """`connect()` opens a BlockingConnection to the session broker (or to `connect(other)`);
    every connection still open is closed at teardown."""
    opened = []

    def _connect(target=None, **kwargs):
        conn = pika.BlockingConnection((target or broker).params(**kwargs))
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        if conn.is_open:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - teardown must not mask the test's failure
                pass


@pytest.fixture
def uniq(request):
    """`uniq("hello")` → "hello-<test name>-<random>", so concurrent runs never collide."""
    test = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40]

    def _uniq(prefix):
        return f"{prefix}-{test}-{uuid.uuid4().hex[:10]}"

    return _uniq


def pump(connections, until, timeout=5.0, what="condition"):
    """Processes I/O on `connections` (one or a list) in short slices until `until()` is true.
    Fails the test with `what` if `timeout` seconds pass first."""
    if not isinstance(connections, (list, tuple)):
        connections = [connections]
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        for conn in connections:
            if conn.is_open:
                conn.process_data_events(time_limit=0.02)
    return True


def eventually(fn, timeout=5.0, interval=0.02, what="condition"):
    """Retries `fn()` until it returns a truthy value (returned) or the deadline passes.
    For broker-side effects that RabbitMQ applies asynchronously (exclusive/auto-delete
    queue deletion after a close or cancel)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def queue_exists(conn, name):
    """Passive declare on a throwaway channel: True if `name` exists, False on 404."""
    ch = conn.channel()
    try:
        ch.queue_declare(queue=name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    ch.close()
    return True


def message_count(conn, name):
    ch = conn.channel()
    try:
        return ch.queue_declare(queue=name, passive=True).method.message_count
    finally:
        ch.close()


def wait_count(conn, name, expected, timeout=5.0):
    """Waits until the queue's ready-message count equals `expected`.

    RabbitMQ routes a publish to the queue asynchronously: a queue.declare-ok or basic.get
    sent right after a (non-confirmed) publish on the same channel may not see it yet. Tests
    that need exact counts either publish with confirms or wait here."""
    eventually(lambda: message_count(conn, name) == expected, timeout=timeout,
               what=f"{expected} messages in {name} (has {message_count(conn, name)})")


def get_message(channel, queue, auto_ack=True, timeout=5.0):
    """basic.get until a message is there (see wait_count for why one try is not enough)."""
    return eventually(lambda: (lambda r: r if r[0] is not None else None)(
        channel.basic_get(queue=queue, auto_ack=auto_ack)),
        timeout=timeout, what=f"a message in {queue}")


def expect_channel_error(code, text_prefix):
    """Context manager asserting a ChannelClosedByBroker with this reply code and text prefix."""
    return _ExpectClose(pika.exceptions.ChannelClosedByBroker, code, text_prefix)


def expect_connection_error(code, text_prefix):
    return _ExpectClose(pika.exceptions.ConnectionClosedByBroker, code, text_prefix)


class _ExpectClose:
    def __init__(self, exc_type, code, text_prefix):
        self.exc_type, self.code, self.text_prefix = exc_type, code, text_prefix
        self.error = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None:
            pytest.fail(f"expected {self.exc_type.__name__} {self.code} {self.text_prefix!r}, "
                        f"nothing was raised")
        if not isinstance(exc, self.exc_type):
            return False  # let the unexpected exception propagate unchanged
        assert exc.reply_code == self.code, f"reply code {exc.reply_code}: {exc.reply_text!r}"
        assert exc.reply_text.startswith(self.text_prefix), exc.reply_text
        self.error = exc
        return True
