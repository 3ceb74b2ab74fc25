#!/usr/bin/env python3
"""Management-plane figures (issue 10), loopback only, Python standard library only.

With N queues declared (over AMQP, pipelined in batches), times
    GET /api/queues?page=1&page_size=100&sort=messages
    GET /api/overview
(median, p90 and max of --samples each, one keep-alive connection) for Warren (a release
build it starts itself on free ports, in a temporary data directory) and for the RabbitMQ
running on 127.0.0.1:5672/15672, measured in the same run.

RabbitMQ's queues go into a vhost of their own (created here, with guest's permissions),
so that deleting the vhost afterwards removes them all at once and other users of that
RabbitMQ see none of them in their own vhosts.

    cargo build --release
    python3 benches/mgmt_bench.py --queues 100000 --rabbit-queues 100000
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

# Seconds to wait after declaring, so that a statistics sample has been taken.
SETTLE = 6
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()
PATHS = [
    "/api/queues?page=1&page_size=100&sort=messages",
    "/api/overview",
]


# ----- a minimal AMQP 0-9-1 client: handshake, then pipelined queue.declare --------------


def shortstr(s):
    b = s.encode()
    return bytes([len(b)]) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def method(channel, class_id, method_id, args):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


class Amqp:
    def __init__(self, port, vhost):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.s.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(10, 10)  # start
        self.s.sendall(
            method(
                0,
                10,
                11,
                longstr(b"")  # client properties: empty table
                + shortstr("PLAIN")
                + longstr(b"\x00guest\x00guest")
                + shortstr("en_US"),
            )
        )
        _, args = self.expect(10, 30)  # tune
        channel_max, frame_max, _hb = struct.unpack(">HIH", args[:8])
        self.s.sendall(method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
        self.s.sendall(method(0, 10, 40, shortstr(vhost) + shortstr("") + b"\x00"))
        self.expect(10, 41)  # open-ok
        self.s.sendall(method(1, 20, 10, shortstr("")))
        self.expect(20, 11)  # channel open-ok

    def frame(self):
        while True:
            if len(self.buf) >= 7:
                kind, ch, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= size + 8:
                    payload = self.buf[7 : 7 + size]
                    self.buf = self.buf[size + 8 :]
                    return kind, ch, payload
            d = self.s.recv(1 << 20)
            if not d:
                raise RuntimeError("AMQP connection closed")
            self.buf += d

    def expect(self, class_id, method_id):
        while True:
            kind, _, payload = self.frame()
            if kind != 1:
                continue
            c, m = struct.unpack(">HH", payload[:4])
            if (c, m) == (class_id, method_id):
                return (c, m), payload[4:]
            if (c, m) in ((10, 50), (20, 40)):
                raise RuntimeError("closed by the broker: %r" % payload)

    def declare_many(self, names, batch=2000):
        for i in range(0, len(names), batch):
            part = names[i : i + batch]
            out = b"".join(
                method(1, 50, 10, b"\x00\x00" + shortstr(n) + b"\x00" + b"\x00\x00\x00\x00")
                for n in part  # reserved, name, no flags (transient), empty arguments
            )
            self.s.sendall(out)
            for _ in part:
                self.expect(50, 11)

    def close(self):
        try:
            self.s.sendall(method(0, 10, 50, struct.pack(">H", 200) + shortstr("bye") + b"\x00" * 4))
            self.expect(10, 51)
        except Exception:
            pass
        self.s.close()


# ----- HTTP ---------------------------------------------------------------------------


def api(port, method_, path, body=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {"Authorization": AUTH}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    c.request(method_, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    if conn is None:
        c.close()
    return r.status, data


def measure(port, samples):
    """Median/p90/max in ms of each path, on one keep-alive connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    out = {}
    for path in PATHS:
        status, data = api(port, "GET", path, conn=c)  # warm-up, and a check
        if status != 200:
            raise RuntimeError("%s: %d %r" % (path, status, data[:200]))
        if path.startswith("/api/queues"):
            total = json.loads(data)["total_count"]
            print("    %s: total_count %d, %d bytes" % (path, total, len(data)))
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            status, data = api(port, "GET", path, conn=c)
            times.append((time.perf_counter() - t0) * 1000)
            assert status == 200
        times.sort()
        out[path] = (
            statistics.median(times),
            times[int(len(times) * 0.9) - 1 if len(times) >= 10 else -1],
            times[-1],
        )
    c.close()
    return out


