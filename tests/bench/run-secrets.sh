#!/bin/bash
# tests/bench/run-secrets.sh - cached secret reads per second over HTTP (GET /v1/secrets/{ref}
# on ferryd, wrk on loopback), next to RFC 8693 token exchanges per second on the same ferryd in
# the same run, and `openssl speed` for the operations each request cannot avoid (a cached read
# verifies one ES256 bearer token; an exchange verifies one RS256 subject token and signs one
# ES256 token). Then the stampedes: N concurrent requests (default 1,000, each on its own
# connection, released together) for one secret nobody read before, and the backend calls
# ferryd counted for them (ferryd_secrets_backend_calls_total): once from the file store, and
# once from the Vault stand-in (tests/peers/vault_standin.mjs, JWT login with ferryd's own
# token) while it holds its answer for a second, so that every request arrives before the
# value does; there the stand-in's own count of KV reads is reported too.
#
# usage: tests/bench/run-secrets.sh [-B BUILDDIR] [-c CPU] [-w CPU] [-d SECONDS]
#                                   [-C "CONNS..."] [-n STAMPEDE] [-S SECONDS] [-o RESULTS]
#                                   [-R RESULTS]
#   -B  configured build directory (default: $FERRY_BUILDDIR, else the current directory);
#       `make bench` is run there first (it builds ferryd and ferry)
#   -c  CPU for ferryd and `openssl speed` (default 0); -w CPU for wrk (default 1)
#   -d  seconds per wrk run (default 8); the best connection count of -C (default "4 8 16")
#       is searched once per kind of request, then run three times (the best run counts)
#   -n  concurrent requests of the stampede (default 1000)
#   -S  seconds per operation in `openssl speed -elapsed` (default 3)
#   -o  also write the raw key=value results there; -R  only print the report of saved ones
#
# The reads/s figure uses ferry's sealed file store (the embedded default): it is ferryd's own
# cost of a cached release (bearer verification, policy decision, audit record, HTTP), which
# is what the cache makes independent of the backend. Exit 1 when a request failed or a
# stampede made other than one backend call, 2 on usage or setup errors (node is needed for
# the Vault stand-in).
set -u
set -o pipefail

builddir=${FERRY_BUILDDIR:-.}
cpu=0
wcpu=1
secs=8
conns="4 8 16"
stampede=1000
speed_secs=3
results_out=
report_only=

while getopts B:c:w:d:C:n:S:o:R:h o; do
    case $o in
    B) builddir=$OPTARG ;;
    c) cpu=$OPTARG ;;
    w) wcpu=$OPTARG ;;
    d) secs=$OPTARG ;;
    C) conns=$OPTARG ;;
    n) stampede=$OPTARG ;;
    S) speed_secs=$OPTARG ;;
    o) results_out=$OPTARG ;;
    R) report_only=$OPTARG ;;
    h) sed -n '2,26s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) exit 2 ;;
    esac
done

die() { echo "run-secrets: $*" >&2; exit 2; }
say() { echo "run-secrets: $*" >&2; }

