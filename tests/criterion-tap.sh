#!/bin/sh
# Run one Criterion test binary and emit its results as TAP on stdout for automake's
# tap-driver, so that every Criterion test counts on its own in the summary.
#
# Criterion's workers normally leave with _exit(), which skips LeakSanitizer; with
# CRITERION_NO_EARLY_EXIT they return through main so leaks are reported. Criterion does not
# fail a test for a sanitizer report on stderr, so in sanitizer builds (FERRY_SANITIZERS=1)
# this wrapper adds one more TAP result that fails when any report appeared.
test $# -ge 1 || { echo "usage: $0 TEST-BINARY" >&2; exit 2; }
tap=$(mktemp) && err=$(mktemp) || exit 99
trap 'rm -f "$tap" "$err"' EXIT
CRITERION_NO_EARLY_EXIT=1 "$@" --tap="$tap" --ascii -j1 2> "$err"
rc=$?
cat "$err" >&2
if [ "${FERRY_SANITIZERS:-0}" = 1 ]; then
    awk '/^1\.\.[0-9]+$/ { n = substr($0, 4) + 1; print "1.." n; next } { print }' "$tap"
    if grep -qE 'ERROR: (Leak|Address)Sanitizer|runtime error:|SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer' "$err"; then
        echo "not ok - sanitizer report(s) while running $(basename "$1")"
        grep -E 'ERROR: |runtime error:|SUMMARY: |^    #[0-9] ' "$err" | head -n 40 | sed 's/^/# /'
    else
        echo "ok - no ASan/LSan/UBSan report while running $(basename "$1")"
    fi
else
    cat "$tap"
fi
exit $rc
