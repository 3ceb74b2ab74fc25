#!/usr/bin/env bash
# Soak: mixed load on Warren with warren-perf plus random connection kills, for
# SOAK_SECS seconds (default 1800). Samples the broker's RSS every 10 s and, at the end,
# prints RSS first/last/max (with the ready/unacked message counts from SIGUSR1) and every log line at WARN or ERROR that is not an expected
# consequence of the kills. Not part of CI (it is long by design).
#
#   benches/soak.sh              # 30 minutes
#   SOAK_SECS=120 benches/soak.sh
#
# Load only ever goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SOAK_SECS:-1800}
cargo build --release --quiet
W=target/release/warren
P=target/release/warren-perf
DATA=$(mktemp -d)
LOG=$(mktemp)
$W --amqp-port 0 --http-port 0 --prometheus-port 0 --data-dir "$DATA" --log-level info >"$LOG.out" 2>"$LOG" &
WPID=$!
for _ in $(seq 100); do grep -q "listening on" "$LOG.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(sed -n 's/.*127.0.0.1:\([0-9]*\).*/\1/p' "$LOG.out")
U="amqp://guest:guest@127.0.0.1:$PORT/%2f"
echo "warren pid $WPID port $PORT, soak for $SECS s"

pids=()
# Steady background load, rate-limited so the machine stays responsive.
$P -h "$U" -u soak-persistent -f persistent -c 200 -x 1 -y 1 -s 1000 -r 3000 -A 50 -q 500 -z "$SECS" --quiet >/dev/null 2>&1 & pids+=($!)
$P -h "$U" -u soak-transient -x 2 -y 2 -s 64 -r 10000 -a -z "$SECS" --quiet >/dev/null 2>&1 & pids+=($!)
$P -h "$U" -u soak-fanout -e soak-fan -t fanout --queues 5 -x 1 -y 1 -s 200 -r 2000 -a -z "$SECS" --quiet >/dev/null 2>&1 & pids+=($!)

# Random connection kills: short-lived publishers/consumers killed with SIGKILL mid-run
# (their connections drop without close; unacked messages must be requeued).
(
  end=$((SECONDS + SECS))
  n=0
  while [ $SECONDS -lt $end ]; do
    $P -h "$U" -u soak-victim -x 1 -y 1 -s 100 -r 5000 -q 100 -z 30 --quiet >/dev/null 2>&1 &
    v=$!
    sleep "0.$((RANDOM % 9 + 1))"
    sleep $((RANDOM % 3))
    kill -KILL $v 2>/dev/null || true
    wait $v 2>/dev/null || true
    n=$((n + 1))
  done
  echo "$n connection kills" >"$LOG.kills"
) & pids+=($!)

: >"$LOG.rss"
end=$((SECONDS + SECS))
while [ $SECONDS -lt $end ]; do
  # SIGUSR1 makes Warren log its counters: RSS next to the messages it holds, so that a
  # backlog left by the killed clients is not mistaken for a leak.
  kill -USR1 $WPID
  sleep 0.2
  stats=$(grep "stats:" "$LOG" | tail -1 | sed 's/.*stats: //')
  ready=$(sed -n 's/.*ready \([0-9]*\).*/\1/p' <<<"$stats")
  unacked=$(sed -n 's/.*unacked \([0-9]*\).*/\1/p' <<<"$stats")
  echo "$SECONDS $(awk '/VmRSS/{print $2}' /proc/$WPID/status) ${ready:-?} ${unacked:-?}" >>"$LOG.rss"
  sleep 10
done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
kill -TERM $WPID; wait $WPID || true

echo "== $(cat "$LOG.kills" 2>/dev/null)"
awk 'NR==1{first=$2} {if($2>max)max=$2; last=$2; lr=$3; lu=$4; if($3>mr)mr=$3} END{printf "== RSS KiB: first %d, last %d, max %d over %d samples; queued messages: last %s ready + %s unacked, max ready %d\n", first, last, max, NR, lr, lu, mr}' "$LOG.rss"
echo "== WARN/ERROR lines not explained by the kills:"
grep -E " (WARN|ERROR) " "$LOG" | grep -v "client unexpectedly closed TCP connection" | head -20 || echo "(none)"
echo "== RSS samples: $LOG.rss; log: $LOG"
rm -rf "$DATA"
