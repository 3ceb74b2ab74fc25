#!/usr/bin/env bash
# Warren vs RabbitMQ: runs the issue-3 scenario table with warren-perf against both brokers
# in the same run and prints a Markdown table (median of 3 runs per cell).
#
#   benches/compare.sh                 # full run: 3 runs x 8 s per scenario per broker
#   benches/compare.sh --quick         # 1 run x 3 s per scenario
#   benches/compare.sh --warren-only   # skip RabbitMQ
#   benches/compare.sh --baseline REV  # before/after: this checkout vs git revision REV
#                                      # (built in a temporary worktree) instead of RabbitMQ
#   benches/compare.sh --rows s1,s2,s4 # only these scenario ids
#   benches/compare.sh --dashboard     # Warren with a dashboard open (a poller fetching
#                                      # /api/overview and /api/queues every 5 s) vs the
#                                      # same instance without one, instead of RabbitMQ
#
# Environment: RUNS (default 3, --quick 1), SECS (default 8, --quick 3),
# RABBIT_URI (default amqp://guest:guest@127.0.0.1:5672/%2f), KEEP_LOGS=1 keeps the JSON.
# Load only ever goes to 127.0.0.1.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

RUNS=${RUNS:-3}
SECS=${SECS:-8}
WARREN_ONLY=0
BASELINE=
ROWS=
DASHBOARD=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) RUNS=${RUNS_QUICK:-1}; SECS=${SECS_QUICK:-3} ;;
        --warren-only) WARREN_ONLY=1 ;;
        --baseline) BASELINE=${2:?--baseline needs a git revision}; shift; WARREN_ONLY=1 ;;
        --rows) ROWS=${2:?--rows needs a list of scenario ids}; shift ;;
        --dashboard) DASHBOARD=1; WARREN_ONLY=1 ;;
        -h|--help) sed -n 2,14p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown flag $1" >&2; exit 2 ;;
    esac
    shift
