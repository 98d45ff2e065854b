#!/usr/bin/env bash
# Instruction counts per call (callgrind) for one global `#[cacheable]` hit,
# one tenant-scoped tagged hit and one raw redis-rs GET + decode of the same
# value, each against a redis-server the bench binary starts on a free port.
# Steady under machine load, unlike wall time: use it to compare hit-path
# changes. Needs valgrind.
#
# Usage: benches/callgrind.sh [N] [KIND...]   (default N=2000, all kinds)
# Set ANNOTATE=1 to also print the top functions of each (callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
shift || true
KINDS=("${@:-global tenant raw}")
KINDS=(${KINDS[*]})
BIN=$(cargo bench --bench hit_calls --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*hit_calls[^"]*\)".*/\1/p' | tail -1)
[ -x "$BIN" ] || { echo "could not build hit_calls" >&2; exit 1; }
OUT=${CALLGRIND_OUT:-target/callgrind}
mkdir -p "$OUT"
for kind in "${KINDS[@]}"; do
  file="$OUT/$kind.out"
  valgrind --tool=callgrind --callgrind-out-file="$file" \
    --toggle-collect='hit_calls::measured*' "$BIN" "$kind" "$N" >/dev/null 2>"$OUT/$kind.log"
  total=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$file")
  [ -n "$total" ] || total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$file")
  printf '%-8s %10d instructions per call (N=%d)\n' "$kind" $((total / N)) "$N"
  if [ "${ANNOTATE:-0}" = 1 ]; then
    callgrind_annotate --inclusive=no "$file" 2>/dev/null | sed -n '1,60p' | cut -c1-200
  fi
done
