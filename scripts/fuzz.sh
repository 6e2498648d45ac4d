#!/usr/bin/env bash
# Coverage-guided fuzzing of kv's decoders with AFL++ (the `afl` crate, stable Rust); the
# targets are in fuzz/src/lib.rs, their seed corpora in fuzz/corpus/TARGET/.
#
# Usage: scripts/fuzz.sh [TARGET|all] [SECONDS]   (default: all, 60 seconds each)
# Targets: resp wire wal snapshot cluster_file records shared_log.
# Installs cargo-afl if missing (`cargo install cargo-afl`, which builds AFL++). Runs one
# fuzzer at a time, resuming from fuzz/out/TARGET when it exists; prints each target's
# executions and crashes (AFL++'s fuzzer_stats). A crash leaves its input in
# fuzz/out/TARGET/default/crashes/: copy it to fuzz/regressions/TARGET/ (replayed by
# `cargo test --manifest-path fuzz/Cargo.toml`), then fix the decoder.
# Exits non-zero if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target="${1:-all}"
seconds="${2:-60}"
all=(resp wire wal snapshot cluster_file records shared_log)
if [ "$target" = all ]; then targets=("${all[@]}"); else targets=("$target"); fi

if ! cargo afl --version >/dev/null 2>&1; then
  cargo install cargo-afl --locked
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo afl build --release --features afl --bins
bin="$CARGO_TARGET_DIR/release"

# AFL++ refuses to start on a machine set up for other work unless told these are fine.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
export AFL_NO_AFFINITY=1
mkdir -p out
crashed=0
for t in "${targets[@]}"; do
  out="out/$t"
  input="corpus/$t"
  # A non-empty output directory is resumed.
  if [ -d "$out/default/queue" ]; then input=-; fi
  cargo afl fuzz -V "$seconds" -i "$input" -o "$out" "$bin/$t" >"out/$t.log" 2>&1 || {
    echo "$t: afl-fuzz failed, see fuzz/out/$t.log" >&2
    tail -20 "out/$t.log" >&2
    exit 1
  }
  stats="$out/default/fuzzer_stats"
  execs=$(awk -F' *: *' '$1=="execs_done"{print $2}' "$stats")
  crashes=$(awk -F' *: *' '$1=="saved_crashes"||$1=="unique_crashes"{print $2}' "$stats")
  hangs=$(awk -F' *: *' '$1=="saved_hangs"||$1=="unique_hangs"{print $2}' "$stats")
  echo "$t: execs_done=$execs crashes=$crashes hangs=$hangs"
  [ "${crashes:-0}" = 0 ] || crashed=1
done
exit "$crashed"
