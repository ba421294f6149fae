#!/bin/sh
# TAP: house-style lint over the sources.
#  1. banned libc calls (STYLE.md 15): strcpy strcat sprintf vsprintf strtok atoi atol gets getenv
#  2. untrusted JSON is parsed only with json_loadb(..., JSON_REJECT_DUPLICATES ...): no
#     json_loads/json_loadf/json_load_file in src/
#  3. secrets (signatures, MACs, OTPs) are never compared with memcmp/strcmp anywhere in src/
#  4. libjwt is never linked into or called from ferry itself (src/): it is a test and
#     benchmark peer only; it must never decide whether a token is valid
: "${FERRY_SRCDIR:?}"
cd "$FERRY_SRCDIR" || exit 1
echo "1..5"
files=$(find src -name '*.[ch]' | LC_ALL=C sort)
n=1
check() { # description, grep output
    if [ -z "$2" ]; then echo "ok $n - $1"; else
        echo "not ok $n - $1"; printf '%s\n' "$2" | sed 's/^/# /'; fi
    n=$((n + 1))
}
out=$(grep -nE '(^|[^_a-zA-Z0-9])(strcpy|strcat|sprintf|vsprintf|strtok|atoi|atol|gets|getenv)[[:space:]]*\(' $files \
      | grep -vE '(snprintf|vsnprintf|secure_getenv|strtok_r)[[:space:]]*\(' )
check "no banned libc functions in src/" "$out"
out=$(grep -nE 'json_loads[[:space:]]*\(|json_loadf[[:space:]]*\(|json_load_file[[:space:]]*\(' $files)
check "no json_loads/json_loadf/json_load_file in src/ (use json_loadb with JSON_REJECT_DUPLICATES)" "$out"
out=$(grep -nE 'json_loadb[[:space:]]*\(' $files | grep -v 'JSON_REJECT_DUPLICATES')
check "every json_loadb call passes JSON_REJECT_DUPLICATES" "$out"
out=$(grep -nE '(memcmp|strcmp)[[:space:]]*\([^)]*(sig|mac|tag|otp|secret)' $files)
check "no memcmp/strcmp on signatures, MACs, OTPs or secrets" "$out"
out=$(grep -nE '(jwt_decode|jwt_new|jwt_encode|jwt_valid|<jwt\.h>)' $files)
check "libjwt is not used anywhere in src/" "$out"
