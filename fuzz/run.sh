#!/usr/bin/env bash
# Fuzzes every target (or the ones named) for SECONDS each (default 60),
# one after the other, and prints how many inputs each ran. Exits non-zero
# if any target found a crash, a timeout, a leak or ran out of memory; the
# input that did it is in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# FUZZ_SEED=N gives libFuzzer a fixed seed (CI uses one), so a run can be
# repeated; without it libFuzzer picks one and prints it in the log.
# Exit status: 0 clean, 1 a target failed, 2 the fuzzer could not be built.
#
# Sanitizer: SANITIZER=none (the default) builds on stable Rust with no
# sanitizer; the targets' own checks (bounds, round trips, invariants) and
# Rust's panics still apply. SANITIZER=address is cargo fuzz's default,
# AddressSanitizer with LeakSanitizer; it needs nightly flags, which this
# script unlocks on stable with RUSTC_BOOTSTRAP=1.
#
# New inputs libFuzzer finds go to fuzz/work/<target>/ (not committed); the
# committed seeds in fuzz/corpus/<target>/ are read only. CARGO_FUZZ_TARGET_DIR
# sets cargo's target directory (default fuzz/target).
set -euo pipefail

seconds=${1:-60}
shift || true
cd "$(dirname "$0")"

all_targets=(frame_decoder handshake node spec_json payload)
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi

# Longest input libFuzzer may make, per target.
max_len() {
    case "$1" in
        frame_decoder) echo 32768 ;;
        node | spec_json) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked || { echo "cargo-fuzz did not install"; exit 2; }
fi

sanitizer=${SANITIZER:-none}
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi
build_args=(-s "$sanitizer")
if [ -n "${CARGO_FUZZ_TARGET_DIR:-}" ]; then
    build_args+=(--target-dir "$CARGO_FUZZ_TARGET_DIR")
fi

cargo fuzz build "${build_args[@]}" 2>&1 | tail -n 3 ||
    { echo "build failed"; exit 2; }

mkdir -p logs
failed=()
summary=()
for target in "${targets[@]}"; do
    mkdir -p "work/$target" "artifacts/$target"
    log="logs/$target.log"
    echo "== $target: ${seconds}s, sanitizer $sanitizer"
    set +e
    seed_args=()
    if [ -n "${FUZZ_SEED:-}" ]; then
        seed_args+=(-seed="$FUZZ_SEED")
    fi
    cargo fuzz run "${build_args[@]}" "$target" "work/$target" "corpus/$target" -- \
        "${seed_args[@]}" \
        -max_total_time="$seconds" \
        -max_len="$(max_len "$target")" \
        -rss_limit_mb=2048 \
        -timeout=20 \
        -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" >"$log" 2>&1
    status=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    if [ -z "$execs" ]; then
        execs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -n 1)
    fi
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        echo "!! $target failed (exit $status); the end of $log:"
        tail -n 40 "$log"
        summary+=("$(printf '%-14s %12s  FAILED (see %s, artifacts/%s/)' "$target" "${execs:-?}" "$log" "$target")")
    else
        summary+=("$(printf '%-14s %12s  ok' "$target" "${execs:-?}")")
    fi
done

echo
printf '%-14s %12s\n' target executions
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