report() { # RAW
python3 - "$1" <<'EOF'
import shlex, sys

meta, speed, runs, stamps = {}, {}, {}, []
for line in open(sys.argv[1]):
    kind = line.split(" ", 1)[0]
    kv = dict(p.split("=", 1) for p in shlex.split(line) if "=" in p)
    if kind in ("machine", "command"):
        meta.update(kv)
    elif kind == "speed":
        speed[kv["op"]] = max(speed.get(kv["op"], 0.0), float(kv["per_sec"]))
    elif kind == "run":
        runs.setdefault(kv["label"], []).append(kv)
    elif kind == "stampede":
        stamps.append(kv)

def best(label):
    return max(runs[label], key=lambda r: float(r["rps"])) if label in runs else None

def rates(label):
    return ", ".join("{:,.0f}".format(float(r["rps"])) for r in runs.get(label, []))

print()
print(f"{meta.get('date', '?')} · {meta.get('cpu', '?')} · nproc {meta.get('nproc', '?')} · "
      f"{meta.get('openssl', '?')} · {meta.get('wrk', '?')} · commit {meta.get('commit', '?')}")
print(f"command: {meta.get('cmd', '?')}")
print()
print("| figure | value |")
print("|---|---:|")
ev, es, rv = speed["es256_verify"], speed["es256_sign"], speed["rs256_verify"]
print(f"| openssl speed ecdsap256 verify/s (the one signature operation of a cached read) | {ev:,.0f} |")
print(f"| openssl speed ecdsap256 sign/s, rsa2048 verify/s | {es:,.0f}, {rv:,.0f} |")
bx = 1 / (1 / rv + 1 / es)
print(f"| B(exchange) = 1 / (1/RS256 verify + 1/ES256 sign) | {bx:,.0f} /s |")
x, g = best("exchange"), best("secret")
for label, r, bound, what in (("exchange", x, bx, "B(exchange)"),
                              ("secret", g, ev, "ES256 verify/s")):
    if not r:
        continue
    d = int(r["duration_us"]) / 1e6
    cpu_us = 1e6 * float(r["server_cpu_secs"]) / max(int(r["ok"]), 1)
    name = "token exchanges/s" if label == "exchange" else "cached secret reads/s"
    print(f"| {name} (wrk -c {r['conns']}, best of {rates(label)}; p50 "
          f"{int(r['p50_us']) / 1000:.2f} ms, p99 {int(r['p99_us']) / 1000:.2f} ms) | "
          f"{float(r['rps']):,.0f} |")
    print(f"| … ÷ {what} | {100 * float(r['rps']) / bound:.0f} % |")
    print(f"| … ferryd CPU per request | {cpu_us:.1f} µs ({100 * float(r['server_cpu_secs']) / d:.0f} % of its core) |")
if x and g:
    print(f"| cached secret reads ÷ token exchanges | {float(g['rps']) / float(x['rps']):.2f}× |")
for st in stamps:
    extra = (f"; the Vault stand-in answered {st['standin_reads']} KV read(s), holding it "
             f"{st['hold_ms']} ms" if "standin_reads" in st else "")
    print(f"| stampede, {st['backend']} backend: {st['requests']} concurrent requests for one "
          f"uncached secret ({st['connections']} connections at once) | {st['ok']} × 200 in "
          f"{float(st['secs']):.2f} s, **{st['backend_calls']} backend call(s)**{extra} |")
bad = [r for rs in runs.values() for r in rs if r.get("status") == "error"]
if bad:
    print(f"\nFAILED runs: {', '.join(r['label'] for r in bad)}")
EOF
}

if [ -n "$report_only" ]; then
    [ -r "$report_only" ] || die "cannot read $report_only"
    report "$report_only"
    exit
fi

for v in "$cpu" "$wcpu" "$secs" "$stampede" "$speed_secs"; do
    [[ $v =~ ^[0-9]+$ ]] || die "not a number: $v"
done
[ "$cpu" != "$wcpu" ] || die "ferryd and wrk need different CPUs (-c, -w)"
[ "$stampede" -ge 1 ] && [ "$stampede" -le 4000 ] || die "-n must be 1..4000"

