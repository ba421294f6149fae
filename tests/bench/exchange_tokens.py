#!/usr/bin/env python3
# tests/bench/exchange_tokens.py - key, JWK Set and a pool of RS256 subject tokens for
# tests/bench/run-exchange.sh (the upstream IdP ferryd trusts through "jwks_file").
#
# usage: exchange_tokens.py DIR ISSUER AUDIENCE SUBJECT COUNT TTL
#   writes DIR/jwks.json (the public key, kid "bench-rs256") and DIR/tokens.txt: COUNT compact
#   RS256 access tokens (RFC 9068: typ at+jwt; iss, sub, aud, iat, exp = now + TTL, client_id,
#   a distinct jti), one per line. The RSA 2048 private key stays in this process.
# Only python3-cryptography is needed (the test suite's dependency).
import base64
import json
import os
import sys
import time
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_int(n):
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def main(argv):
    if len(argv) != 7:
        sys.stderr.write("usage: exchange_tokens.py DIR ISSUER AUDIENCE SUBJECT COUNT TTL\n")
        return 2
    out, issuer, audience, subject = argv[1:5]
    count, ttl = int(argv[5]), int(argv[6])
    if count < 1 or ttl < 60:
        sys.stderr.write("exchange_tokens.py: COUNT must be >= 1 and TTL >= 60\n")
        return 2
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    kid = "bench-rs256"
    jwks = {"keys": [{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                      "n": b64u_int(pub.n), "e": b64u_int(pub.e)}]}
    with open(os.path.join(out, "jwks.json"), "w") as f:
        json.dump(jwks, f)
    header = b64u(json.dumps({"alg": "RS256", "kid": kid, "typ": "at+jwt"},
                             separators=(",", ":")).encode())
    now = int(time.time())
    with open(os.path.join(out, "tokens.txt"), "w") as f:
        for _ in range(count):
            claims = {"iss": issuer, "sub": subject, "aud": audience, "iat": now - 5,
                      "exp": now + ttl, "client_id": subject, "jti": str(uuid.uuid4()),
                      "scope": "bench"}
            signing_input = header + "." + b64u(json.dumps(
                claims, separators=(",", ":")).encode())
            sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
            f.write(signing_input + "." + b64u(sig) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
