#!/usr/bin/env bash
# Runs every fuzz target for RUNS executions (default 10 million), starting
# from the committed seed corpus (fuzz/corpus/<target>/), and prints one
# line per target. New inputs the fuzzer finds go to a scratch corpus, not
# into the repository. A crash stops the script with the input saved under
# fuzz/artifacts/<target>/.
#
#     bash fuzz/run.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10000000}"
export CARGO_TARGET_DIR="${RAKAM_FUZZ_TARGET_DIR:-/var/cache/rakam-fuzz-target}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in decoders gzip_body names_and_times sql_guard analysis_request wal_replay; do
    mkdir -p "$scratch/$target"
    started=$(date +%s)
    cargo +nightly fuzz run -s none "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -runs="$runs" -max_len=65536 -rss_limit_mb=4096 -print_final_stats=1 \
        2> "$scratch/$target.log" || { tail -40 "$scratch/$target.log"; exit 1; }
    echo "$target: $runs runs in $(( $(date +%s) - started )) s, no crash ($(grep -m1 -o 'cov: [0-9]*' "$scratch/$target.log" | tail -1 || true))"
done
