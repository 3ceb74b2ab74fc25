#!/usr/bin/env bash
# AMQP over TLS vs plain TCP on one Warren (release build), same run, 127.0.0.1 only:
#   - 1 producer -> 1 consumer, auto-ack, 16 B and 1 KB bodies (msg/s received);
#   - new connections per second (TCP [+ TLS] + AMQP handshake + channel.open + close).
# Plain and TLS runs are interleaved run by run so background load hits both alike;
# the table shows medians. Certificates are made fresh with `openssl` (ECDSA P-256).
#
#   benches/tls.sh                 # 3 runs x 8 s per row
#   RUNS=5 SECS=10 benches/tls.sh
#   HANDSHAKES=3000 THREADS=4 benches/tls.sh
#   NO_BUILD=1 benches/tls.sh      # the release binaries already in target/
#   RABBIT_TLS_URI=amqps://guest:guest@127.0.0.1:5671/%2f RABBIT_TLS_CA=/etc/rabbitmq/tls/ca.pem \
#       benches/tls.sh             # RabbitMQ too, plain (RABBIT_URI, default 5672) and TLS,
#                                  # interleaved with Warren's runs
#
# RabbitMQ needs a TLS listener for that (rabbitmq.conf: listeners.ssl.default = 5671 and
# ssl_options.cacertfile/certfile/keyfile, then a restart).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
SECS=${SECS:-8}
HANDSHAKES=${HANDSHAKES:-2000}
THREADS=${THREADS:-4}
cd "$ROOT"
# NO_BUILD=1: use the release binaries as they are (already built).
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release --quiet --bin warren --bin warren-perf
WARREN=$ROOT/target/release/warren
PERF=$ROOT/target/release/warren-perf
WORK=$(mktemp -d)
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# A CA, and a server certificate for 127.0.0.1 signed by it.
(
    cd "$WORK"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.pem -days 2 -subj "/CN=tls.sh CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out server.pem -days 2 -extfile ext 2>/dev/null
)

"$WARREN" --amqp-port 0 --http-port 0 --prometheus-port 0 --tls-port 0 \
    --tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key" \
    --data-dir "$WORK/data" --log-level warn >"$WORK/warren.out" 2>&1 &
PID=$!
for _ in $(seq 1 200); do
    grep -q "warren listening on amqps://" "$WORK/warren.out" 2>/dev/null && break
    sleep 0.05
done
PLAIN_PORT=$(sed -n 's|^warren listening on amqp://.*:\([0-9]*\)$|\1|p' "$WORK/warren.out" | head -1)
TLS_PORT=$(sed -n 's|^warren listening on amqps://.*:\([0-9]*\)$|\1|p' "$WORK/warren.out" | head -1)
[ -n "$PLAIN_PORT" ] && [ -n "$TLS_PORT" ] || { cat "$WORK/warren.out"; exit 1; }
PLAIN_URI="amqp://guest:guest@127.0.0.1:$PLAIN_PORT/%2f"
TLS_URI="amqps://guest:guest@127.0.0.1:$TLS_PORT/%2f"

recv_rate() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["receive_rate"])' "$1" 2>/dev/null || echo nan; }
median() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:] if x!="nan"]; print(s.median(v) if v else "nan")' "$@"; }

RABBIT_URI=${RABBIT_URI:-amqp://guest:guest@127.0.0.1:5672/%2f}
MODES=(plain tls)
[ -n "${RABBIT_TLS_URI:-}" ] && MODES+=(rplain rtls)
# mode_args MODE: sets uri and extra for a mode.
mode_args() {
    uri=$PLAIN_URI; extra=()
    case "$1" in
        tls) uri=$TLS_URI; extra=(--tls-ca "$WORK/ca.pem") ;;
        rplain) uri=$RABBIT_URI ;;
        rtls) uri=$RABBIT_TLS_URI; extra=(--tls-ca "${RABBIT_TLS_CA:?RABBIT_TLS_CA must name the CA file of RabbitMQ}") ;;
    esac
}

declare -A R
for size in 16 1024; do
    for run in $(seq 1 "$RUNS"); do
        for mode in "${MODES[@]}"; do
            mode_args "$mode"
            json=$WORK/$mode-$size-$run.json
            echo "[$size B] run $run/$RUNS $mode: warren-perf -x 1 -y 1 -s $size -a -z $SECS" >&2
            "$PERF" -h "$uri" "${extra[@]}" -x 1 -y 1 -s "$size" -a -z "$SECS" --quiet \
                -u "tls-sh-$mode-$size" -e '' --json "$json" >"$json.log" 2>&1 || true
            R[$mode-$size]="${R[$mode-$size]:-} $(recv_rate "$json")"
        done
    done
done
for run in $(seq 1 "$RUNS"); do
    for mode in "${MODES[@]}"; do
        mode_args "$mode"
        echo "[connections] run $run/$RUNS $mode: --handshakes $HANDSHAKES -x $THREADS" >&2
        out=$("$PERF" -h "$uri" "${extra[@]}" --handshakes "$HANDSHAKES" -x "$THREADS" 2>&1 || true)
        rate=$(sed -n 's/.*(\([0-9]*\) conn\/s.*/\1/p' <<<"$out")
        R[$mode-conn]="${R[$mode-conn]:-} ${rate:-nan}"
    done
done

row() { # label key [prefix: "" Warren, "r" RabbitMQ]
    local p t
    p=$(median ${R[${3:-}plain-$2]}); t=$(median ${R[${3:-}tls-$2]})
    python3 - "$1" "$p" "$t" <<'EOF'
import sys
label, p, t = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
ratio = t / p if p == p and p > 0 and t == t else float("nan")
print(f"| {label:<38} | {p:>12,.0f} | {t:>12,.0f} | {ratio:>9.2f} |")
EOF
}
echo
echo "Warren $(git -C "$ROOT" rev-parse --short HEAD), medians of $RUNS run(s) of ${SECS} s (plain and TLS interleaved);"
echo "TLS: rustls (ring), ECDSA P-256 certificate, TLS 1.3, server verified by warren-perf."
echo
echo "| scenario                               |        plain |          TLS | TLS/plain |"
echo "|----------------------------------------|-------------:|-------------:|----------:|"
row "1→1, 16 B, auto-ack (msg/s received)" 16
row "1→1, 1 KB, auto-ack (msg/s received)" 1024
row "new connections/s ($THREADS threads)" conn
if [ -n "${RABBIT_TLS_URI:-}" ]; then
    echo
    echo "RabbitMQ $(rabbitmqctl version 2>/dev/null || echo '?') in the same run (its TLS: Erlang ssl, the same kind of certificate):"
    echo
    echo "| scenario                               |        plain |          TLS | TLS/plain |"
    echo "|----------------------------------------|-------------:|-------------:|----------:|"
    row "1→1, 16 B, auto-ack (msg/s received)" 16 r
    row "1→1, 1 KB, auto-ack (msg/s received)" 1024 r
    row "new connections/s ($THREADS threads)" conn r
fi
echo
echo "raw runs: $(for k in "${!R[@]}"; do printf '%s:[%s] ' "$k" "${R[$k]# }"; done)"
