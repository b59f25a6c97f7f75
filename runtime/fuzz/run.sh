#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) over its corpus in corpus/TARGET.
# New inputs the fuzzer finds go into the corpus folder; a crash stops the run with the
# crashing input in artifacts/TARGET/ (add it to the corpus: it then becomes a test in
# runtime/tests/fuzz_corpus.rs). Uses nightly if installed, else the stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs unstable compiler flags).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-30}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/troupe/fuzz-target}"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  FUZZ=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  FUZZ=(cargo fuzz)
fi
for t in job_file cel wire; do
  echo "== fuzz $t for ${SECONDS_EACH}s"
  # grep hides libFuzzer's chatter; the exit status is the fuzzer's (taken from the
  # pipeline itself: after `|| true`, PIPESTATUS would be true's).
  status=0
  "${FUZZ[@]}" run "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -print_final_stats=1 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units|==|SUMMARY|thread)' || status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] || { echo "fuzz target $t failed; see artifacts/$t"; exit 1; }
done
