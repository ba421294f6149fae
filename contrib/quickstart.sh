#!/usr/bin/env bash
# contrib/quickstart.sh - build ferry and run its main job on built-in defaults.
#
# For now ferry's main job is verifying an identity token: this script installs what is
# missing (Debian 12, apt-get), builds ferry, creates a local demo issuer (an Ed25519 key and
# its JWKS, made with the openssl CLI), has that issuer sign a short-lived token for a training
# job, and asks `ferry token verify` to verify it and print the verified identity. It then shows
# that a tampered copy of the token is refused. Nothing is installed system-wide.
set -euo pipefail
FERRY_TOP=$(cd "$(dirname "$0")/.." && pwd)
export FERRY_TOP
cd "$FERRY_TOP"
. contrib/deps.sh

ferry_install_missing $FERRY_BUILD_PACKAGES
ferry_build "$FERRY_TOP/build"
ferry="$FERRY_TOP/build/ferry"

demo=$(mktemp -d "${TMPDIR:-/tmp}/ferry-quickstart.XXXXXX")
trap 'rm -rf "$demo"' EXIT
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# The demo issuer: an Ed25519 signing key and its public JWKS (x = the raw 32-byte key, the
# last 32 bytes of the DER SubjectPublicKeyInfo).
issuer="https://issuer.demo.ferry.invalid"
openssl genpkey -algorithm ed25519 -out "$demo/issuer.pem" 2>/dev/null
x=$(openssl pkey -in "$demo/issuer.pem" -pubout -outform DER | tail -c 32 | b64url)
printf '{"keys":[{"kty":"OKP","crv":"Ed25519","x":"%s","kid":"demo-1","alg":"EdDSA","use":"sig"}]}\n' \
    "$x" > "$demo/jwks.json"

# A token such as a Kubernetes training job would hold: valid for ten minutes from now.
now=$(date +%s)
jti=$(openssl rand -hex 16)
claims() { # SUBJECT
    printf '{"iss":"%s","sub":"%s","aud":"ferry","iat":%d,"nbf":%d,"exp":%d,"jti":"%s"}' \
        "$issuer" "$1" "$now" "$now" $((now + 600)) "$jti"
}
header=$(printf '{"alg":"EdDSA","kid":"demo-1","typ":"JWT"}' | b64url)
payload=$(claims system:serviceaccount:ml:trainer | b64url)
printf '%s.%s' "$header" "$payload" > "$demo/signing-input"
sig=$(openssl pkeyutl -sign -rawin -inkey "$demo/issuer.pem" -in "$demo/signing-input" | b64url)
token="$header.$payload.$sig"

echo "== ferry token verify (demo issuer $issuer, audience ferry)"
printf '%s\n' "$token" | "$ferry" token verify --issuer "$issuer" --jwks "$demo/jwks.json" \
    --alg EdDSA --audience ferry -

echo
echo "== the same token with its subject changed to kube-system:admin is refused:"
forged="$header.$(claims system:serviceaccount:kube-system:admin | b64url).$sig"
if printf '%s\n' "$forged" | "$ferry" token verify --issuer "$issuer" --jwks "$demo/jwks.json" \
    --alg EdDSA --audience ferry - 2>&1; then
    echo "quickstart: the forged token was accepted - this is a bug" >&2
    exit 1
fi
echo
echo "Done. The ferry binary is $ferry; try '$ferry token --help'."
