#!/bin/sh
# TAP: `ferry token verify` and `ferry token inspect` under valgrind memcheck: no definite or
# indirect leaks and no memory errors, for an accepted token, a refused token, --batch with
# good and bad lines, a configuration error, and inspect (good, alg none, garbage).
# Keys and tokens are generated at run time (tests/integration/ferrytest.py fixture).
# Not for sanitizer builds (Makefile.am adds this test only `if !ENABLE_ASAN`).
: "${FERRY_BIN:?}" "${FERRY_SRCDIR:?}" "${FERRY_BUILDDIR:?}"
PYTHON3=${PYTHON3:-python3}

if ! command -v valgrind >/dev/null 2>&1; then
    echo "1..0 # SKIP valgrind not installed"
    exit 0
fi
if grep -q '^SAN_CFLAGS *=.*-fsanitize=address' "$FERRY_BUILDDIR/Makefile" 2>/dev/null; then
    echo "1..0 # SKIP ASan build: valgrind cannot run it"
    exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-vg.XXXXXX") || exit 99
standin=
cleanup() {
    [ -n "$standin" ] && kill "$standin" 2>/dev/null && wait "$standin" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 99' INT TERM
fx=$tmp/fx
mkdir -p "$fx"

# The IdP stand-in over HTTPS (test CA), serving the fixture's JWKS (re-read per request, so
# it may be written after the stand-in starts), for a verify that fetches its keys.
peers=$FERRY_SRCDIR/tests/peers
remote_args=
if [ -f "$peers/idp_standin.py" ] && sh "$peers/mkcerts.sh" "$tmp/certs" >/dev/null 2>&1; then
    "$PYTHON3" "$peers/idp_standin.py" --tls-cert "$tmp/certs/good.pem" \
        --tls-key "$tmp/certs/good.key" --jwks "$fx/jwks.json" --port-file "$tmp/port" \
        >/dev/null 2>&1 &
    standin=$!
    i=0
    while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -s "$tmp/port" ] && remote_args="https://127.0.0.1:$(cat "$tmp/port") $tmp/certs/ca.pem"
fi
# shellcheck disable=SC2086
if ! "$PYTHON3" "$FERRY_SRCDIR/tests/integration/ferrytest.py" fixture "$fx" $remote_args; then
    echo "Bail out! cannot generate test keys and tokens"
    exit 99
fi
now=$(cat "$fx/now")

# A libtool-built ferry is a wrapper script; run valgrind on the real program.
if [ -x "$FERRY_BUILDDIR/libtool" ]; then
    set -- "$FERRY_BUILDDIR/libtool" --mode=execute
else
    set --
fi
vgprefix="$*"
# libtool --mode=execute replaces any argument naming a libtool wrapper in the current
# directory (an audience "ferry" in the build directory!): run from the scratch directory.
cd "$tmp" || exit 99

n=0
failed=0
# vg DESC EXPECTED_RC STDIN_FILE ARGS... : run ferry ARGS under memcheck, stdin from STDIN_FILE
vg() {
    desc=$1 want=$2 input=$3
    shift 3
    n=$((n + 1))
    log=$tmp/vg.$n
    # shellcheck disable=SC2086
    $vgprefix valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --show-leak-kinds=definite,indirect --error-exitcode=99 --track-origins=yes \
        --log-file="$log" "$FERRY_BIN" "$@" < "$input" > "$tmp/out.$n" 2> "$tmp/err.$n"
    rc=$?
    if [ "$rc" -eq "$want" ] && ! grep -q '^==[0-9]*== [A-Z]' "$log"; then
        echo "ok $n - $desc (exit $rc, memcheck clean)"
    else
        failed=$((failed + 1))
        echo "not ok $n - $desc (exit $rc, want $want)"
        sed 's/^/# /' "$log" | head -n 60
        head -c 2000 "$tmp/err.$n" | sed 's/^/# stderr: /'
    fi
}

good=$(cat "$fx/good.tok")
bad=$(cat "$fx/bad.tok")
adhoc="--issuer https://fixture.issuer.test --jwks $fx/jwks.json --audience ferry --alg RS256
       --alg ES256 --alg EdDSA --now $now"

# shellcheck disable=SC2086
vg "verify: accepted token (ad-hoc issuer)" 0 /dev/null token verify $adhoc "$good"
# shellcheck disable=SC2086
vg "verify: refused token (expired)" 1 /dev/null token verify $adhoc "$bad"
vg "verify: accepted token (--config, stdin)" 0 "$fx/good.tok" \
    token verify --config "$fx/conf.json" --now "$now" -
vg "verify: --batch with 11 good and bad lines" 1 "$fx/batch.txt" \
    token verify --config "$fx/conf.json" --now "$now" --batch
batch_n=$n
vg "verify: configuration error (unknown member)" 2 /dev/null \
    token verify --config "$fx/badconf.json" --now "$now" "$good"
vg "verify: usage error (bad --now)" 2 /dev/null \
    token verify --config "$fx/conf.json" --now yesterday "$good"
if [ -n "$remote_args" ]; then
    vg "verify: keys fetched over HTTPS (discovery + JWKS)" 0 "$fx/remote.tok" \
        token verify --config "$fx/remote.json" --now "$now" -
else
    n=$((n + 1))
    echo "ok $n - verify with keys over HTTPS # SKIP IdP stand-in unavailable"
fi
vg "inspect: good token" 0 /dev/null token inspect "$good"
vg "inspect: alg none token from stdin" 0 "$fx/none.tok" token inspect -
vg "inspect: garbage" 1 /dev/null token inspect "not.a-token"

# The batch output must still be right under valgrind (one line per input line).
n=$((n + 1))
lines=$(grep -c '"line"' "$tmp/out.$batch_n")
if [ "$lines" -eq 11 ] && [ "$(grep -c '"verified":true' "$tmp/out.$batch_n")" -eq 3 ]; then
    echo "ok $n - --batch under valgrind printed 11 results, 3 accepted"
else
    failed=$((failed + 1))
    echo "not ok $n - --batch under valgrind printed $lines results"
    sed 's/^/# /' "$tmp/out.$batch_n" | head -n 20
fi

echo "1..$n"
echo "# $((n - failed))/$n passed"
[ "$failed" -eq 0 ]
