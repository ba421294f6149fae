#!/bin/bash
# tests/bench/run-verify.sh - JWT verification throughput per core, side by side in one run:
# `openssl speed` (the limit), ferry's library path, ferry's jose layer, `ferry token verify
# --batch`, libjwt 1.10.2 and libjose 11, for RS256 (RSA 2048), ES256 and EdDSA (Ed25519).
#
# usage: tests/bench/run-verify.sh [-B BUILDDIR] [-c CPU] [-s SECONDS] [-S SPEED_SECONDS]
#                                  [-n BATCH_TOKENS] [-P PROFILE] [-o RESULTS_FILE]
#   -B  configured build directory (default: $FERRY_BUILDDIR, else the current directory);
#       `make bench` is run there first
#   -c  CPU to pin every measured process to (default 0; "none" to not pin)
#   -s  seconds per (alg, path) in bench_verify (default 2)
#   -S  seconds per operation in `openssl speed` (default 3)
#   -n  tokens fed to each `ferry token verify --batch` run (default 20000)
#   -P  id_token (tokens with typ JWT, the default) or access_token (typ at+jwt, which
#       libjwt 1.10.2 refuses, so its column is then n/a)
#   -o  also write the raw key=value results there
#
# Prints the raw lines, then a markdown table. Throughput is per second of user CPU time of
# the measuring process (what `openssl speed` divides by); a second table gives wall-clock
# figures. Exits 1 when any path failed to accept a valid token or accepted a forged one, 2 on
# usage or setup errors. A benchmark, not a test: there are no pass/fail thresholds.
set -u
set -o pipefail

builddir=${FERRY_BUILDDIR:-.}
cpu=0
secs=2
speed_secs=3
batch_n=20000
results_out=
profile=id_token

while getopts B:c:s:S:n:P:o:h o; do
    case $o in
    B) builddir=$OPTARG ;;
    c) cpu=$OPTARG ;;
    s) secs=$OPTARG ;;
    S) speed_secs=$OPTARG ;;
    n) batch_n=$OPTARG ;;
    P) profile=$OPTARG ;;
    o) results_out=$OPTARG ;;
    h) sed -n '2,22s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) exit 2 ;;
    esac
done

die() { echo "run-verify: $*" >&2; exit 2; }

[ -f "$builddir/Makefile" ] || die "$builddir is not a configured build directory (use -B)"
builddir=$(cd "$builddir" && pwd) || exit 2
make -s -C "$builddir" bench >&2 || die "make bench failed"
bench=$builddir/tests/bench/bench_verify
ferry=$builddir/ferry
[ -x "$bench" ] && [ -x "$ferry" ] || die "missing $bench or $ferry"
command -v python3 >/dev/null || die "python3 is needed for the report"
openssl=${OPENSSL:-openssl}

pin=()
bench_pin=()
if [ "$cpu" != none ]; then
    command -v taskset >/dev/null || die "taskset not found (use -c none)"
    pin=(taskset -c "$cpu")
    bench_pin=(--cpu "$cpu")
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
raw=$tmp/results
status=0

{
    echo "machine date=$(date -u +%Y-%m-%dT%H:%M:%SZ) nproc=$(nproc)" \
         "cpu=\"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)\"" \
         "kernel=$(uname -r) loadavg=\"$(cut -d' ' -f1-3 /proc/loadavg)\"" \
         "openssl=\"$("$openssl" version)\"" \
         "ferry=\"$("$ferry" --version)\""
    echo "command cmd=\"tests/bench/run-verify.sh -c $cpu -s $secs -S $speed_secs" \
         "-n $batch_n -P $profile\""
} >"$raw"

# ---- 1. openssl speed: the ceiling --------------------------------------------------------
echo "run-verify: openssl speed -seconds $speed_secs rsa2048 ecdsap256 ed25519" >&2
"${pin[@]}" "$openssl" speed -seconds "$speed_secs" rsa2048 ecdsap256 ed25519 \
    >"$tmp/speed" 2>/dev/null || die "openssl speed failed"
# OpenSSL 3.0 table rows; verify/s is the last column.
awk '/^rsa 2048 bits/       { print "alg=RS256 path=openssl-speed per_sec=" $NF }
     /ecdsa \(nistp256\)/   { print "alg=ES256 path=openssl-speed per_sec=" $NF }
     /EdDSA \(Ed25519\)/    { print "alg=EdDSA path=openssl-speed per_sec=" $NF }' \
    "$tmp/speed" >>"$raw"
[ "$(grep -c 'path=openssl-speed' "$raw")" = 3 ] || die "cannot parse openssl speed output"

# ---- 2. bench_verify: library, jose layer, libjwt, libjose --------------------------------
echo "run-verify: bench_verify --seconds $secs" >&2
"$bench" "${bench_pin[@]}" --seconds "$secs" --profile "$profile" --emit "$tmp" \
    --batch-count "$batch_n" \
    >"$tmp/bench" || status=1
cat "$tmp/bench" >>"$raw"
grep -q '^emit ' "$tmp/bench" || die "bench_verify produced no tokens"

# ---- 3. ferry token verify --batch: the CLI, one process per alg -------------------------
# Wall clock and CPU time of the whole process: startup, key-set load, reading stdin, one
# JSON line out per token. Nothing is subtracted; a one-token run gives the fixed cost.
count_ok() { # FILE: number of lines that are a JSON object with "verified": true
    python3 - "$1" <<'EOF'
import json, sys
ok = 0
with open(sys.argv[1]) as f:
    for line in f:
        try:
            if json.loads(line).get("verified") is True:
                ok += 1
        except (ValueError, AttributeError):
            pass
print(ok)
EOF
}

