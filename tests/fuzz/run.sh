#!/usr/bin/env bash
# tests/fuzz/run.sh - build every libFuzzer target (tests/fuzz/fuzz_*.c) with clang, ASan and
# UBSan, and run each for a fixed time budget over its seed corpus. Prints TAP.
#
# usage: tests/fuzz/run.sh BUILDDIR [SECONDS-PER-TARGET]
#   BUILDDIR is a configured ferry build directory (for config.h). Default budget: 30 s.
# Seeds: tests/fuzz/corpus/<target>/ and, when $FERRY_SHARED/vectors exists, the JWS tokens
# of Wycheproof and the RFC examples (fuzz_token), the RFC key sets (fuzz_jwks) and the
# JSONTestSuite files (fuzz_json). A crash leaves its reproducer in BUILDDIR/fuzz/.
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILDDIR [SECONDS]}" && pwd)
secs=${2:-30}
out="$build/fuzz"
mkdir -p "$out"
vec="${FERRY_SHARED:-$top/../shared}/vectors"
cc=${CLANG:-clang}
pkgs="libcrypto libcurl jansson liboath yaml-0.1 expat"

targets=("$top"/tests/fuzz/fuzz_*.c)
echo "1..${#targets[@]}"
if ! command -v "$cc" >/dev/null; then
    for i in "${!targets[@]}"; do echo "not ok $((i + 1)) - $(basename "${targets[$i]}" .c) # clang not found"; done
    exit 0
fi

seed() { # TARGET DIR: fill the seed corpus
    local t=$1 d=$2
    mkdir -p "$d"
    [ -d "$top/tests/fuzz/corpus/$t" ] && cp "$top/tests/fuzz/corpus/$t"/* "$d"/ 2>/dev/null
    [ -d "$vec" ] || return 0
    case $t in
    fuzz_token)
        cp "$vec"/jose-rfc-examples/*.jwsc "$d"/ 2>/dev/null
        python3 - "$vec/wycheproof/testvectors_v1/json_web_signature_test.json" "$d" <<'PY' 2>/dev/null
import json, sys, os
doc = json.load(open(sys.argv[1]))
for g in doc["testGroups"]:
    for t in g["tests"]:
        if isinstance(t.get("jws"), str):
            open(os.path.join(sys.argv[2], "wp%d" % t["tcId"]), "w").write(t["jws"])
PY
        ;;
    fuzz_jwks) cp "$vec"/jose-rfc-examples/*.jwkset "$d"/ 2>/dev/null ;;
    fuzz_json) cp "$vec"/JSONTestSuite/test_parsing/*.json "$d"/ 2>/dev/null ;;
    esac
    return 0
}

n=0
for src in "${targets[@]}"; do
    n=$((n + 1))
    t=$(basename "$src" .c)
    bin="$out/$t"
    # shellcheck disable=SC2046
    if ! "$cc" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -I"$build" -I"$top/include" -I"$top/src" $(pkg-config --cflags $pkgs) \
        "$top"/src/basic/*.c "$top"/src/lib/*.c "$top"/src/lib/*/*.c "$src" -o "$bin" \
        $(pkg-config --libs $pkgs) -lpthread > "$out/$t.build.log" 2>&1; then
        echo "not ok $n - $t: build failed"; sed 's/^/# /' "$out/$t.build.log" | tail -20
        continue
    fi
    corpus="$out/$t.corpus"
    rm -rf "$corpus"; seed "$t" "$corpus"
    if (cd "$out" && "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
            -max_len=16384 -print_final_stats=1 "$corpus" > "$out/$t.log" 2>&1); then
        runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$out/$t.log")
        echo "ok $n - $t: ${runs:-?} inputs in ${secs} s, no crash or sanitizer report"
    else
        echo "not ok $n - $t: crashed (log and reproducer in $out)"
        grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$out/$t.log" | head -20 | sed 's/^/# /'
    fi
done
