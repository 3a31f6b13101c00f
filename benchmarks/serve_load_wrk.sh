#!/usr/bin/env bash
# Serving load with wrk: the recommend endpoint under 50 concurrent clients with wrk (a C load generator, apt-get install
# wrk), so that the client costs little CPU next to the server. Serves the 100,000-item synthetic bundle
# that benchmarks/serve_load.py writes (run that first), IVF index (default) and exact index.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
OUT=${OUT:-bench_out/serving/load}
B=$OUT/bundle_100000
export PRISMREC_API_KEY=load-test-key OMP_NUM_THREADS=1
for idx in ivf exact; do
  thr=50000; [ $idx = exact ] && thr=1000000000
  $P -q serve $B --port 8770 --state $OUT/state_wrk --ann-threshold $thr > $OUT/server_wrk_$idx.log 2>&1 &
  S=$!
  for _ in $(seq 240); do curl -sf http://127.0.0.1:8770/health > /dev/null && break; sleep 0.5; done
  wrk -t2 -c50 -d10s -s benchmarks/serve_load_wrk.lua http://127.0.0.1:8770 > /dev/null   # warm-up
  wrk -t2 -c50 -d${SECONDS_RUN:-30}s --latency -s benchmarks/serve_load_wrk.lua http://127.0.0.1:8770 | tee $OUT/wrk_$idx.txt
  kill $S; wait $S 2>/dev/null || true
done