done
RABBIT_URI=${RABBIT_URI:-amqp://guest:guest@127.0.0.1:5672/%2f}

echo "building release..." >&2
# The revision measured is the one built now (the checkout may move during the run).
HEAD_REV=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || HEAD_REV="$HEAD_REV+changes"
cargo build --release --quiet --bin warren --bin warren-perf
PERF=$ROOT/target/release/warren-perf
WARREN=$ROOT/target/release/warren

WORK=$(mktemp -d)
cleanup() {
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [ "${KEEP_LOGS:-0}" = 1 ]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- Warren -----------------------------------------------------------------------------
# start_warren NAME BINARY: starts a broker with its own data dir; sets PORT_<NAME>.
PIDS=()
start_warren() {
    local name=$1 bin=$2 port=
    mkdir -p "$WORK/data-$name"
    # Builds with a management plane get free ports for it (RabbitMQ holds 15672/15692).
    local mgmt=()
    if "$bin" --help 2>&1 | grep -q -- --prometheus-port; then
        mgmt=(--http-port 0 --prometheus-port 0)
    fi
    (ulimit -n 65536 2>/dev/null || true; exec "$bin" --amqp-port 0 "${mgmt[@]}" --data-dir "$WORK/data-$name" \
        --log-level warn >"$WORK/$name.out" 2>"$WORK/$name.err") &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 100); do
        port=$(sed -n 's|^warren listening on amqp://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$WORK/$name.out" 2>/dev/null | head -1)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.err" >&2; echo "$name exited" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$port" ] || { echo "$name did not print its listening line" >&2; exit 1; }
    echo "$name pid $pid on port $port" >&2
    printf -v "PORT_$name" '%s' "$port"
}
start_warren warren "$WARREN"
WARREN_URI="amqp://guest:guest@127.0.0.1:$PORT_warren/%2f"

BASE_URI=

# --- Dashboard: one instance, measured with and without a dashboard open -------------------
# The same broker process carries both arms, so no difference between two instances (their
# memory layout, their place in the CPU caches) can pass for the poll's cost. Each run
# measures it twice back to back, polled and not, in ABBA order (odd runs polled first,
# even runs unpolled first), so warm-up and drift fall on both arms alike. The poller
# fetches /api/overview and /api/queues?page=1&page_size=100&sort=messages every 5 s, as
# the dashboard does, only while the polled arm runs (from its first second).
# DASHBOARD_POLL=0 polls in neither arm: an A/A control for the method's own noise.
if [ "$DASHBOARD" = 1 ]; then
    [ -z "$BASELINE" ] || { echo "--dashboard and --baseline exclude each other" >&2; exit 2; }
    BASE_URI=$WARREN_URI
    BASE_REV="$HEAD_REV, no dashboard"
    HTTP_PORT=$(sed -n 's|^warren management on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$WORK/warren.out" | head -1)
    [ -n "$HTTP_PORT" ] || { echo "warren printed no management line" >&2; exit 1; }
    # One Python process with one keep-alive HTTP connection: a shell loop would fork
    # `date`, `sleep` and `curl` processes, in both arms, and their CPU on 2 cores is
    # noise larger than the effect measured.
    python3 - "$WORK/poll-on" "$HTTP_PORT" "$WORK/polls" <<'PY' &
import base64, http.client, os, sys, time
flag, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
conn, last = None, None
while True:
    if os.path.exists(flag):
        now = time.monotonic()
        if last is None or now - last >= 5:
            last = now
            for path in ("/api/overview", "/api/queues?page=1&page_size=100&sort=messages"):
                try:
                    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", path, headers=auth)
                    conn.getresponse().read()
                except Exception:
                    conn = None
            with open(log, "a") as f:
                f.write("poll\n")
    else:
        last = None
    time.sleep(0.05)
PY
    PIDS+=("$!")
fi

# --- Baseline: the same broker at another revision ------------------------------------------
if [ -n "$BASELINE" ]; then
    BASE_REV=$(git rev-parse --short "$BASELINE")
    echo "building baseline $BASE_REV (release) in a temporary worktree..." >&2
    git worktree add --detach --force "$WORK/base" "$BASE_REV" >/dev/null
    # Its own target dir next to ours: dependencies build once and are kept.
    (cd "$WORK/base" && CARGO_TARGET_DIR=$ROOT/target/baseline cargo build --release --quiet --bin warren)
    git worktree remove --force "$WORK/base"
    start_warren base "$ROOT/target/baseline/release/warren"
    BASE_URI="amqp://guest:guest@127.0.0.1:$PORT_base/%2f"
fi

# --- RabbitMQ ---------------------------------------------------------------------------
rabbit_up() { timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' 2>/dev/null; }
HAVE_RABBIT=0
if [ "$WARREN_ONLY" = 0 ]; then
    if rabbit_up; then
        HAVE_RABBIT=1
    elif command -v rabbitmq-server >/dev/null 2>&1; then
        echo "RabbitMQ installed but not running: starting it..." >&2
        (rabbitmq-server >"$WORK/rabbit.log" 2>&1 &)
        for _ in $(seq 1 60); do rabbit_up && { HAVE_RABBIT=1; break; }; sleep 1; done
        [ "$HAVE_RABBIT" = 1 ] || echo "RabbitMQ did not come up; Warren only" >&2
    else
        echo "RabbitMQ not found; Warren only" >&2
    fi
fi
RABBIT_VERSION=
if [ "$HAVE_RABBIT" = 1 ]; then
    RABBIT_VERSION=$(rabbitmqctl version 2>/dev/null || true)
fi

# --- Scenarios --------------------------------------------------------------------------
# id | label | warren-perf args | metric | target text | target check (python expr on w, r)
# metric: recv (received msg/s), sent (sent msg/s), mbps:N (received msg/s * N bytes, MB/s),
#         p99 (consumer latency p99 µs), steady (median of the per-second received rates
#         after the first two seconds: warren-perf connects its producers one after the
#         other while the first ones already publish, and its summary counts from before
#         the clock starts, so with 100 producers the summary rate is meaningless)
SCENARIOS=(
"s1|1. 1→1, 16 B, auto-ack (msg/s received)|-x 1 -y 1 -s 16 -a|recv|≥1,000,000 and ≥8× RabbitMQ|w>=1e6 and (r is None or w>=8*r)"
"s2|2. 1→1, 16 B, manual multi-ack/100, prefetch 1000 (msg/s)|-x 1 -y 1 -s 16 -A 100 -q 1000|recv|≥700,000 and ≥8× RabbitMQ|w>=7e5 and (r is None or w>=8*r)"
"s3|3. publish only, 16 B, 1 producer (msg/s sent)|-x 1 -y 0 -s 16|sent|≥1,500,000|w>=1.5e6"
"s4|4. fan-out to 10 queues, 1 consumer each, 16 B (deliveries/s)|-x 1 -y 1 -s 16 -t fanout --queues 10 -a|recv|≥2,000,000|w>=2e6"
"s5a|5a. 1→1, 1 KB, auto-ack (MB/s of body)|-x 1 -y 1 -s 1024 -a|mbps:1024|—|True"
"s5b|5b. 1→1, 64 KB, auto-ack (MB/s of body)|-x 1 -y 1 -s 65536 -a|mbps:65536|≥1,500 MB/s|w>=1500"
"s6a|6a. 1→1 at 10k msg/s, 16 B (p99 latency µs)|-x 1 -y 1 -s 16 -a -r 10000|p99|≤200 µs|w<=200"
"s6b|6b. 1→1 at 100k msg/s, 16 B (p99 latency µs)|-x 1 -y 1 -s 16 -a -r 100000|p99|≤400 µs|w<=400"
"s8|8. persistent + confirms 1000, 1 KB, manual ack (msg/s received)|-x 1 -y 1 -s 1024 -f persistent -c 1000 -A 100 -q 1000|recv|≥5× RabbitMQ (issue 4)|r is None or w>=5*r"
"s7|7. 100 producers → 100 queues → 100 consumers, 16 B, multi-ack/100, prefetch 1000 (msg/s, steady state)|-x 100 -y 1 --queues 100 -e '' -s 16 -A 100 -q 1000|steady|≥80% of row 2|S2 is not None and w>=0.8*S2"
)

# run_one URI ARGS JSON: one warren-perf run; the JSON summary lands in JSON.
run_one() {
    local uri=$1 args=$2 json=$3 metric=$4
    local quiet=--quiet secs=$SECS
    eval "set -- $args"
    if [ "$metric" = steady ]; then quiet=; secs=$((SECS + 2)); fi
    if ! "$PERF" -h "$uri" -z "$secs" $quiet --json "$json" "$@" >"$json.log" 2>&1; then
        echo "  warren-perf failed: $(tail -2 "$json.log" | tr '\n' ' ')" >&2
        rm -f "$json"
    fi
}

metric_of() { # metric json
    python3 - "$1" "$2" <<'EOF'
import json, sys
m, path = sys.argv[1], sys.argv[2]
try:
    d = json.load(open(path))
except Exception:
    print("nan"); sys.exit()
if m == "steady":
    import re, statistics
    iv = [float(x) for x in re.findall(r"^time: \d+s, .*received: (\d+) msg/s", open(path + ".log").read(), re.M)]
    v = statistics.median(iv[2:]) if len(iv) > 2 else float("nan")
elif m == "recv": v = d["receive_rate"]
elif m == "sent": v = d["send_rate"]
elif m.startswith("mbps:"): v = d["receive_rate"] * int(m[5:]) / 1e6
elif m == "p99": v = d["latency_us"]["p99"] if d["latency_us"]["count"] else float("nan")
else: v = float("nan")
print(v)
EOF
}

median() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:] if x!="nan"]; print(s.median(v) if v else "nan")' "$@"; }

# Only the rows asked for (--rows), in the table's order.
if [ -n "$ROWS" ]; then
    keep=()
    for line in "${SCENARIOS[@]}"; do
        [[ ",$ROWS," == *",${line%%|*},"* ]] && keep+=("$line")
    done
    SCENARIOS=("${keep[@]}")
fi

declare -A RESULT
BROKERS=(warren)
[ "$HAVE_RABBIT" = 1 ] && BROKERS+=(rabbit)
[ -n "$BASE_URI" ] && BROKERS+=(base)
# The second column: RabbitMQ, or the baseline revision.
SECOND=; [ "$HAVE_RABBIT" = 1 ] && SECOND=rabbit; [ -n "$BASE_URI" ] && SECOND=base
for line in "${SCENARIOS[@]}"; do
    IFS='|' read -r id label args metric _ _ <<<"$line"
    for run in $(seq 1 "$RUNS"); do
        order=("${BROKERS[@]}")
        # --dashboard: "warren" is the polled arm, "base" the same instance unpolled; ABBA.
        [ "$DASHBOARD" = 1 ] && [ $((run % 2)) = 0 ] && order=(base warren)
        # Interleave the brokers run by run so background load hits both alike.
        for b in "${order[@]}"; do
            uri=$WARREN_URI; [ "$b" = rabbit ] && uri=$RABBIT_URI; [ "$b" = base ] && uri=$BASE_URI
            rm -f "$WORK/poll-on"
            [ "$DASHBOARD" = 1 ] && [ "$b" = warren ] && [ "${DASHBOARD_POLL:-1}" != 0 ] && touch "$WORK/poll-on"
            json="$WORK/$id.$b.$run.json"
            echo "[$id] $b run $run/$RUNS: warren-perf $args -z $SECS" >&2
            # Per-scenario queue and exchange names: a fan-out exchange never meets a
            # direct one of the same name, and a leftover never interferes.
            extra="-u wp-$id"; [[ " $args " == *" -e "* ]] || extra="$extra -e wp-$id"
            run_one "$uri" "$extra $args" "$json" "$metric"
            RESULT[$id.$b.$run]=$(metric_of "$metric" "$json")
            echo "      -> ${RESULT[$id.$b.$run]}" >&2
        done
        rm -f "$WORK/poll-on"
    done
done

# Row 7 floods RabbitMQ with a backlog it may not delete within warren-perf's 5 s cleanup
# wait (that is why it runs last): declare (purge) and delete its queues once more.
if [ "$HAVE_RABBIT" = 1 ]; then
    timeout 300 "$PERF" -h "$RABBIT_URI" -x 0 -y 0 --queues 100 -u wp-s7 -e '' -z 1 --quiet \
        >/dev/null 2>&1 || echo "note: RabbitMQ cleanup of wp-s7-* queues did not finish" >&2
fi

# --- Table ------------------------------------------------------------------------------
TABLE=$WORK/table.py
cat >"$TABLE" <<'EOF'
import math, sys
rows, second = [], sys.argv[1]
have_rabbit = second != ""
baseline = second == "base"
S2 = None
def num(x):
    v = float(x)
    return None if math.isnan(v) else v
def fmt(v, metric):
    if v is None: return "n/a"
    if metric == "p99": return f"{v:,.0f} µs"
    if metric.startswith("mbps"): return f"{v:,.0f} MB/s"
    return f"{v:,.0f}"
lines = sys.stdin.read().strip().split("\n")
out = []
for ln in lines:
    id, label, metric, target, check, w, r = ln.split("|")
    w, r = num(w), (num(r) if have_rabbit else None)
    if id == "s2": S2 = w
    ratio = "n/a"
    if w is not None and r and baseline:
        # after vs before: + is better for rates, - is better for latency.
        ratio = f"{(w / r - 1) * 100:+.1f}%"
    elif w is not None and r:
        ratio = f"{w / r:.1f}×" if metric != "p99" else f"{r / w:.1f}× lower" if w <= r else f"{w / r:.1f}× higher"
    ok = ""
    if w is not None and check != "True" and not baseline:
        try:
            ok = " ✅" if eval(check, {"w": w, "r": r, "S2": S2}) else " ❌"
        except Exception:
            ok = ""
    cols = [label, fmt(w, metric)]
    if have_rabbit: cols += [fmt(r, metric), ratio]
    if not baseline:
        cols.append(target + ok)
    out.append("| " + " | ".join(cols) + " |")
if baseline:
    hdr = ["scenario", "after (" + sys.argv[2] + ")", "before (" + sys.argv[3] + ")", "after vs before"]
else:
    hdr = ["scenario", "Warren"] + (["RabbitMQ", "Warren/RabbitMQ"] if have_rabbit else []) + ["target"]
print("| " + " | ".join(hdr) + " |")
print("|" + "|".join(["---"] + ["---:"] * (len(hdr) - 2) + ["---"]) + "|")
print("\n".join(out))
EOF

{
    # Table rows in the issue's order (row 7 ran last).
    for line in $(printf '%s\n' "${SCENARIOS[@]}" | sort -t'|' -k1,1V | tr ' ' '\037'); do
        line=${line//$'\037'/ }
        IFS='|' read -r id label args metric target check <<<"$line"
        wv=(); rv=()
        for run in $(seq 1 "$RUNS"); do
            wv+=("${RESULT[$id.warren.$run]}")
            [ -n "$SECOND" ] && rv+=("${RESULT[$id.$SECOND.$run]}")
        done
        w=$(median "${wv[@]}")
        r=nan; [ -n "$SECOND" ] && r=$(median "${rv[@]}")
        echo "$id|$label|$metric|$target|$check|$w|$r"
    done
} | python3 "$TABLE" "$SECOND" "$HEAD_REV" "${BASE_REV:-}" >"$WORK/table.md"

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo
echo "Machine: $(nproc) cores, ${CPU:-unknown CPU}; $(uname -sr). Date: $(date -u '+%Y-%m-%d %H:%M UTC')."
echo "Warren $HEAD_REV${RABBIT_VERSION:+; RabbitMQ $RABBIT_VERSION}${BASE_REV:+; baseline Warren $BASE_REV}."
echo "Median of $RUNS run(s) of ${SECS} s each (warren-perf -z $SECS); brokers interleaved run by run."
if [ "$DASHBOARD" = 1 ]; then
    echo "One instance, each run measured polled (\"after\") and unpolled (\"before\") back to back in ABBA order; $(cat "$WORK/polls" 2>/dev/null | wc -l) polls of /api/overview and /api/queues in all (DASHBOARD_POLL=${DASHBOARD_POLL:-1})."
    for line in "${SCENARIOS[@]}"; do
        id=${line%%|*}
        ratios=()
        for run in $(seq 1 "$RUNS"); do
            ratios+=("$(python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print("nan" if a!=a or b!=b or b==0 else a/b)' "${RESULT[$id.warren.$run]}" "${RESULT[$id.base.$run]}")")
        done
        echo "$id: polled/unpolled per run: ${ratios[*]}; median $(median "${ratios[@]}")"
    done
fi
echo
cat "$WORK/table.md"
