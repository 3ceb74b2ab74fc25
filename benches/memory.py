#!/usr/bin/env python3
"""Warren's memory footprint: RSS (VmRSS from /proc/PID/status) per idle connection, per
empty queue and per queued 16-byte message.

    python3 benches/memory.py                  # builds nothing; uses target/release/warren
    python3 benches/memory.py --conns 2000 --queues 2000 --messages 200000   # smaller
    python3 benches/memory.py --rabbit         # the same steps against RabbitMQ on :5672
    python3 benches/memory.py --warren target/baseline/release/warren   # another build

Steps: start Warren (fd limit 65536) and read its listening line; baseline RSS; open N idle
connections with the full AMQP handshake over raw sockets (header, start-ok PLAIN, tune-ok
with heartbeat 0, open "/"); declare M empty queues on one connection; publish K 16-byte
messages into one queue with warren-perf (-y 0 -C K --keep) and wait until the queue holds
them. Every connection stays open to the end so no freed memory is reused by a later step.
Stdlib only. Load goes to 127.0.0.1 only.
"""

import argparse
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAME_END = b"\xce"


# --- AMQP frames built by hand ------------------------------------------------------------

def mgmt_flags(exe):
    """Free ports for the management plane, on builds that have one."""
    out = subprocess.run([exe, "--help"], capture_output=True, text=True).stdout
    return ["--http-port", "0", "--prometheus-port", "0"] if "--prometheus-port" in out else []


def shortstr(s):
    b = s.encode()
    return bytes([len(b)]) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + FRAME_END


def method(channel, class_id, method_id, args=b""):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


START_OK = method(
    0, 10, 11,
    longstr(b"")  # client-properties: empty table
    + shortstr("PLAIN") + longstr(b"\0guest\0guest") + shortstr("en_US"),
)
TUNE_OK = method(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0))  # heartbeat off
OPEN = method(0, 10, 40, shortstr("/") + shortstr("") + b"\0")
CHANNEL_OPEN = method(1, 20, 10, shortstr(""))


def queue_declare(name, passive=False, no_wait=False):
    bits = (1 if passive else 0) | (16 if no_wait else 0)
    return method(1, 50, 10, struct.pack(">H", 0) + shortstr(name) + bytes([bits]) + longstr(b""))


def read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def read_method(sock):
    """Reads frames until a method frame; returns (class, method, args)."""
    while True:
        kind, _ch, size = struct.unpack(">BHI", read_exact(sock, 7))
        payload = read_exact(sock, size + 1)[:-1]
        if kind == 1:
            c, m = struct.unpack(">HH", payload[:4])
            return c, m, payload[4:]


def expect(sock, class_id, method_id):
    c, m, args = read_method(sock)
    if (c, m) != (class_id, method_id):
        raise RuntimeError(f"expected {class_id}.{method_id}, got {c}.{m}: {args[:80]!r}")
    return args


