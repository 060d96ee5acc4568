#!/usr/bin/env bash
# Runs reign's benchmarks and the Erlang distribution and NATS anchors
# and Go reign anchors interleaved (ours, Erlang, NATS, Go reign, ours, …)
# for ROUNDS rounds, then prints a table of medians with ratios. Installs
# what it needs: the anchors install erlang-base, nats-server and golang-go
# with apt-get and build their clients.
#
#   bench/compare.sh [ROUNDS]          (default 5)
#   REIGN_ANCHORS=/path/to/anchors bench/compare.sh 3
#   SKIP_ANCHORS=1 bench/compare.sh 1  (ours only)
#
# The anchors are looked for in ../shared/anchors next to the checkout (or
# REIGN_ANCHORS); without them (a fresh clone) only reign's own figures are
# measured, and the script says which folder it missed. The build goes to
# CARGO_TARGET_DIR when set, else target/ in the checkout. The latency
# distributions and throughput bars are drawn into benchmarks.svg next to
# BENCHMARKS.md (bench/src/plot.rs).
#
# Everything binds 127.0.0.1 only and stops the processes it started.
set -euo pipefail
ROUNDS="${1:-5}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ANCHORS_SRC="${REIGN_ANCHORS:-$ROOT/../shared/anchors}"
WORK="$(mktemp -d /tmp/reign-compare.XXXXXX)"
RESULTS="$WORK/results.txt"
LOG="$WORK/log.txt"
: > "$RESULTS"

if [ -z "${SKIP_ANCHORS:-}" ] && [ ! -d "$ANCHORS_SRC" ]; then
  echo "no anchors at $ANCHORS_SRC (set REIGN_ANCHORS to the folder holding erlang_bench.sh, nats_bench.sh and goreign_bench.sh): measuring reign only" >&2
  SKIP_ANCHORS=1
fi
if [ -z "${SKIP_ANCHORS:-}" ]; then
  # The anchors build their NATS client next to their script: work on a copy
  # (the shared folder may be read-only).
  cp -r "$ANCHORS_SRC" "$WORK/anchors"
  chmod -R u+w "$WORK/anchors"
  if ! command -v erl >/dev/null 2>&1 || ! command -v nats-server >/dev/null 2>&1; then
    apt-get update >>"$LOG" 2>&1
  fi
fi

echo "building reign-bench (release)…" >&2
cargo build --release -p reign-bench --manifest-path "$ROOT/Cargo.toml" >>"$LOG" 2>&1
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$PWD/$TARGET_DIR" ;; esac
BENCH="$TARGET_DIR/release/reign-bench"

for round in $(seq "$ROUNDS"); do
  echo "== round $round of $ROUNDS: reign" >&2
  echo "# round=$round load=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS"
  "$BENCH" all 2>>"$LOG" | sed "s/^/round=$round /" >>"$RESULTS" || echo "round=$round name=reign_all error=some_scenario_failed" >>"$RESULTS"
  if [ -z "${SKIP_ANCHORS:-}" ]; then
    # Per-run lines go to stderr as "run=1 name=…": keep those (raw values).
    for anchor in "Erlang distribution:erlang_bench.sh:all 1" "NATS:nats_bench.sh:all 1" "Go reign:goreign_bench.sh:1"; do
      IFS=: read -r what script args <<<"$anchor"
      if [ -x "$WORK/anchors/$script" ]; then
        echo "== round $round of $ROUNDS: $what" >&2
        # The anchors build their clients into their own target/ and look for
        # them there: do not hand them our CARGO_TARGET_DIR.
        # shellcheck disable=SC2086 # the arguments are words
        env -u CARGO_TARGET_DIR "$WORK/anchors/$script" $args 2>&1 >/dev/null | grep -o 'name=.*' | sed "s/^/round=$round /" >>"$RESULTS" || true
      else
        echo "== round $round of $ROUNDS: no $script among the anchors, $what skipped" >&2
      fi
    done
  fi
done

echo >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)" >&2
echo "results: $RESULTS (log: $LOG)" >&2
SUMMARIZE="$ANCHORS_SRC/summarize.py"
if [ -z "${SKIP_ANCHORS:-}" ] && [ -f "$SUMMARIZE" ]; then
  python3 "$SUMMARIZE" --group <"$RESULTS" >"$WORK/summary.txt"
  python3 "$ROOT/bench/table.py" "$RESULTS" "$WORK/summary.txt" | tee "$WORK/table.md"
else
  python3 "$ROOT/bench/table.py" "$RESULTS" | tee "$WORK/table.md"
fi
# The picture next to BENCHMARKS.md: latency distributions and throughput.
"$TARGET_DIR/release/reign-plot" "$RESULTS" "$ROOT/benchmarks.svg" && echo "picture: $ROOT/benchmarks.svg" >&2
