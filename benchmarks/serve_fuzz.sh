#!/usr/bin/env bash
# Serving robustness: schema-based fuzzing of the REST service (schemathesis on /openapi.json, every endpoint, with the
# API key) against a LIRDRec bundle of the demo data served on loopback. Passes when no request gets a 5xx.
#   pip install schemathesis ; benchmarks/serve_fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
ST=${SCHEMATHESIS:-.venv/bin/schemathesis}
OUT=${OUT:-bench_out/serving/fuzz}
PORT=${PORT:-8766}
N=${N:-100}
mkdir -p $OUT
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PRISMREC_API_KEY=fuzz-key
$P -q train --model lirdrec --data demo --out $OUT/run --epochs ${EPOCHS:-20} --resume --set train.threads=1
[ -f $OUT/bundle/bundle.json ] || $P export $OUT/run --out $OUT/bundle
rm -rf $OUT/state
$P serve $OUT/bundle --port $PORT --state $OUT/state > $OUT/server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 240); do curl -sf http://127.0.0.1:$PORT/health > /dev/null && break; sleep 0.5; done
ST=$(realpath $ST)
# run inside $OUT: schemathesis keeps its example database in ./.schemathesis
(cd $OUT && $ST run http://127.0.0.1:$PORT/openapi.json -H "X-API-Key: $PRISMREC_API_KEY" --checks not_a_server_error \
    --max-examples $N --request-timeout 60 --report junit --report-junit-path junit.xml 2>&1 | tee schemathesis.log)
echo "5xx responses in the server log: $(grep -c '" 5[0-9][0-9]' $OUT/server.log || true)"