def handshake(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    expect(s, 10, 10)  # start
    s.sendall(START_OK)
    expect(s, 10, 30)  # tune
    s.sendall(TUNE_OK + OPEN)
    expect(s, 10, 41)  # open-ok
    return s


def queue_depth(sock, name):
    sock.sendall(queue_declare(name, passive=True))
    args = expect(sock, 50, 11)
    n = args[0]
    count, _consumers = struct.unpack(">II", args[1 + n:9 + n])
    return count


# --- RSS ----------------------------------------------------------------------------------

def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def settle(pid, secs=1.0):
    """RSS once it stops moving (or after a few seconds)."""
    last = rss(pid)
    for _ in range(int(secs * 10) * 5):
        time.sleep(0.1)
        cur = rss(pid)
        if abs(cur - last) < 64 * 1024:
            time.sleep(secs)
            return rss(pid)
        last = cur
    return rss(pid)


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else max(soft, min(n, hard))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, max(n, hard) if hard != resource.RLIM_INFINITY else hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def start_warren(exe):
    if not os.path.exists(exe):
        sys.exit(f"{exe} missing: run cargo build --release first")
    data = tempfile.mkdtemp(prefix="warren-mem-")
    p = subprocess.Popen(
        [exe, "--amqp-port", "0", *mgmt_flags(exe), "--data-dir", data, "--log-level", "warn"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        preexec_fn=lambda: raise_nofile(65536),
    )
    line = p.stdout.readline()
    prefix = "warren listening on amqp://127.0.0.1:"
    if not line.startswith(prefix):
        p.kill()
        sys.exit(f"unexpected first line from warren: {line!r}")
    return p, int(line[len(prefix):].strip())


def rabbit_pid():
    out = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True).stdout.split()
    if not out:
        sys.exit("no beam.smp process found")
    return int(out[0])


# --- main ---------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--queues", type=int, default=10_000)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--rabbit", action="store_true", help="measure RabbitMQ (beam.smp) on 127.0.0.1:5672")
    ap.add_argument("--warren", default=os.path.join(ROOT, "target", "release", "warren"),
                    help="the warren binary to measure (default: target/release/warren)")
    a = ap.parse_args()

    raise_nofile(a.conns + 1024)
    proc = None
    if a.rabbit:
        pid, port, name = rabbit_pid(), 5672, "RabbitMQ"
    else:
        proc, port = start_warren(a.warren)
        pid, name = proc.pid, "Warren"
    uri = f"amqp://guest:guest@127.0.0.1:{port}/%2f"
    tag = f"memq-{os.getpid()}"
    socks = []
    try:
        time.sleep(0.5)
        base = settle(pid)
        print(f"{name} pid {pid} port {port}: baseline RSS {base / 1e6:.1f} MB")

        t = time.time()
        for i in range(a.conns):
            socks.append(handshake(port))
        after_conns = settle(pid, 2.0)
        per_conn = (after_conns - base) / max(a.conns, 1)
        print(f"{a.conns} idle connections ({time.time() - t:.1f}s): RSS {after_conns / 1e6:.1f} MB, "
              f"{per_conn / 1024:.1f} KB per connection")

        ctl = handshake(port)
        ctl.sendall(CHANNEL_OPEN)
        expect(ctl, 20, 11)
        t = time.time()
        batch = []
        for i in range(a.queues):
            batch.append(queue_declare(f"{tag}-{i}", no_wait=True))
            if len(batch) == 500:
                ctl.sendall(b"".join(batch))
                batch = []
        ctl.sendall(b"".join(batch) + queue_declare(f"{tag}-sync"))
        expect(ctl, 50, 11)
        after_queues = settle(pid, 2.0)
        per_queue = (after_queues - after_conns) / max(a.queues, 1)
        print(f"{a.queues} empty queues ({time.time() - t:.1f}s): RSS {after_queues / 1e6:.1f} MB, "
              f"{per_queue / 1024:.2f} KB per queue")

        t = time.time()
        perf = os.path.join(ROOT, "target", "release", "warren-perf")
        subprocess.run([perf, "-h", uri, "-x", "1", "-y", "0", "-s", "16", "-C", str(a.messages),
                        "-u", tag, "-e", "", "--keep", "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        deadline = time.time() + 120
        depth = 0
        while time.time() < deadline:
            depth = queue_depth(ctl, tag)
            if depth >= a.messages:
                break
            time.sleep(0.2)
        after_msgs = settle(pid, 2.0)
        per_msg = (after_msgs - after_queues) / max(depth, 1)
        print(f"{depth} queued 16-byte messages ({time.time() - t:.1f}s): RSS {after_msgs / 1e6:.1f} MB, "
              f"{per_msg:.1f} B per message = {per_msg - 16:.1f} B beyond the body")

        print()
        print(f"| {name} | measured | target |")
        print("|---|---:|---|")
        print(f"| baseline RSS | {base / 1e6:.1f} MB | |")
        print(f"| per idle connection | {per_conn / 1024:.1f} KB | ≤20 KB {'✅' if per_conn <= 20 * 1024 else '❌'} |")
        print(f"| per empty queue | {per_queue / 1024:.2f} KB | ≤4 KB {'✅' if per_queue <= 4 * 1024 else '❌'} |")
        print(f"| per queued message beyond its 16 B body | {per_msg - 16:.0f} B | ≤80 B "
              f"{'✅' if per_msg - 16 <= 80 else '❌'} |")

        # Clean up the queues (matters for RabbitMQ, which outlives us).
        ctl.sendall(method(1, 50, 40, struct.pack(">H", 0) + shortstr(tag) + b"\x04"))
        for i in range(a.queues):
            ctl.sendall(method(1, 50, 40, struct.pack(">H", 0) + shortstr(f"{tag}-{i}") + b"\x04"))
        ctl.sendall(method(1, 50, 40, struct.pack(">H", 0) + shortstr(f"{tag}-sync") + b"\x00"))
        expect(ctl, 50, 41)
        ctl.close()
    finally:
        for s in socks:
            s.close()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
