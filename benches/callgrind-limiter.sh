#!/usr/bin/env bash
# Instruction counts per rate-limit decision (callgrind), client side: one
# GCRA `RateLimiter::check` (`gcra`) and one call of the original
# sliding-log script through raw redis-rs (`original`), each against a
# redis-server the bench binary starts on a free port. The server's own CPU
# per decision is in `cargo bench --bench rate_limit` (INFO commandstats).
# Steady under machine load, unlike wall time. Needs valgrind.
#
# Usage: benches/callgrind-limiter.sh [N] [KIND...]   (default N=2000, all kinds)
# Set ANNOTATE=1 to also print the top functions of each (callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
shift || true
KINDS=("${@:-gcra original}")
KINDS=(${KINDS[*]})
BIN=$(cargo bench --bench decision_calls --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*decision_calls[^"]*\)".*/\1/p' | tail -1)
[ -x "$BIN" ] || { echo "could not build decision_calls" >&2; exit 1; }
OUT=${CALLGRIND_OUT:-target/callgrind}
mkdir -p "$OUT"
for kind in "${KINDS[@]}"; do
  file="$OUT/decision-$kind.out"
  valgrind --tool=callgrind --callgrind-out-file="$file" \
    --toggle-collect='decision_calls::measured*' "$BIN" "$kind" "$N" >/dev/null 2>"$OUT/decision-$kind.log"
  total=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$file")
  [ -n "$total" ] || total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$file")
  printf '%-8s %10d instructions per decision (N=%d)\n' "$kind" $((total / N)) "$N"
  if [ "${ANNOTATE:-0}" = 1 ]; then
    callgrind_annotate --inclusive=no "$file" 2>/dev/null | sed -n '1,60p' | cut -c1-200
  fi
done
