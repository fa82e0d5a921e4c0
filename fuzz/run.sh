#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after the other, on the
# stable toolchain: cargo-fuzz with `--sanitizer none` needs no nightly flag (see
# docs/fuzzing.md). Prints per target the executions, exec/s, coverage and the corpus size,
# and exits non-zero if any target crashed, leaked past the RSS limit or hung on one input.
#
#   bash fuzz/run.sh                 # 60 s per target (what CI runs)
#   bash fuzz/run.sh 900 sip_message media_packets
#   FUZZ_MERGE=1 bash fuzz/run.sh 0  # only fold the working corpora into fuzz/corpus/
#
# The seeds in fuzz/corpus/<target>/ are read but never written during a run: what the fuzzer
# finds goes to fuzz/work/<target>/ (git-ignored, kept between local runs so long runs
# accumulate). FUZZ_MERGE=1 afterwards adds to fuzz/corpus/ only the inputs that reach new
# coverage (libFuzzer -merge=1). Crashes land in fuzz/artifacts/<target>/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

seconds="${1:-60}"
shift || true
all_targets=(sip_message sip_endpoint sdp_answer webrtc_offer media_packets ivr_flow)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

# Keep the instrumented build apart from the workspace's target/ whatever the caller set.
export CARGO_TARGET_DIR="$here/target"
cargo_fuzz_version=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
    echo "== installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

echo "== building ${#targets[@]} target(s) (release, sancov instrumentation, no sanitizer)"
if [ "$#" -eq 0 ]; then
    cargo fuzz build --sanitizer none
else
    for t in "${targets[@]}"; do cargo fuzz build --sanitizer none "$t"; done
fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$triple/release"
failed=()
summary=()

for t in "${targets[@]}"; do
    work="$here/work/$t"
    seeds="$here/corpus/$t"
    artifacts="$here/artifacts/$t"
    mkdir -p "$work" "$seeds" "$artifacts"
    log="$here/work/$t.log"
    if [ "$seconds" -gt 0 ]; then
        echo "== $t: ${seconds}s"
        status=0
        # -timeout: one input taking 10 s is a hang worth a report (a datagram parser).
        # -rss_limit_mb also caps single allocations: a length field that makes us allocate
        # gigabytes is a finding too.
        "$bin_dir/$t" "$work" "$seeds" \
            -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$artifacts/" \
            >"$log" 2>&1 || status=$?
        execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
        rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
        cov="$(grep -E '^#[0-9]+[[:space:]].*cov: ' "$log" | tail -1 | sed -E 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [^ ]+).*/\1/' || true)"
        files="$(find "$work" -type f | wc -l)"
        line="$t: ${seconds}s, ${execs:-?} execs (${rate:-?}/s), ${cov:-no coverage line}, work corpus $files files"
        if [ "$status" -ne 0 ]; then
            line="$line, FAILED (exit $status)"
            failed+=("$t")
            echo "---- $t log tail"
            tail -60 "$log"
            art="$(grep -Eo "$artifacts/[^ ]+" "$log" | tail -1 || true)"
            if [ -n "$art" ]; then
                echo "---- reproduce: $bin_dir/$t $art"
                echo "---- minimize:  (cd fuzz && cargo fuzz tmin --sanitizer none $t $art)"
            fi
        fi
        echo "$line"
        summary+=("$line")
    fi
    if [ "${FUZZ_MERGE:-0}" = 1 ]; then
        before="$(find "$seeds" -type f | wc -l)"
        "$bin_dir/$t" -merge=1 -timeout=10 "$seeds" "$work" >"$here/work/$t.merge.log" 2>&1
        after="$(find "$seeds" -type f | wc -l)"
        echo "== $t: merged into corpus/$t: $before -> $after files"
    fi
done

echo "== summary"
for line in "${summary[@]}"; do echo "$line"; done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found a problem in: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "${#summary[@]} passed, 0 failed"
