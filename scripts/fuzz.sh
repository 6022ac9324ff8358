#!/usr/bin/env bash
# Runs every fuzz target for a while and prints what it did: executions, coverage (libFuzzer's
# `cov:` edges and `ft:` features), corpus size, crashes. Needs a nightly toolchain and cargo-fuzz
# (installed from crates.io if missing). Findings go to crates/*/fuzz/artifacts/.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-300}
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
printf '| target | seconds | executions | exec/s | cov | ft | corpus | result |\n|---|---|---|---|---|---|---|---|\n'
for dir in crates/*/fuzz; do
    crate=$(dirname "$dir")
    for src in "$dir"/fuzz_targets/*.rs; do
        t=$(basename "$src" .rs)
        mkdir -p "$dir/corpus/$t" "$dir/seeds/$t"
        log=$(mktemp)
        result=ok
        ( cd "$crate" && cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
            -max_total_time="$SECS" -print_final_stats=1 -rss_limit_mb=2048 ) >"$log" 2>&1 || result="FAILED (see $log)"
        done_line=$(grep -E '(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1)
        execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
        eps=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
        cov=$(echo "$done_line" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+' || echo '?')
        ft=$(echo "$done_line" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+' || echo '?')
        corp=$(echo "$done_line" | grep -oE 'corp: [0-9]+/[0-9a-zA-Z]+' | cut -d' ' -f2 || echo '?')
        printf '| %s/%s | %s | %s | %s | %s | %s | %s | %s |\n' "$(basename "$crate")" "$t" "$SECS" "$execs" "$eps" "$cov" "$ft" "$corp" "$result"
        [ "$result" = ok ] && rm -f "$log"
    done
done
