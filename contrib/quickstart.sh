#!/usr/bin/env bash
# contrib/quickstart.sh - build ferry and run ferryd, its RFC 8693 token service, end to end.
#
# Installs what is missing (Debian 12, apt-get) and builds ferry in build/, as contrib/check.sh
# does. Then, all in a temporary directory that is removed at exit:
#   - a local demo issuer: an RSA key and its JWKS, made with the openssl CLI;
#   - a minimal ferryd configuration that trusts that issuer through "jwks_file", and a policy
#     directory granting the demo workload (a Kubernetes service account) one scope for one
#     audience;
#   - ferryd on its defaults otherwise: 127.0.0.1 (port 8787, or the next free one), a state
#     directory in the temporary directory (ferryd generates its ES256 signing key there) and a
#     file audit log;
#   - the demo issuer signs a subject token; curl performs the RFC 8693 exchange; the JSON
#     answer and the decoded header and claims of the minted token are printed, and the token is
#     verified against ferryd's published JWKS;
#   - a tampered subject token is refused with invalid_request;
#   - the audit-log records of both decisions are printed; ferryd is stopped with SIGTERM (so it
#     writes its final checkpoint) and `ferry log verify` checks the log.
# Exits 0 when every step did what it should. Nothing is installed outside the clone except
# missing Debian packages; ferryd is killed and the temporary directory removed on any exit.
set -euo pipefail
FERRY_TOP=$(cd "$(dirname "$0")/.." && pwd)
export FERRY_TOP
cd "$FERRY_TOP"
. contrib/deps.sh

ferry_install_missing $FERRY_BUILD_PACKAGES curl
ferry_build "$FERRY_TOP/build"
ferry="$FERRY_TOP/build/ferry"
ferryd="$FERRY_TOP/build/ferryd"

demo=$(mktemp -d "${TMPDIR:-/tmp}/ferry-quickstart.XXXXXX")
ferryd_pid=
cleanup() {
    local rc=$?
    if [ -n "$ferryd_pid" ] && kill -0 "$ferryd_pid" 2>/dev/null; then
        kill -KILL "$ferryd_pid" 2>/dev/null || true
        wait "$ferryd_pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -s "$demo/ferryd.log" ]; then
        echo "quickstart: failed (exit $rc); the end of ferryd's log:" >&2
        tail -n 20 "$demo/ferryd.log" >&2
    fi
    rm -rf "$demo"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "quickstart: $*" >&2; exit 1; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
section() { printf '\n== %s\n' "$*"; }

# ---- the demo issuer: RSA 2048 key, JWKS, and tokens signed with RS256 ---------------------
issuer="https://issuer.demo.ferry.invalid"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$demo/issuer.pem" 2>/dev/null
# The PKCS#1 RSAPublicKey DER of a 2048-bit key with e = 65537 is 270 bytes: a 9-byte prefix
# (SEQUENCE, INTEGER header, the 0x00 before a modulus whose top bit is set), n (256 bytes),
# then INTEGER 65537 (02 03 01 00 01).
openssl rsa -in "$demo/issuer.pem" -RSAPublicKey_out -outform DER -out "$demo/issuer.der" \
    2>/dev/null
[ "$(wc -c < "$demo/issuer.der")" -eq 270 ] &&
    [ "$(head -c 9 "$demo/issuer.der" | od -An -tx1 | tr -d ' \n')" = 3082010a0282010100 ] &&
    [ "$(tail -c 5 "$demo/issuer.der" | od -An -tx1 | tr -d ' \n')" = 0203010001 ] ||
    die "unexpected RSA public key layout from openssl"
n=$(tail -c +10 "$demo/issuer.der" | head -c 256 | b64url)
printf '{"keys":[{"kty":"RSA","n":"%s","e":"AQAB","kid":"demo-1","alg":"RS256","use":"sig"}]}\n' \
    "$n" > "$demo/jwks.json"

# A projected Kubernetes service-account token, as a training job would hold: ten minutes.
now=$(date +%s)
claims() { # SUBJECT NAMESPACE NAME
    printf '{"iss":"%s","sub":"%s","aud":["ferry"],"iat":%d,"nbf":%d,"exp":%d,"jti":"%s",' \
        "$issuer" "$1" "$now" "$now" $((now + 600)) "$(openssl rand -hex 16)"
    printf '"kubernetes.io":{"namespace":"%s","serviceaccount":{"name":"%s","uid":"%s"}}}' \
        "$2" "$3" "0b8a3a4e-6f5e-4d8b-9c1a-2e7f4d5c6b7a"
}
sign() { # HEADER.PAYLOAD -> the RS256 signature, base64url
    printf '%s' "$1" | openssl dgst -sha256 -sign "$demo/issuer.pem" -binary | b64url
}
header=$(printf '{"alg":"RS256","kid":"demo-1","typ":"JWT"}' | b64url)
payload=$(claims system:serviceaccount:ml:trainer ml trainer | b64url)
subject="$header.$payload.$(sign "$header.$payload")"
# The same signature over other claims: a token claiming to be kube-system's admin.
forged_payload=$(claims system:serviceaccount:kube-system:admin kube-system admin | b64url)
forged="$header.$forged_payload.${subject##*.}"

# ---- ferryd's configuration and policy -------------------------------------------------------
port=8787
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
    [ "$port" -le 8887 ] || die "no free port in 8787..8887 on 127.0.0.1"
done
mkdir "$demo/policies"
cat > "$demo/policies/demo.json" <<EOF
{
  "version": 1,
  "description": "quickstart: the ml/trainer service account may read models",
  "policies": [
    {
      "id": "demo-trainer",
      "match": {
        "issuer": "$issuer",
        "subject": "system:serviceaccount:ml:trainer",
        "audience": ["ferry"]
      },
      "grant": {
        "scopes": ["models:read"],
        "audiences": ["https://registry.ml.example.com"],
        "max_ttl": 900
      }
    }
  ]
}
EOF
cat > "$demo/ferryd.json" <<EOF
{
  "listen": ["127.0.0.1:$port"],
  "state_dir": "$demo/state",
  "policies": "$demo/policies",
  "audit_log": { "path": "$demo/audit.log" },
  "issuers": [
    {
      "issuer": "$issuer",
      "audiences": ["ferry"],
      "jwks_file": "$demo/jwks.json",
      "algorithms": ["RS256"],
      "profile": "kubernetes"
    }
  ]
}
EOF
"$ferryd" --check-config -c "$demo/ferryd.json" >/dev/null

# ---- start ferryd and wait until it is ready -----------------------------------------------
base="http://127.0.0.1:$port"
section "ferryd on $base (configuration $demo/ferryd.json)"
"$ferryd" -c "$demo/ferryd.json" </dev/null >/dev/null 2>"$demo/ferryd.log" &
ferryd_pid=$!
for _ in $(seq 1 150); do
    kill -0 "$ferryd_pid" 2>/dev/null || die "ferryd exited during start-up"
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz" 2>/dev/null)" = 200 ]; then
        break
    fi
    sleep 0.2
