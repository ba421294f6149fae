#!/bin/sh
# TAP: the exact list of dynamic symbols exported by libferry.so equals
# tests/libferry.exports (one name per line, sorted). A new public function must be added to
# that file on purpose; anything else leaking out of the library fails here.
: "${FERRY_BUILDDIR:?}" "${FERRY_SRCDIR:?}"
echo "1..2"
so=$(ls "$FERRY_BUILDDIR"/.libs/libferry.so.* 2>/dev/null | head -n 1)
if [ -z "$so" ]; then
    echo "not ok 1 - libferry.so built"; echo "not ok 2 - export list matches # no library"; exit 0
fi
echo "ok 1 - libferry.so built ($so)"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
nm -D --defined-only "$so" | awk '$2 ~ /^[TDBRVW]$/ { print $3 }' | sed 's/@.*//' \
    | grep -v '^FERRY_' | LC_ALL=C sort -u > "$tmp"
if diff -u "$FERRY_SRCDIR/tests/libferry.exports" "$tmp" > "$tmp.diff"; then
    echo "ok 2 - exported symbols match tests/libferry.exports ($(wc -l < "$tmp") symbols)"
else
    echo "not ok 2 - exported symbols differ from tests/libferry.exports"
    sed 's/^/# /' "$tmp.diff"
fi
rm -f "$tmp.diff"