srcdir=$(cd "$(dirname "$0")/../.." && pwd) || exit 2
lua=$srcdir/tests/bench/exchange.lua
[ -f "$builddir/Makefile" ] || die "$builddir is not a configured build directory (use -B)"
builddir=$(cd "$builddir" && pwd) || exit 2
make -s -C "$builddir" bench ferry >&2 || die "make bench failed"
ferryd=$builddir/ferryd
ferry=$builddir/ferry
[ -x "$ferryd" ] && [ -x "$ferry" ] || die "missing $ferryd or $ferry"
command -v wrk >/dev/null || die "wrk not found (apt-get install wrk; contrib/deps.sh lists it)"
command -v taskset >/dev/null || die "taskset not found"
command -v node >/dev/null || die "node not found (the Vault stand-in of the stampede)"
openssl=${OPENSSL:-openssl}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-secrets.XXXXXX") || exit 2
ferryd_pid=
vault_pid=
cleanup() {
    [ -n "$ferryd_pid" ] && kill "$ferryd_pid" 2>/dev/null && wait "$ferryd_pid" 2>/dev/null
    [ -n "$vault_pid" ] && kill "$vault_pid" 2>/dev/null && wait "$vault_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 2' INT TERM
raw=$tmp/results
status=0

IDP=https://idp.bench.test
AUD=https://ferry.bench.test
TARGET=https://api.bench.test
SUBJECT=bench-client
SCOPE=deploy:write

{
    echo "machine date=$(date -u +%Y-%m-%dT%H:%M:%SZ) nproc=$(nproc)" \
         "cpu=\"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)\"" \
         "loadavg=\"$(cut -d' ' -f1-3 /proc/loadavg)\"" \
         "openssl=\"$("$openssl" version)\"" "wrk=\"$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)\"" \
         "commit=$(git -C "$srcdir" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "command cmd=\"tests/bench/run-secrets.sh -c $cpu -w $wcpu -d $secs -C '$conns'" \
         "-n $stampede -S $speed_secs\""
} >"$raw"

speed() { # WHEN
    say "openssl speed -seconds $speed_secs -elapsed rsa2048 / ecdsap256 (CPU $cpu, $1)"
    { taskset -c "$cpu" "$openssl" speed -seconds "$speed_secs" -elapsed rsa2048 &&
      taskset -c "$cpu" "$openssl" speed -seconds "$speed_secs" -elapsed ecdsap256; } \
        >"$tmp/speed" 2>/dev/null || die "openssl speed failed"
    awk -v when="$1" '
        /^rsa 2048 bits/     { print "speed op=rs256_verify when=" when " per_sec=" $NF }
        /ecdsa \(nistp256\)/ { print "speed op=es256_sign when=" when " per_sec=" $(NF-1)
                               print "speed op=es256_verify when=" when " per_sec=" $NF }' \
        "$tmp/speed" >>"$raw"
    [ "$(grep -c "^speed .*when=$1 " "$raw")" = 3 ] || die "cannot parse openssl speed output"
}
speed before

# ---- the subject tokens, the secrets, the policy, ferryd -----------------------------------
say "generating subject tokens and the secret store"
mkdir -p "$tmp/idp" "$tmp/policies" "$tmp/state" || exit 2
chmod 700 "$tmp/state"
python3 "$srcdir/tests/bench/exchange_tokens.py" "$tmp/idp" "$IDP" "$AUD" "$SUBJECT" 1000 \
    21600 || die "token generation failed"
"$ferry" secret init -d "$tmp/state" >/dev/null || die "ferry secret init failed"
head -c 48 /dev/urandom | base64 | "$ferry" secret put -d "$tmp/state" bench/db >/dev/null ||
    die "ferry secret put failed"
head -c 48 /dev/urandom | base64 | "$ferry" secret put -d "$tmp/state" bench/stampede \
    >/dev/null || die "ferry secret put failed"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
# No "audience" in the match: ferryd decides a release again from the bearer token's source
# issuer and subject (src_iss, src_sub), and the subject token's audience is not among them.
cat >"$tmp/policies/bench.json" <<EOF
{"version": 1, "policies": [{"id": "bench",
  "match": {"issuer": "$IDP", "subject": "$SUBJECT"},
  "grant": {"scopes": ["$SCOPE"], "audiences": ["$TARGET", "$url"], "max_ttl": 900,
            "secrets": ["file:bench/*", "vault:secret/bench/*"]}}]}
EOF
# The Vault stand-in: JWT logins verified against ferryd's JWKS (written once ferryd is up).
echo '{"keys": []}' >"$tmp/ferryd-jwks.json"
vroot=root-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$tmp/vault.json" <<EOF
{"root_token": "$vroot", "kv_mounts": ["secret"], "jwks_file": "$tmp/ferryd-jwks.json",
 "bound_issuer": "$url",
 "jwt_roles": {"ferryd": {"bound_audiences": ["vault"], "bound_subject": "$url",
                          "token_ttl": 3600, "paths": ["secret/data/bench/*"]}}}
EOF
mkfifo "$tmp/vault.ready"
(cd "$srcdir/tests/peers" && exec node vault_standin.mjs --config "$tmp/vault.json" \
    >"$tmp/vault.ready" 2>"$tmp/vault.err" </dev/null) &
vault_pid=$!
read -r -t 30 vline <"$tmp/vault.ready" || vline=
[[ $vline == "READY http://127.0.0.1:"* ]] ||
    die "the Vault stand-in did not start: $(head -c 300 "$tmp/vault.err")"
vurl=${vline#READY }
curl -fs -X POST -H "X-Vault-Token: $vroot" -H 'Content-Type: application/json' \
    -d "{\"data\": {\"password\": \"$(head -c 24 /dev/urandom | base64)\"}}" \
    "$vurl/v1/secret/data/bench/stampede" >/dev/null || die "cannot seed the Vault stand-in"

# Connections: the stampede opens all of its at once.
maxconn=$((stampede + 64))
[ "$maxconn" -ge 1024 ] || maxconn=1024
cat >"$tmp/ferryd.json" <<EOF
{"listen": ["127.0.0.1:$port"], "state_dir": "$tmp/state", "signing_alg": "ES256",
 "issuer": "$url", "policies": "$tmp/policies",
 "token": {"default_ttl": 900, "max_ttl": 900, "one_time_subject": false},
 "audit_log": {"path": "$tmp/audit.log", "sync": "batch"},
 "rate_limits": {"per_address": {"rate": 0}, "per_identity": {"rate": 0}},
 "limits": {"connections": $maxconn, "connections_per_ip": 0, "worker_queue": 4096},
 "issuers": [{"issuer": "$IDP", "audiences": ["$AUD"], "algorithms": ["RS256"],
              "profile": "access_token", "jwks_file": "$tmp/idp/jwks.json"}],
 "secrets": {"file": {"cache_ttl": 3600},
             "vault": {"address": "$vurl", "allow_http_loopback": true, "timeout_ms": 5000,
                       "cache_ttl": 3600,
                       "auth": {"method": "jwt", "role": "ferryd", "audience": "vault"}}}}
EOF
"$ferryd" --check-config -c "$tmp/ferryd.json" >/dev/null || die "ferryd refused the configuration"
(ulimit -n 8192 2>/dev/null; exec taskset -c "$cpu" "$ferryd" -c "$tmp/ferryd.json" \
    </dev/null >/dev/null 2>"$tmp/ferryd.err") &
ferryd_pid=$!
for _ in $(seq 100); do
    curl -fs "$url/readyz" >/dev/null 2>&1 && break
    kill -0 "$ferryd_pid" 2>/dev/null || break
    sleep 0.1
done
curl -fs "$url/readyz" >/dev/null 2>&1 || { tail -n 5 "$tmp/ferryd.err" >&2; die "ferryd did not start"; }
curl -fs "$url/.well-known/jwks.json" >"$tmp/ferryd-jwks.json" || die "no JWKS from ferryd"

# One exchange by hand: the bearer token of the secret reads (audience: ferryd itself).
bearer=$(python3 - "$url" "$(head -n 1 "$tmp/idp/tokens.txt")" <<'EOF'
import json, sys, urllib.parse, urllib.request
url, tok = sys.argv[1], sys.argv[2]
body = urllib.parse.urlencode({
    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
    "subject_token": tok, "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
    "audience": url}).encode()
req = urllib.request.Request(url + "/v1/token", body,
                             {"Content-Type": "application/x-www-form-urlencoded"})
with urllib.request.urlopen(req, timeout=10) as r:
    print(json.load(r)["access_token"])
EOF
) || die "the exchange for the bearer token failed"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $bearer" \
    "$url/v1/secrets/file:bench/db")
[ "$code" = 200 ] || die "GET /v1/secrets/file:bench/db answered $code"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# run_wrk LABEL CONNS DURATION [VAR=VALUE...]
run_wrk() {
    local label=$1 c=$2 dur=$3 t0 t1 line hz
    shift 3
    hz=$(getconf CLK_TCK)
    t0=$(cpu_ticks "$ferryd_pid")
    say "wrk $label: -c $c -d $dur"
    env BENCH_TOKENS="$tmp/idp/tokens.txt" BENCH_AUDIENCE="$TARGET" BENCH_SCOPE="$SCOPE" "$@" \
        taskset -c "$wcpu" wrk -t1 -c"$c" -d"$dur" --timeout 10s -s "$lua" "$url" \
        >"$tmp/wrk.out" 2>"$tmp/wrk.err"
    t1=$(cpu_ticks "$ferryd_pid")
    line=$(grep '^wrkresult ' "$tmp/wrk.out" | head -n 1)
    [ -n "$line" ] || { cat "$tmp/wrk.out" "$tmp/wrk.err" >&2; die "wrk ($label) printed no result"; }
    line="run label=$label conns=$c ${line#wrkresult } server_cpu_secs=$(
        python3 -c "print(round(($t1 - $t0) / $hz, 2))")"
    if ! grep -Eq 'non200=0 errors_connect=0 errors_read=0 errors_write=0 errors_status=0 errors_timeout=0' <<<"$line" ||
        grep -q ' ok=0 ' <<<"$line"; then
        line+=" status=error"
        status=1
        head -n 5 "$tmp/wrk.err" >&2
    fi
    echo "$line" >>"$raw"
    last=$line
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# measure LABEL [VAR=VALUE...]: the best connection count of $conns, then three runs there
measure() {
    local label=$1 best_c= best=0 r
    shift
    run_wrk "$label-warmup" 8 2s "$@"
    for c in $conns; do
        run_wrk "$label-search" "$c" "${secs}s" "$@"
        r=$(field rps "$last")
        python3 -c "import sys; sys.exit(0 if $r > $best else 1)" && best=$r && best_c=$c
    done
    [ -n "$best_c" ] || die "no peak found for $label"
    for _ in 1 2 3; do run_wrk "$label" "$best_c" "${secs}s" "$@"; done
}
measure exchange
measure secret BENCH_MODE=get BENCH_BEARER="$bearer" BENCH_PATH=/v1/secrets/file:bench/db

# ---- the stampedes ------------------------------------------------------------------------
# stampede BACKEND REF [STANDIN_URL HOLD_MS]: N requests on N connections opened first, sent
# at once; with a stand-in, it holds its next KV answer HOLD_MS first.
stampede() {
    say "stampede: $stampede concurrent requests for $2"
    python3 - "$port" "$bearer" "$stampede" "$@" >>"$raw" <<'EOF' || status=1
import json, re, socket, sys, threading, time, urllib.parse, urllib.request
port, bearer, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
backend, ref = sys.argv[4], sys.argv[5]
standin, hold = (sys.argv[6], int(sys.argv[7])) if len(sys.argv) > 7 else (None, 0)
NAME = "ferryd_secrets_backend_calls_total"

def http(path):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data

def calls():
    m = re.search(rb"^" + NAME.encode() + rb" (\S+)$", http("/metrics"), re.M)
    return float(m.group(1))

def standin_reads():
    with urllib.request.urlopen(standin + "/_standin/stats", timeout=10) as r:
        return json.load(r)["reads"]

before = calls()
if standin:
    reads0 = standin_reads()
    req = urllib.request.Request(standin + "/_standin/fail", json.dumps(
        {"count": 1, "kind": "slow", "delay_ms": hold, "path": "bench/stampede"}).encode(),
        {"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()
socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(n)]
path = "/v1/secrets/" + urllib.parse.quote(ref, safe=":/")
req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
       f"Authorization: Bearer {bearer}\r\nConnection: close\r\n\r\n").encode()
statuses = [None] * n
gate = threading.Barrier(n + 1)

def worker(i):
    s = socks[i]
    gate.wait()
    try:
        s.sendall(req)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        statuses[i] = int(data.split(b" ", 2)[1])
    except Exception as e:
        statuses[i] = repr(e)
    finally:
        s.close()

threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
t0 = time.monotonic()
gate.wait()
for t in threads:
    t.join()
secs = time.monotonic() - t0
ok = sum(1 for x in statuses if x == 200)
got = calls() - before
extra = ""
good = ok == n and got == 1
if standin:
    sr = standin_reads() - reads0
    extra = f" standin_reads={sr} hold_ms={hold}"
    good = good and sr == 1
print(f"stampede backend={backend} requests={n} connections={n} ok={ok} secs={secs:.3f} "
      f"backend_calls={got:.0f}{extra}")
bad = [x for x in statuses if x != 200]
if bad:
    print(f"run-secrets: stampede: {len(bad)} requests failed, e.g. {bad[:3]}", file=sys.stderr)
sys.exit(0 if good else 1)
EOF
}
stampede file file:bench/stampede
stampede vault 'vault:secret/bench/stampede#password' "$vurl" 1000

kill -TERM "$ferryd_pid" 2>/dev/null
wait "$ferryd_pid" 2>/dev/null
ferryd_pid=
kill "$vault_pid" 2>/dev/null
wait "$vault_pid" 2>/dev/null
vault_pid=

speed after
cat "$raw"
[ -n "$results_out" ] && cp "$raw" "$results_out"
report "$raw"
[ "$status" = 0 ] || say "FAILED: a request was not answered 200, or the stampede made other than one backend call"
exit "$status"
