#!/usr/bin/env bash
# Issue 12 figures for TTL, dead-lettering and expiry, Warren vs RabbitMQ in the same run
# (127.0.0.1 only; RabbitMQ 3.10 on 5672):
#   plain   1→1 16 B auto-ack on a plain queue: BASE_BIN (the build before) vs this build
#   ttl     1→1 16 B auto-ack on a queue with x-message-ttl=60000
#   prio    1→1 16 B auto-ack on a priority queue (x-max-priority=9: 10 levels), each
#           message with a random priority 0..9 (warren-perf --priority-random 10)
#   dlx     reject→DLX→consumer: a consumer rejects every message of queue A
#           (x-dead-letter-exchange "", routing key B); a second consumer takes B
#   expiry  1,000,000 queued 16 B messages with x-message-ttl: wall time from the TTL
#           deadline until the queue is empty, and the broker's CPU time meanwhile
# Medians of RUNS (default 3) runs of SECS (default 5) seconds, brokers interleaved.
#
#   BASE_BIN=/path/to/old/warren benches/queue_features.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PERF=$ROOT/target/release/warren-perf
WARREN=$ROOT/target/release/warren
RUNS=${RUNS:-3}
SECS=${SECS:-5}
RABBIT=amqp://guest:guest@127.0.0.1:5672/%2f
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

start() { # start NAME BIN → echoes "pid port"
    local name=$1 bin=$2 port=
    mkdir -p "$WORK/$name"
    "$bin" --amqp-port 0 --http-port 0 --prometheus-port 0 --data-dir "$WORK/$name" \
        --log-level warn >"$WORK/$name.out" 2>"$WORK/$name.err" &
    local pid=$!
    for _ in $(seq 1 100); do
        port=$(sed -n 's|^warren listening on amqp://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$WORK/$name.out" | head -1)
        [ -n "$port" ] && break
        sleep 0.1
    done
    echo "$pid $port"
}

read -r WPID WPORT < <(start warren "$WARREN")
PIDS+=("$WPID")
WURI=amqp://guest:guest@127.0.0.1:$WPORT/%2f
if [ -n "${BASE_BIN:-}" ]; then
    read -r BPID BPORT < <(start base "$BASE_BIN")
    PIDS+=("$BPID")
    BURI=amqp://guest:guest@127.0.0.1:$BPORT/%2f
fi

rate() { # rate URI ARGS... → received msg/s of one run
    local json=$WORK/run.json
    "$PERF" -h "$1" -z "$SECS" --quiet --json "$json" "${@:2}" >/dev/null 2>&1
    python3 -c "import json,sys; d=json.load(open('$json')); print(int(d['receive_rate']))"
}
median() { python3 -c "import sys,statistics; print(int(statistics.median(float(x) for x in sys.argv[1:])))" "$@"; }

py() { python3 - "$@"; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# --- plain, ttl and prio --------------------------------------------------------------------
for row in plain ttl prio; do
    args=(-x 1 -y 1 -s 16 -a -u "qf-$row-$$" -e '')
    [ $row = ttl ] && args+=(--queue-arg x-message-ttl=60000)
    [ $row = prio ] && args+=(--queue-arg x-max-priority=9 --priority-random 10)
    declare -A R=()
    for i in $(seq 1 "$RUNS"); do
        R[warren]+=" $(rate "$WURI" "${args[@]}")"
        # The build before has no priority queues: no base figure for that row.
        [ -n "${BASE_BIN:-}" ] && [ $row != prio ] && R[base]+=" $(rate "$BURI" "${args[@]}")"
        R[rabbitmq]+=" $(rate "$RABBIT" "${args[@]}")"
    done
    for b in "${!R[@]}"; do echo "$row $b median $(median ${R[$b]}) msg/s (runs:${R[$b]})"; done
    unset R
done

# --- reject → DLX → consumer ---------------------------------------------------------------
dlx_run() { # dlx_run URI → msg/s received from the dead-letter queue
    local uri=$1 a=qf-dlx-a-$$ b=qf-dlx-b-$$
    py "$uri" "$b" <<'EOF'
import pika, sys
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1])); ch = c.channel()
ch.queue_declare(sys.argv[2]); ch.queue_purge(sys.argv[2]); c.close()
EOF
    "$PERF" -h "$uri" -x 0 -y 1 -u "$b" -e '' -p -a -z "$SECS" --quiet --json "$WORK/b.json" >/dev/null 2>&1 &
    local cons=$!
    "$PERF" -h "$uri" -x 1 -y 1 -s 16 -u "$a" -e '' --reject -q 1000 \
        --queue-arg x-dead-letter-exchange= --queue-arg "x-dead-letter-routing-key=$b" \
        -z "$SECS" --quiet >/dev/null 2>&1
    wait $cons || true
    py "$uri" "$b" <<'EOF'
import pika, sys
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1])); ch = c.channel()
ch.queue_delete(sys.argv[2]); c.close()
EOF
    python3 -c "import json; d=json.load(open('$WORK/b.json')); print(int(d['receive_rate']))"
}
W=""; Q=""
for i in $(seq 1 "$RUNS"); do W+=" $(dlx_run "$WURI")"; Q+=" $(dlx_run "$RABBIT")"; done
echo "dlx warren median $(median $W) msg/s (runs:$W)"
echo "dlx rabbitmq median $(median $Q) msg/s (runs:$Q)"

# --- expiry of 1,000,000 queued messages ------------------------------------------------------
expiry_run() { # expiry_run URI PID-or-empty
    local uri=$1 pid=$2 q=qf-exp-$$
    py "$uri" "$q" <<'EOF'
import pika, sys
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1])); ch = c.channel()
ch.queue_delete(sys.argv[2]); ch.queue_declare(sys.argv[2], arguments={"x-message-ttl": 45000}); c.close()
EOF
    local t0; t0=$(date +%s.%N)
    "$PERF" -h "$uri" -x 1 -y 0 -s 16 -C 1000000 -u "$q" -e '' -p --quiet >/dev/null 2>&1
    py "$uri" "$q" "$t0" "$pid" <<'EOF'
import pika, sys, time, os
uri, q, t0, pid = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
def cpu():
    if pid:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    # RabbitMQ: the beam process's CPU
    import subprocess
    p = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True).stdout.split()
    tot = 0.0
    for b in p:
        f = open(f"/proc/{b}/stat").read().rsplit(")", 1)[1].split()
        tot += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return tot
c = pika.BlockingConnection(pika.URLParameters(uri)); ch = c.channel()
n = ch.queue_declare(q, passive=True).method.message_count
filled = time.time() - t0
# The first message expires at t0 + TTL, the last at about t0 + filled + TTL (expiry
# follows the publish rate): measure the broker's CPU from 1 s before the first deadline
# until the queue is empty, and how long after the last deadline that is.
first, deadline = t0 + 45.0, t0 + filled + 45.0
while time.time() < first - 1: time.sleep(0.2)
c0, w0 = cpu(), time.time()
ch2 = pika.BlockingConnection(pika.URLParameters(uri)).channel()
# Poll with the management-free count: a passive declare (TTL is not x-expires).
while ch2.queue_declare(q, passive=True).method.message_count > 0: time.sleep(0.01)
w1, c1 = time.time(), cpu()
ch2.queue_delete(q)
print(f"queued {n} in {filled:.1f}s; empty {w1 - deadline:+.2f}s after the last deadline; broker CPU {c1 - c0:.2f}s from 1s before it")
EOF
}
echo "expiry warren: $(expiry_run "$WURI" "$WPID")"
echo "expiry rabbitmq: $(expiry_run "$RABBIT" "")"