TIMEFORMAT='%3R %3U %3S'
while read -r _ kv; do
    declare -A e=()
    for pair in $kv; do e[${pair%%=*}]=${pair#*=}; done
    alg=${e[alg]}
    args=(token verify --batch --issuer "${e[issuer]}" --jwks "${e[jwks]}"
          --audience "${e[audience]}" --alg "$alg" --now "${e[now]}" --profile "${e[profile]}")
    echo "run-verify: ferry ${args[*]} < ${e[tokens]}" >&2
    head -n 1 "${e[tokens]}" >"$tmp/one"
    t1=$( { time "${pin[@]}" "$ferry" "${args[@]}" <"$tmp/one" >"$tmp/one.out" 2>/dev/null; } \
          2>&1 ) ; rc1=$?
    t=$( { time "${pin[@]}" "$ferry" "${args[@]}" <"${e[tokens]}" >"$tmp/batch.out" \
           2>"$tmp/batch.err"; } 2>&1 ) ; rc=$?
    read -r wall user sys <<<"$t"
    read -r wall1 user1 _ <<<"$t1"
    ok=$(count_ok "$tmp/batch.out")
    lines=$(wc -l <"$tmp/batch.out")
    failures=$((e[count] - ok))
    line="alg=$alg path=ferry-batch ops=${e[count]} distinct=${e[distinct]} exit=$rc"
    line+=" lines_out=$lines accepted=$ok failures=$failures cpu_secs=$user sys_secs=$sys"
    line+=" wall_secs=$wall startup_wall_secs=$wall1 startup_cpu_secs=$user1"
    line+=" per_sec=$(python3 -c "print(round(${e[count]} / max($user, 0.001)))")"
    line+=" per_sec_wall=$(python3 -c "print(round(${e[count]} / max($wall, 0.001)))")"
    if [ "$failures" != 0 ] || [ "$rc" != 0 ] || [ "$rc1" != 0 ]; then
        line+=" status=error"
        status=1
        sed -n '1,3s/^/run-verify: ferry stderr: /p' "$tmp/batch.err" >&2
        head -n 2 "$tmp/batch.out" | sed 's/^/run-verify: ferry stdout: /' >&2
    fi
    echo "$line" >>"$raw"
    unset e
done < <(grep '^emit ' "$tmp/bench")

cat "$raw"
[ -n "$results_out" ] && cp "$raw" "$results_out"
grep -q 'status=error' "$raw" && status=1

# ---- 4. the report --------------------------------------------------------------------------
python3 - "$raw" <<'EOF'
import shlex, sys

rows = {}
meta = {}
for line in open(sys.argv[1]):
    kv = dict(p.split("=", 1) for p in shlex.split(line) if "=" in p)
    if line.startswith(("machine", "command")):
        meta.update(kv)
    elif "alg" in kv and "path" in kv:
        rows[(kv["alg"], kv["path"])] = kv

def rate(alg, path, key="per_sec"):
    r = rows.get((alg, path))
    if not r or r.get("status") in ("unsupported", "error") or key not in r:
        return None
    return float(r[key])

def cell(v, ref=None, mode=None):
    if v is None:
        return "n/a"
    s = f"{v:,.0f}"
    if ref is not None and mode == "pct":
        s += f" ({100.0 * v / ref:.0f}%)"
    elif ref is not None and mode == "x" and v > 0:
        s += f" (ferry {ref / v:.1f}×)"
    return s

print()
print(f"{meta.get('date', '?')} · {meta.get('cpu', '?')} · nproc {meta.get('nproc', '?')} · "
      f"{meta.get('openssl', '?')} · one core, ops per second of user CPU time")
print()
print("| alg | openssl speed verify/s | ferry lib verify/s (% of openssl) | ferry jose-layer "
      "| ferry --batch | libjwt 1.10.2 (ferry ×) | libjose 11 (ferry ×) |")
print("|---|---:|---:|---:|---:|---:|---:|")
for alg in ("RS256", "ES256", "EdDSA"):
    ossl = rate(alg, "openssl-speed")
    lib = rate(alg, "ferry-lib")
    print(f"| {alg} | {cell(ossl)} | {cell(lib, ossl, 'pct')} | "
          f"{cell(rate(alg, 'ferry-jose'), ossl, 'pct')} | "
          f"{cell(rate(alg, 'ferry-batch'), ossl, 'pct')} | "
          f"{cell(rate(alg, 'libjwt'), lib, 'x')} | {cell(rate(alg, 'libjose'), lib, 'x')} |")
print()
print("Wall clock (same run): ops per second of elapsed time")
print()
print("| alg | ferry lib | ferry jose-layer | ferry --batch (whole process) | "
      "--batch startup | libjwt 1.10.2 | libjose 11 |")
print("|---|---:|---:|---:|---:|---:|---:|")
for alg in ("RS256", "ES256", "EdDSA"):
    b = rows.get((alg, "ferry-batch"), {})
    st = f"{float(b['startup_wall_secs']) * 1000:.0f} ms" if "startup_wall_secs" in b else "n/a"
    print(f"| {alg} | {cell(rate(alg, 'ferry-lib', 'per_sec_wall'))} | "
          f"{cell(rate(alg, 'ferry-jose', 'per_sec_wall'))} | "
          f"{cell(rate(alg, 'ferry-batch', 'per_sec_wall'))} | {st} | "
          f"{cell(rate(alg, 'libjwt', 'per_sec_wall'))} | "
          f"{cell(rate(alg, 'libjose', 'per_sec_wall'))} |")
EOF
[ "$status" = 0 ] ||
    echo "run-verify: FAILED: a path rejected valid tokens or accepted a forged one" >&2
exit "$status"