def declare(amqp_port, vhost, n, prefix):
    names = ["%s-%06d" % (prefix, i) for i in range(n)]
    t0 = time.perf_counter()
    a = Amqp(amqp_port, vhost)
    a.declare_many(names)
    a.close()
    took = time.perf_counter() - t0
    print("    declared %d queues in %.1f s (%.0f/s)" % (n, took, n / took))
    return took


def report(name, n, figures):
    for path, (med, p90, mx) in figures.items():
        print("  %-9s %7d queues  %-48s median %9.3f ms  p90 %9.3f ms  max %9.3f ms" % (name, n, path, med, p90, mx))


def run_warren(binary, n, samples):
    data = tempfile.mkdtemp(prefix="warren-mgmt-bench-")
    p = subprocess.Popen(
        [binary, "--amqp-port", "0", "--http-port", "0", "--prometheus-port", "0",
         "--data-dir", data, "--log-level", "warn"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        amqp = http_ = None
        deadline = time.time() + 30
        while (amqp is None or http_ is None) and time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            if line.startswith("warren listening on amqp://"):
                amqp = int(line.strip().rsplit(":", 1)[1])
            elif line.startswith("warren management on http://"):
                http_ = int(line.strip().rsplit(":", 1)[1])
        if amqp is None or http_ is None:
            raise RuntimeError("warren did not announce its ports")
        print("warren (pid %d, amqp %d, http %d):" % (p.pid, amqp, http_))
        declare(amqp, "/", n, "bench")
        # Let one statistics interval pass (5 s, RabbitMQ's and Warren's default): both
        # brokers' overviews report queue totals as of their last statistics sample.
        time.sleep(SETTLE)
        figures = measure(http_, samples)
        rss = open("/proc/%d/status" % p.pid).read().split("VmRSS:")[1].split()[0]
        print("    RSS %s KiB" % rss)
        return figures
    finally:
        p.terminate()
        p.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def run_rabbit(n, samples, amqp_port=5672, http_port=15672):
    vhost = "mgmt-bench-%d-%d" % (os.getpid(), int(time.time()))
    ev = urllib.parse.quote(vhost, safe="")
    print("rabbitmq (vhost %s):" % vhost)
    st, body = api(http_port, "PUT", "/api/vhosts/" + ev, {})
    assert st in (201, 204), (st, body)
    try:
        st, body = api(http_port, "PUT", "/api/permissions/%s/guest" % ev,
                       {"configure": ".*", "write": ".*", "read": ".*"})
        assert st in (201, 204), (st, body)
        declare(amqp_port, vhost, n, "bench")
        time.sleep(SETTLE)
        figures = measure(http_port, samples)
        # Printed before the clean-up, which can outlast cowboy's request timeout.
        report("rabbitmq", n, figures)
        return figures
    finally:
        t0 = time.perf_counter()
        try:
            st, body = api(http_port, "DELETE", "/api/vhosts/" + ev)
            print("    deleted vhost %s (%d) in %.1f s" % (vhost, st, time.perf_counter() - t0))
        except (OSError, http.client.HTTPException) as e:
            # RabbitMQ goes on deleting after it drops the request (100,000 queues).
            print("    deleting vhost %s: %s after %.1f s (RabbitMQ finishes it on its own)"
                  % (vhost, e, time.perf_counter() - t0))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warren", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "warren"))
    ap.add_argument("--queues", type=int, default=100_000)
    ap.add_argument("--rabbit-queues", type=int, default=None, help="queues for RabbitMQ (default: --queues; 0 skips it)")
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    rq = args.queues if args.rabbit_queues is None else args.rabbit_queues
    results = []
    results.append(("warren", args.queues, run_warren(args.warren, args.queues, args.samples)))
    if rq:
        results.append(("rabbitmq", rq, run_rabbit(rq, args.samples)))
    print()
    for name, n, figures in results:
        report(name, n, figures)


if __name__ == "__main__":
    sys.exit(main())
