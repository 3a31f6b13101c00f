#!/usr/bin/env bash
# Wall time of one tuning study with 1 and 2 local workers on a journal file, and 2 workers on a local
# PostgreSQL server (docs/benchmarks.md §7.3). Real-length trials: by default BPR on baby, 6 TPE trials of at
# most 400 epochs, pruning warm-up at the patience, no final seeds. Run it on an otherwise idle machine: two
# workers need two free cores.
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/tune_workers.sh
#   MODEL=bpr DATA=baby TRIALS=6 EPOCHS=400 OUT=bench_out/tune_workers; NO_PG=1 skips PostgreSQL (it needs the Debian
#   package `postgresql`; as root the server runs as the `postgres` user).
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
OUT=${OUT:-bench_out/tune_workers}
MODEL=${MODEL:-bpr}; DATA=${DATA:-baby}; TRIALS=${TRIALS:-6}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
COMMON=(-m "$MODEL" -d "$DATA" --trials "$TRIALS" --final-seeds '' --set train.threads=1 --set "train.epochs=${EPOCHS:-400}")

study() {  # name, extra args: one fresh study, timed; prints one table row
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  local t0; t0=$(date +%s.%N)
  $P -q tune "${COMMON[@]}" -o "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  local t1; t1=$(date +%s.%N)
  local summary; summary=$(grep -o '[0-9]* complete, [0-9]* pruned, [0-9]* failed, [0-9]* epochs in all' "$OUT/$name/tune.md" | head -1)
  printf '| %s | `%s` | %.1f s | %s |\n' "$name" "$*" "$(echo "$t1 - $t0" | bc)" "$summary" | tee -a "$OUT/table.md"
}

echo "| study | options | wall time | trials |" > "$OUT/table.md"
echo "|---|---|---|---|" >> "$OUT/table.md"
study journal_1 --workers 1
study journal_2 --workers 2

if [ -z "${NO_PG:-}" ]; then
  BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$BIN" ]; then echo "no PostgreSQL server (apt-get install postgresql); skipped" >&2; exit 0; fi
  ROOT=$(mktemp -d /tmp/prismrec-pg.XXXXXX); PORT=${PG_PORT:-55433}
  AS=(); if [ "$(id -u)" = 0 ]; then chown postgres "$ROOT"; AS=(runuser -u postgres --); fi
  "${AS[@]}" "$BIN/initdb" -D "$ROOT/data" -U prismrec --auth=trust > /dev/null
  "${AS[@]}" "$BIN/pg_ctl" -D "$ROOT/data" -o "-p $PORT -k $ROOT -c listen_addresses=127.0.0.1" -w -l "$ROOT/log" start > /dev/null
  trap '"${AS[@]}" "$BIN/pg_ctl" -D "$ROOT/data" -m fast stop > /dev/null; rm -rf "$ROOT"' EXIT
  study postgresql_2 --workers 2 --storage "postgresql+psycopg://prismrec@127.0.0.1:$PORT/postgres" --study-name "$MODEL-$DATA"
fi
echo "table: $OUT/table.md"
