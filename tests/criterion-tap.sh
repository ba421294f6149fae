#!/bin/sh
# Run one Criterion test binary and emit its results as TAP on stdout for automake's
# tap-driver, so that every Criterion test counts on its own in the summary.
# Criterion's own progress output goes to stderr and ends up in the .log file.
test $# -ge 1 || { echo "usage: $0 TEST-BINARY" >&2; exit 2; }
exec "$@" --tap=/dev/stdout --ascii -j1