done
curl -sf "$base/readyz" >/dev/null || die "ferryd did not become ready in 30 s"
echo "ready (pid $ferryd_pid)"

exchange() { # SUBJECT_TOKEN -> the response body on stdout; the HTTP status in $demo/status
    curl -s -o "$demo/response" -w '%{http_code}' "$base/v1/token" \
        -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
        -d subject_token_type=urn:ietf:params:oauth:token-type:jwt \
        --data-urlencode subject_token="$1" \
        -d audience=https://registry.ml.example.com -d scope=models:read > "$demo/status"
    cat "$demo/response"
}

# ---- the exchange ---------------------------------------------------------------------------
section "RFC 8693 exchange of the demo issuer's token (sub system:serviceaccount:ml:trainer)"
echo "curl $base/v1/token -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \\"
echo "     -d subject_token_type=urn:ietf:params:oauth:token-type:jwt \\"
echo "     --data-urlencode subject_token=\"\$TOKEN\" \\"
echo "     -d audience=https://registry.ml.example.com -d scope=models:read"
exchange "$subject"
echo
[ "$(cat "$demo/status")" = 200 ] || die "the exchange answered HTTP $(cat "$demo/status")"
minted=$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' "$demo/response")
[ -n "$minted" ] || die "no access_token in the answer"

section "the minted token, decoded (ferry token inspect)"
printf '%s\n' "$minted" | "$ferry" token inspect -

section "the minted token, verified against ferryd's own JWKS ($base/.well-known/jwks.json)"
curl -sf "$base/.well-known/jwks.json" > "$demo/ferry-jwks.json"
printf '%s\n' "$minted" | "$ferry" token verify --issuer "$base" --jwks "$demo/ferry-jwks.json" \
    --profile ferry --alg ES256 --audience https://registry.ml.example.com -

# ---- a tampered token -----------------------------------------------------------------------
section "the same signature over claims for kube-system:admin is refused"
exchange "$forged"
echo
[ "$(cat "$demo/status")" = 400 ] || die "the forged token answered HTTP $(cat "$demo/status")"
grep -q '"error":"invalid_request"' "$demo/response" ||
    die "the forged token was not refused with invalid_request"
echo "HTTP 400 invalid_request, nothing issued"

# ---- the audit log --------------------------------------------------------------------------
section "audit log records of the two decisions ($demo/audit.log)"
grep '"type":"token.exchange"' "$demo/audit.log" ||
    die "no token.exchange records in the audit log"
[ "$(grep -c '"type":"token.exchange"' "$demo/audit.log")" -eq 2 ] ||
    die "expected two token.exchange records"

section "stop ferryd (SIGTERM: it seals the log with a final checkpoint)"
kill -TERM "$ferryd_pid"
rc=0
wait "$ferryd_pid" || rc=$?
ferryd_pid=
[ "$rc" -eq 0 ] || die "ferryd exited with status $rc"
echo "ferryd exited 0"

section "ferry log verify (keys: ferry keys jwks --all --state-dir)"
"$ferry" keys jwks --all --state-dir "$demo/state" > "$demo/all-keys.json"
"$ferry" log verify "$demo/audit.log" --jwks "$demo/all-keys.json"

echo
echo "Done. ferryd and ferry are in $FERRY_TOP/build; see README.md and docs/configuration.md."
