#!/usr/bin/env bash
# A full mesh of real `reign node` processes on loopback, for each size
# given: how long it takes to form, what an idle node holds (RSS), what it
# burns at idle (CPU), and whether it stays steady (connections lost, WARN
# and ERROR lines). The per-link figure is the slope of RSS per node
# between two sizes: what one more idle peer link costs a node.
#
#   bench/mesh.sh [SIZES...]            (default: 32 64)
#   IDLE_SECS=60 bench/mesh.sh 64 128   (idle window measured, default 30)
#   FORM_TIMEOUT_SECS=300 bench/mesh.sh 256
#   REIGN=/path/to/reign bench/mesh.sh  (default: target/release/reign)
#
# Build first: cargo build --release -p reign-cli
# Every process binds 127.0.0.1 only; all are stopped (SIGTERM, then
# SIGKILL) before the next size starts and when the script exits.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REIGN="${REIGN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/reign}"
IDLE_SECS="${IDLE_SECS:-30}"
FORM_TIMEOUT_SECS="${FORM_TIMEOUT_SECS:-180}"
# Below the usual ephemeral range (32768–60999), where a dial's local port
# could take a node's listening port before the node binds it.
BASE_PORT="${BASE_PORT:-20000}"
SIZES=("$@")
[ ${#SIZES[@]} -eq 0 ] && SIZES=(32 64)
WORK="$(mktemp -d /tmp/reign-mesh.XXXXXX)"
PIDS=()
TICKS="$(getconf CLK_TCK)"

stop_all() {
  [ ${#PIDS[@]} -eq 0 ] && return
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT

[ -x "$REIGN" ] || { echo "no reign binary at $REIGN (cargo build --release -p reign-cli)" >&2; exit 1; }
echo "# $(nproc) cores, $(free -m | awk '/Mem:/{print $2}') MiB RAM, ulimit -n $(ulimit -n), idle window ${IDLE_SECS}s"

# Sum of utime + stime of every process, in clock ticks.
cpu_ticks() {
  local total=0
  for pid in "${PIDS[@]}"; do
    local stat
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
    stat="${stat##*) }"
    # Fields after the command: state is 1st, utime 12th, stime 13th.
    total=$((total + $(echo "$stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

# Sum of one smaps_rollup field (kB) over every process: Rss counts the
# binary's code pages in every process that maps them; Pss shares them out;
# Private_Dirty is what each process holds alone (heap, stacks).
smaps_total_kb() {
  local total=0
  for pid in "${PIDS[@]}"; do
    local kb
    kb="$(awk -v f="$1:" '$1 == f {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)"
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

peers_seen() { # distinct peers a node's log says it connected to
  grep -o 'connection established.*' "$1" 2>/dev/null | grep -o 'peer=[0-9]*' | sort -u | wc -l
}

for n in "${SIZES[@]}"; do
  dir="$WORK/mesh-$n"
  "$REIGN" init --dir "$dir" --nodes "0-$((n - 1))" --base-port "$BASE_PORT" >/dev/null
  start_ns=$(date +%s%N)
  for i in $(seq 0 $((n - 1))); do
    RUST_LOG=info "$REIGN" node --spec "$dir/cluster.json" --id "$i" \
      </dev/null >/dev/null 2>"$dir/node-$i.log" &
    PIDS+=($!)
  done
  formed=""
  while [ -z "$formed" ]; do
    sleep 0.5
    now_ns=$(date +%s%N)
    waited=$(( (now_ns - start_ns) / 1000000 ))
    short=0
    for i in $(seq 0 $((n - 1))); do
      if [ "$(peers_seen "$dir/node-$i.log")" -lt $((n - 1)) ]; then short=$((short + 1)); fi
    done
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
    if [ "$short" -eq 0 ]; then
      formed=$waited
    elif [ "$alive" -lt "$n" ] || [ "$waited" -gt $((FORM_TIMEOUT_SECS * 1000)) ]; then
      echo "name=reign_mesh nodes=$n formed=no after_ms=$waited nodes_short_of_a_full_mesh=$short alive=$alive"
      if [ "$alive" -lt "$n" ]; then
        echo "# last lines of the nodes that exited:"
        for i in $(seq 0 $((n - 1))); do
          kill -0 "${PIDS[$i]}" 2>/dev/null || tail -1 "$dir/node-$i.log"
        done | sed -E 's/^[^ ]+ +//; s/[0-9]+/N/g' | cut -c1-160 | sort | uniq -c | sort -rn | head -3
      fi
      grep -h -E 'WARN|ERROR' "$dir"/node-*.log | sed -E 's/^[^ ]+ +//' | cut -c1-160 | sort | uniq -c | sort -rn | head -5
      break
    fi
  done
  [ -z "$formed" ] && { stop_all; continue; }
  # Let the formation settle (registry syncs, first gossip), then measure.
  sleep 5
  lost_before=$(cat "$dir"/node-*.log | grep -c 'connection lost' || true)
  t0=$(cpu_ticks)
  sleep "$IDLE_SECS"
  t1=$(cpu_ticks)
  rss=$(smaps_total_kb Rss)
  pss=$(smaps_total_kb Pss)
  private=$(smaps_total_kb Private_Dirty)
  lost_after=$(cat "$dir"/node-*.log | grep -c 'connection lost' || true)
  warns=$(cat "$dir"/node-*.log | grep -c -E ' WARN | ERROR ' || true)
  if [ "$warns" -gt 0 ]; then
    echo "# WARN/ERROR lines by text (the first $((n)) at most):"
    grep -h -E ' WARN | ERROR ' "$dir"/node-*.log | sed -E 's/^[^ ]+ +//; s/[0-9]+/N/g' | cut -c1-140 | sort | uniq -c | sort -rn | head -5
  fi
  threads=$(awk '/^Threads:/{print $2}' "/proc/${PIDS[0]}/status")
  cpu_pct=$(awk -v d=$((t1 - t0)) -v hz="$TICKS" -v s="$IDLE_SECS" 'BEGIN{printf "%.2f", 100 * d / hz / s}')
  echo "name=reign_mesh nodes=$n formed=yes formed_ms=$formed rss_per_node_kb=$((rss / n)) pss_per_node_kb=$((pss / n)) private_dirty_per_node_kb=$((private / n)) pss_total_mb=$((pss / 1024)) idle_cpu_pct_of_one_core=$cpu_pct idle_cpu_pct_per_node=$(awk -v c="$cpu_pct" -v n="$n" 'BEGIN{printf "%.3f", c / n}') connections_lost_while_idle=$((lost_after - lost_before)) warn_or_error_lines=$warns threads_per_node=$threads"
  stop_all
done
