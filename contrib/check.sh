#!/usr/bin/env bash
# contrib/check.sh - the whole test suite, as CI runs it.
#
# Installs missing Debian packages and (with `npm ci`) the npm test peers in tests/peers, builds
# ferry, runs every test (unit, vectors, integration, build hygiene), builds again with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs the whole suite again, runs every
# libFuzzer target for FERRY_FUZZ_SECONDS (default 30) each, then `make distcheck`. The last
# line is "N passed, N failed".
#
# Environment: FERRY_SHARED (default ../shared next to the checkout) holds the third-party
# vectors; when it exists, a skipped test counts as a failure (CI must skip nothing).
# FERRY_CHECK_NO_DISTCHECK=1 leaves out the distcheck step.
set -uo pipefail
FERRY_TOP=$(cd "$(dirname "$0")/.." && pwd)
export FERRY_TOP
cd "$FERRY_TOP" || exit 2
. contrib/deps.sh

ferry_install_missing $FERRY_BUILD_PACKAGES $FERRY_TEST_PACKAGES || {
    echo "check: cannot install the packages ferry needs"; echo "0 passed, 1 failed"; exit 1; }

# The shared vectors sit next to the checkout (../shared); a scratch clone elsewhere (such as
# /tmp/x) falls back to the workspace copy at /work/shared.
if [ -z "${FERRY_SHARED:-}" ]; then
    FERRY_SHARED=$(cd "$FERRY_TOP/.." && pwd)/shared
    [ -d "$FERRY_SHARED/vectors" ] || [ ! -d /work/shared/vectors ] || FERRY_SHARED=/work/shared
fi
export FERRY_SHARED
strict=0
if [ -d "$FERRY_SHARED/vectors" ]; then
    strict=1
    export FERRY_REQUIRE_VECTORS=1
else
    echo "check: $FERRY_SHARED/vectors not found: vector tests will skip" >&2
fi

passed=0 failed=0 skipped=0

# The npm test peers (tests/peers/package-lock.json): `npm ci` when node_modules is missing or
# older than the lock file. Without them the tests that need them skip, which counts as failed.
ferry_npm_peers || { echo "check: cannot install the npm test peers in tests/peers" >&2
    failed=$((failed + 1)); }

# tally LOG: add the counts of one automake test-suite.log
tally() {
    local log=$1 p f s
    if [ ! -f "$log" ]; then failed=$((failed + 1)); return; fi
    p=$(awk '/^# PASS:/ {print $3; exit}' "$log")
    f=$(awk '/^# (FAIL|ERROR|XPASS):/ {n += $3} END {print n + 0}' "$log")
    s=$(awk '/^# SKIP:/ {print $3; exit}' "$log")
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
}

# run_suite NAME BUILDDIR CONFIGURE-ARGS...
run_suite() {
    local name=$1 dir=$2; shift 2
    echo "==== $name build ($dir)" >&2
    if ! ferry_build "$dir" "$@"; then
        echo "check: $name build failed" >&2; failed=$((failed + 1)); return
    fi
    echo "==== $name test suite" >&2
    rm -f "$dir/test-suite.log"
    make -C "$dir" -s -j"$(nproc)" check >&2
    tally "$dir/test-suite.log"
    if [ -f "$dir/test-suite.log" ]; then
        # Show what failed, and why tests skipped (one line per reason), for the CI log.
        grep -hE '^(FAIL|ERROR|XPASS): ' "$dir"/tests/*.log "$dir"/tests/*/*.log 2>/dev/null \
            | head -n 50 >&2
        grep -hE '^SKIP: ' "$dir"/tests/*.log "$dir"/tests/*/*.log 2>/dev/null \
            | sed -E 's/^SKIP: ([^ ]+) .*# SKIP *(.*)$/\1: \2/; t; s/^SKIP: ([^ ]+) - /\1: /' \
            | sort | uniq -c \
            | sed 's/^ */check: skipped /' >&2
    fi
}

run_suite "plain" "$FERRY_TOP/build" --enable-werror
run_suite "asan+ubsan" "$FERRY_TOP/build-asan" --enable-werror --enable-asan --enable-ubsan

# The benchmarks are not tests, but they must keep building.
echo "==== make bench (build only)" >&2
if make -C "$FERRY_TOP/build" -s -j"$(nproc)" bench >&2; then
    passed=$((passed + 1))
else
    echo "check: the benchmarks do not build" >&2; failed=$((failed + 1))
fi

# Every parser's libFuzzer target, for a fixed budget each (seeded from the vectors).
echo "==== fuzzers (${FERRY_FUZZ_SECONDS:-30} s each)" >&2
fuzz_tap=$(bash tests/fuzz/run.sh "$FERRY_TOP/build" "${FERRY_FUZZ_SECONDS:-30}")
printf '%s\n' "$fuzz_tap" >&2
passed=$((passed + $(printf '%s\n' "$fuzz_tap" | grep -c '^ok ')))
failed=$((failed + $(printf '%s\n' "$fuzz_tap" | grep -c '^not ok ')))

if [ "${FERRY_CHECK_NO_DISTCHECK:-0}" != 1 ]; then
    echo "==== make distcheck" >&2
    if make -C "$FERRY_TOP/build" -s -j"$(nproc)" distcheck >&2; then
        passed=$((passed + 1))
    else
        echo "check: make distcheck failed" >&2; failed=$((failed + 1))
    fi
fi

if [ "$skipped" -gt 0 ]; then
    if [ "$strict" = 1 ]; then
        echo "check: $skipped test(s) skipped although $FERRY_SHARED exists: counted as failed" >&2
        failed=$((failed + skipped))
    else
        echo "check: $skipped test(s) skipped (see above for why)"
    fi
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
