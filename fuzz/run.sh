#!/usr/bin/env bash
# Builds every fuzz target once (release, debug assertions and overflow checks on, AddressSanitizer),
# then runs each for SECONDS on a scratch corpus seeded from fuzz/seeds/<target>. The seed folders
# are only read: what libFuzzer adds goes to the scratch corpus, deleted at exit, so runs never
# dirty git. Crashes, timeouts and OOMs are written to fuzz/artifacts/<target>/ (ignored by git);
# the script goes on with the other targets and exits non-zero at the end if any target failed.
#
# Usage: fuzz/run.sh SECONDS [TARGET...]     (default: every target in fuzz/Cargo.toml)
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); works on the stable toolchain.
set -euo pipefail

secs=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
cd "$(dirname "$0")"
# cargo-fuzz passes -Zsanitizer and friends to rustc; this lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1

if (($#)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# cargo fuzz has no --locked: check the lock file first, as CI's other builds do.
cargo fetch --locked --quiet
build_flags=(-O --debug-assertions)
build_start=$SECONDS
cargo fuzz build "${build_flags[@]}"
echo "fuzz/run.sh: built ${#targets[@]} targets in $((SECONDS - build_start)) s"

work=$(mktemp -d "${TMPDIR:-/tmp}/avsnode-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The binaries just built are run directly (what `cargo fuzz run` does after its own build step),
# so a source edited during the runs cannot trigger a rebuild between targets.
bin_dir=target/x86_64-unknown-linux-gnu/release
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"

failed=()
summary=()
for t in "${targets[@]}"; do
    if [ ! -d "seeds/$t" ]; then
        echo "fuzz/run.sh: no seed folder fuzz/seeds/$t" >&2
        exit 1
    fi
    mkdir -p "$work/corpus/$t" "artifacts/$t"
    log="$work/$t.log"
    echo "fuzz/run.sh: $t for ${secs} s"
    status=0
    # First corpus folder: where libFuzzer writes new inputs (scratch); the seeds are only read.
    "$bin_dir/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 "$work/corpus/$t" "seeds/$t" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -n 1)
    summary+=("$(printf '%-16s %6s s  execs %-10s exec/s %-7s %s' "$t" "$secs" "${execs:-?}" "${rate:-?}" "${cov:-?}")")
    if ((status != 0)); then
        failed+=("$t")
        cp "$log" "artifacts/$t/run.log"
        echo "fuzz/run.sh: $t FAILED (exit $status); log: fuzz/artifacts/$t/run.log" >&2
        grep -E 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY:|Test unit written to' "$log" >&2 ||
            tail -n 40 "$log" >&2
        for a in $(sed -n 's/^.*Test unit written to \(.*\)$/\1/p' "$log"); do
            echo "fuzz/run.sh: reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${build_flags[*]} $t $a" >&2
        done
    fi
done

printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "fuzz/run.sh: failures in: ${failed[*]} (inputs and logs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets, no crash"
