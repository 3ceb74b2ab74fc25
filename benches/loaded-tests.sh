#!/usr/bin/env bash
# The flakiness check: `cargo test` N times in a row (default 20) while two busy loops load
# both cores. Logs in $OUT (default /tmp/loaded): runK.log per run, and a summary line per run.
#
#   benches/loaded-tests.sh        # 20 runs (about 50 minutes on 2 cores)
#   benches/loaded-tests.sh 5
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
OUT=${OUT:-/tmp/loaded}
mkdir -p "$OUT"
for _ in 1 2; do (while :; do :; done) & done
trap 'kill $(jobs -p) 2>/dev/null' EXIT
pass=0; fail=0
for i in $(seq 1 "$N"); do
    s=$(date +%s)
    if cargo test >"$OUT/run$i.log" 2>&1; then pass=$((pass + 1)); r=ok; else fail=$((fail + 1)); r=FAIL; fi
    echo "run $i: $r $(($(date +%s) - s))s $(date +%H:%M)" | tee -a "$OUT/summary"
done
echo "pass=$pass fail=$fail" | tee -a "$OUT/summary"
[ "$fail" = 0 ]
